"""``python -m core jobs {list,cancel,resume,hold}``: look after background jobs from a terminal."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("jobs", help="list, cancel or resume background jobs (training runs)")
    jobs_sub = parser.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")

    p = jobs_sub.add_parser("list", help="the runs under the models folder with their state")
    p.add_argument("--models-dir", help="folder of runs (default: WORKBENCH_MODELS_DIR or ./models)")
    p.set_defaults(func=_list)

    p = jobs_sub.add_parser("cancel", help="ask a running or queued job to stop (it keeps its last checkpoint)")
    p.add_argument("run", help="run folder")
    p.set_defaults(func=_cancel)

    p = jobs_sub.add_parser("resume", help="relaunch a cancelled or failed run from its last checkpoint")
    p.add_argument("run", help="run folder")
    p.set_defaults(func=_resume)

    p = jobs_sub.add_parser(
        "hold", help="a job that does nothing until FILE exists or it is cancelled (tests the job machinery)"
    )
    p.add_argument("--run", required=True, help="run folder (made if missing)")
    p.add_argument("--until", required=True, help="finish (completed) once this file exists")
    p.add_argument("--fail", help="instead of completing, fail with this message")
    p.set_defaults(func=_hold)


def _list(args: argparse.Namespace) -> int:
    from core.runs import jobs

    frame = jobs.list_runs(args.models_dir)
    if frame.empty:
        print("no runs")
        return 0
    shown = frame[["id", "model", "task", "state", "progress", "best_val_f1", "error"]].copy()
    shown["progress"] = (shown["progress"] * 100).round().astype(int).astype(str) + "%"
    print(shown.to_string(index=False))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from core.runs import jobs

    status = jobs.cancel(args.run)
    print(f"cancel requested ({status.get('state')})")
    return 0


def _resume(args: argparse.Namespace) -> int:
    from core.runs import jobs

    pid = jobs.resume(args.run)
    print(f"resumed as pid {pid}")
    return 0


def _hold(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from core import runs
    from core.runs import jobs

    run = runs.RunFolder(args.run)
    run.root.mkdir(parents=True, exist_ok=True)
    until = Path(args.until)

    def work(ctx: jobs.JobContext) -> None:
        step = 0
        while not until.exists():
            if ctx.cancel_requested():
                raise jobs.JobCancelled()
            step += 1
            ctx.heartbeat(step=step, message="holding")
            time.sleep(0.05)
        if args.fail:
            raise RuntimeError(args.fail)

    state = jobs.run_job(run, work)
    print(f"job {state}")
    return 0 if state in ("completed", "cancelled") else 1
