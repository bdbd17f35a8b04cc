"""``python -m core sweep {create,run,start,worker,status,cancel,list}``: experiment plans run by Optuna."""

from __future__ import annotations

import argparse
import json

SWEEP_HELP = "sweep id (under <models>/sweeps/) or sweep folder"


def add_commands(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("sweep", help="experiment plans: many runs chosen by Optuna, pruned when hopeless")
    sweep_sub = parser.add_subparsers(dest="sweep_command", required=True, metavar="ACTION")

    p = sweep_sub.add_parser("create", help="make a sweep from PLAN.json and print its id")
    p.add_argument("plan", help="PLAN.json: name, base, space, sampler, trials, pruner, metric")
    p.add_argument(
        "--storage", metavar="URL", help="share the study in a database (postgresql://...) instead of a file"
    )
    _models_dir(p)
    p.set_defaults(func=_create)

    p = sweep_sub.add_parser("run", help="work on a sweep in this terminal until its budget is used (resumes it)")
    _sweep_args(p)
    p.set_defaults(func=_run)

    p = sweep_sub.add_parser("start", help="start background workers on a sweep (resumes a cancelled one)")
    p.add_argument("sweep", help=SWEEP_HELP)
    p.add_argument("--workers", type=int, default=1, help="worker processes (trials wait for WORKBENCH_MAX_JOBS slots)")
    _models_dir(p)
    p.set_defaults(func=_start)

    p = sweep_sub.add_parser("worker", help="one worker process (what start runs; one per machine with --storage)")
    _sweep_args(p)
    p.set_defaults(func=_worker)

    p = sweep_sub.add_parser("status", help="the sweep's trials: number, state, params, value, run")
    p.add_argument("sweep", help=SWEEP_HELP)
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    _models_dir(p)
    p.set_defaults(func=_status)

    p = sweep_sub.add_parser("cancel", help="stop the sweep: running trials are cancelled, workers stop")
    p.add_argument("sweep", help=SWEEP_HELP)
    _models_dir(p)
    p.set_defaults(func=_cancel)

    p = sweep_sub.add_parser("list", help="the sweeps under the models folder")
    _models_dir(p)
    p.set_defaults(func=_list)


def _models_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models-dir", help="models folder (default: WORKBENCH_MODELS_DIR or ./models)")


def _sweep_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", help=SWEEP_HELP)
    p.add_argument("--storage", metavar="URL", help="the study's database, for a sweep made on another machine")
    p.add_argument("--poll", type=float, default=1.0, metavar="S", help="seconds between looks at a trial's run")
    _models_dir(p)


def _create(args: argparse.Namespace) -> int:
    from core.sweeps import plan, store

    sweep = store.create_sweep(plan.load_plan(args.plan), args.models_dir, args.storage)
    print(sweep.id)
    return 0


def _work(args: argparse.Namespace, clear_cancel: bool) -> int:
    from core.sweeps import store, worker

    if clear_cancel:
        sweep = store.open_sweep(args.sweep, args.models_dir, args.storage)
        store.clear_cancel(sweep)
    result = worker.run_worker(
        args.sweep, args.models_dir, args.storage, poll_s=args.poll, log=lambda m: print(m, flush=True)
    )
    return 0 if result["stopped"] == "budget used" else 1


def _run(args: argparse.Namespace) -> int:
    return _work(args, clear_cancel=True)


def _worker(args: argparse.Namespace) -> int:
    return _work(args, clear_cancel=False)


def _start(args: argparse.Namespace) -> int:
    from core.sweeps import worker

    pids = worker.start_workers(args.sweep, args.workers, args.models_dir)
    print(f"started {len(pids)} worker(s): pid {', '.join(map(str, pids))}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from core.sweeps import store

    status = store.sweep_status(store.open_sweep(args.sweep, args.models_dir))
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    best = status["best"]
    print(
        f"{status['id']} ({status['name']}): {status['finished']}/{status['budget']} trials finished, "
        f"{status['sampler']} sampler, {status['metric']} {status['direction']}"
        + (", cancelled" if status["cancelled"] else "")
        + f", {len(status['workers'])} worker(s) here"
    )
    if best:
        print(f"best: trial {best['number']} {status['metric']} {best['value']:.4f} run {best['run']}")
    for row in status["trials"]:
        value = f"{row['value']:.4f}" if row["value"] is not None else "-"
        print(f"  {row['number']:>4}  {row['state']:<11} {value:>8}  {row['run'] or '-'}  {json.dumps(row['params'])}")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from core.sweeps import store

    stopped = store.cancel_sweep(store.open_sweep(args.sweep, args.models_dir))
    print(f"sweep cancelled; runs asked to stop: {', '.join(stopped) if stopped else 'none'}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from core.sweeps import store

    found = store.list_sweeps(args.models_dir)
    if not found:
        print("no sweeps")
    for sweep in found:
        print(f"{sweep.id}  {sweep.plan.name}  {sweep.plan.sampler} x {sweep.plan.trials}")
    return 0
