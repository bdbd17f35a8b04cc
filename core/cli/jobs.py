"""``python -m core jobs {list,cancel,resume,hold,note,tag,star,archive,delete}``: background jobs and the run
journal (names, tags, stars, notes, archive, delete) from a terminal."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("jobs", help="list, cancel or resume background jobs (training runs)")
    jobs_sub = parser.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")

    p = jobs_sub.add_parser("list", help="the runs under the models folder with their state")
    p.add_argument("--models-dir", help="folder of runs (default: WORKBENCH_MODELS_DIR or ./models)")
    p.add_argument("--all", action="store_true", help="include archived runs")
    p.add_argument("--tag", help="only runs with this tag")
    p.add_argument("--starred", action="store_true", help="only starred runs")
    p.set_defaults(func=_list)

    p = jobs_sub.add_parser("cancel", help="ask a running or queued job to stop (it keeps its last checkpoint)")
    p.add_argument("run", help="run folder")
    p.set_defaults(func=_cancel)

    p = jobs_sub.add_parser("resume", help="relaunch a cancelled or failed run from its last checkpoint")
    p.add_argument("run", help="run folder")
    p.set_defaults(func=_resume)

    _add_journal_commands(jobs_sub)

    p = jobs_sub.add_parser(
        "hold", help="a job that does nothing until FILE exists or it is cancelled (tests the job machinery)"
    )
    p.add_argument("--run", required=True, help="run folder (made if missing)")
    p.add_argument("--until", required=True, help="finish (completed) once this file exists")
    p.add_argument("--fail", help="instead of completing, fail with this message")
    p.set_defaults(func=_hold)


def _add_journal_commands(jobs_sub: argparse._SubParsersAction) -> None:
    run_help = "run folder, or run id under the models folder"
    p = jobs_sub.add_parser("note", help="add a paragraph to the run's notes (notes.md, Markdown)")
    p.add_argument("run", help=run_help)
    p.add_argument("text", nargs="+", help="the note (words are joined with spaces)")
    p.add_argument("--replace", action="store_true", help="replace the notes instead of adding to them")
    p.set_defaults(func=_note)

    p = jobs_sub.add_parser("name", help="give the run a display name (empty to clear it)")
    p.add_argument("run", help=run_help)
    p.add_argument("name", nargs="*", help="the display name")
    p.set_defaults(func=_name)

    p = jobs_sub.add_parser("tag", help="add tags to a run (or remove them with --remove)")
    p.add_argument("run", help=run_help)
    p.add_argument("tags", nargs="+", metavar="TAG")
    p.add_argument("--remove", action="store_true", help="remove these tags")
    p.set_defaults(func=_tag)

    p = jobs_sub.add_parser("star", help="star a run (or unstar it with --off)")
    p.add_argument("run", help=run_help)
    p.add_argument("--off", action="store_true", help="remove the star")
    p.set_defaults(func=_star)

    p = jobs_sub.add_parser("archive", help="hide a run from lists, keeping it on disk (or --restore it)")
    p.add_argument("run", help=run_help)
    p.add_argument("--restore", action="store_true", help="show the archived run again")
    p.set_defaults(func=_archive)

    p = jobs_sub.add_parser("delete", help="delete a run folder and its unshared decoded-image caches")
    p.add_argument("run", help=run_help)
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=_delete)


def _all_runs(models_dir: str | None, include_archived: bool, tag: str | None, starred: bool):
    """Every run (reconciled) with its journal columns, filtered as asked."""
    import pandas as pd

    from core import runs, settings
    from core.errors import WorkbenchError
    from core.runs import jobs, journal

    parent = models_dir or settings.load().models_dir
    rows = []
    for run in runs.list_run_folders(parent):
        try:
            rows.append(jobs.run_summary(run))
        except (WorkbenchError, OSError, ValueError):
            continue  # a folder being deleted or damaged must not hide the others
    frame = pd.DataFrame(rows, columns=jobs.RUN_COLUMNS)
    return journal.annotate(frame, include_archived=include_archived, tag=tag, starred=starred or None)


def _list(args: argparse.Namespace) -> int:
    frame = _all_runs(args.models_dir, args.all, args.tag, args.starred)
    if frame.empty:
        print("no runs")
        return 0
    shown = frame[
        ["id", "name", "model", "task", "state", "progress", "best_val_f1", "tags", "starred", "error"]
    ].copy()
    shown["progress"] = (shown["progress"] * 100).round().astype(int).astype(str) + "%"
    shown["tags"] = shown["tags"].map(lambda tags: ",".join(tags or []))
    shown["starred"] = shown["starred"].map(lambda on: "*" if on else "")
    if args.all:
        shown["archived"] = frame["archived"].map(lambda on: "archived" if on else "")
    print(shown.to_string(index=False))
    return 0


def _note(args: argparse.Namespace) -> int:
    from core.runs import journal

    run = journal.resolve_run(args.run)
    text = " ".join(args.text)
    if args.replace:
        journal.write_notes(run, text)
    else:
        journal.append_note(run, text)
    print(f"notes of {run.id}: {journal.notes_path(run)}")
    return 0


def _name(args: argparse.Namespace) -> int:
    from core.runs import journal

    run = journal.resolve_run(args.run)
    name = journal.set_name(run, " ".join(args.name))["name"]
    print(f"{run.id}: named {name!r}" if name else f"{run.id}: name cleared")
    return 0


def _tag(args: argparse.Namespace) -> int:
    from core.runs import journal

    run = journal.resolve_run(args.run)
    change = journal.remove_tags if args.remove else journal.add_tags
    tags = change(run, args.tags)["tags"]
    print(f"{run.id}: tags {', '.join(tags) if tags else '(none)'}")
    return 0


def _star(args: argparse.Namespace) -> int:
    from core.runs import journal

    run = journal.resolve_run(args.run)
    journal.set_starred(run, not args.off)
    print(f"{run.id}: {'unstarred' if args.off else 'starred'}")
    return 0


def _archive(args: argparse.Namespace) -> int:
    from core.runs import journal

    run = journal.resolve_run(args.run)
    (journal.restore if args.restore else journal.archive)(run)
    print(f"{run.id}: {'restored' if args.restore else 'archived (hidden from lists; jobs list --all shows it)'}")
    return 0


def _delete(args: argparse.Namespace) -> int:
    import sys

    from core.errors import RunError
    from core.runs import deletion, journal

    run = journal.resolve_run(args.run)
    if not args.yes:
        if not sys.stdin.isatty():
            raise RunError(f"delete {run.id}: add --yes to delete without a question (stdin is not a terminal)")
        answer = input(f"delete run {run.id} ({run.root}) and its unshared caches? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("not deleted")
            return 1
    report = deletion.delete_run(run)
    kept = f", {len(report['cache_kept'])} shared cache entries kept" if report["cache_kept"] else ""
    print(f"deleted {report['path']} and {len(report['cache_removed'])} cache files{kept}")
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
