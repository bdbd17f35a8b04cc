"""``python -m core train``: run one training job in the foreground (the app launches the same command).

    python -m core train --run models/<run-id>              # the run folder's config.json (resumes if stopped)
    python -m core train --config cfg.json                  # a new run folder under the models dir
    python -m core train --run models/try1 --data data/demo --task mask --epochs 2   # new folder, defaults + flags
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_commands(sub: argparse._SubParsersAction) -> None:
    from core.data.tasks import TASK_NAMES

    p = sub.add_parser(
        "train",
        help="train a model in the foreground (resumes a stopped run)",
        description="Train from a run folder's config.json or from --config FILE; flags override the config.",
    )
    p.add_argument("--run", help="run folder (models/<run-id>); created when it does not exist")
    p.add_argument("--config", help="a TrainConfig JSON file (fields as in config.json)")
    p.add_argument("--data", help="dataset root")
    p.add_argument("--task", choices=TASK_NAMES, help="what to predict: every class, or one competition attribute")
    p.add_argument("--model", help="backbone, e.g. small_cnn, resnet18")
    p.add_argument("--epochs", type=int)
    p.add_argument("--max-steps", type=int, dest="max_steps", help="optimizer steps instead of epochs (0 = epochs)")
    p.add_argument("--img-size", type=int, nargs=2, metavar=("H", "W"), dest="img_size",
                   help="model input size; also sets the final Resize of both transform specs")  # fmt: skip
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.set_defaults(func=cmd_train)


OVERRIDES = ("data", "task", "model", "epochs", "max_steps", "img_size", "batch_size", "lr", "seed")


def cmd_train(args: argparse.Namespace) -> int:
    from core import runs, settings
    from core.errors import ConfigError, RunError
    from core.fsutil import read_json
    from core.training.config import TrainConfig

    overrides = {k: getattr(args, k) for k in OVERRIDES if getattr(args, k) is not None}
    if args.config:
        raw = read_json(args.config, default=None)
        if not isinstance(raw, dict):
            raise ConfigError(f"{args.config}: not found or not a JSON object")
    elif args.run and (Path(args.run) / "config.json").is_file():
        raw = runs.read_config(runs.RunFolder(args.run))
    elif args.run:
        raw = {}
    else:
        raise ConfigError("give --run models/<run-id> or --config FILE")
    cfg = apply_overrides(TrainConfig.from_dict(raw) if raw else None, overrides)

    if args.run:
        run = runs.RunFolder(args.run)
        if not run.root.is_dir():
            run = runs.create_run_folder(run.root.parent, run.root.name)
    else:
        run = runs.create_run_folder(settings.load().models_dir)
    if run.last_checkpoint.is_file() and overrides:
        raise RunError(f"run {run.id} has a checkpoint: resume it without flags, or train into a new run folder")
    runs.write_config(run, {**cfg.to_dict(), "kind": "train"})
    print(f"run folder: {run.root}", flush=True)
    return 0 if train_in_foreground(run) == "completed" else 1


def apply_overrides(cfg, overrides: dict):
    """The config with CLI flags applied; --img-size also resizes both specs' final Resize."""
    from core.specs import transforms
    from core.training.config import TrainConfig

    base = cfg.to_dict() if cfg is not None else None
    if base is None:
        # Defaults, but with the size given on the command line so the default specs match it.
        size = overrides.get("img_size")
        train, eval_ = transforms.preset("baseline", size) if size else (None, None)
        base = TrainConfig(**({"train_spec": train, "eval_spec": eval_, "img_size": list(size)} if size else {})).to_dict()
    elif "img_size" in overrides:
        base["train_spec"] = resize_last(base["train_spec"], overrides["img_size"])
        base["eval_spec"] = resize_last(base["eval_spec"], overrides["img_size"])
    base.update({k: (list(v) if k == "img_size" else v) for k, v in overrides.items()})
    return TrainConfig.from_dict(base)


def resize_last(spec: list[dict], size) -> list[dict]:
    """Set the size of the spec's last Resize/RandomResizedCrop, as transforms.preset does (TrainConfig
    then checks the result, e.g. a later CenterCrop that no longer fits)."""
    spec = [dict(step) for step in spec]
    for step in reversed(spec):
        if step.get("op") in ("Resize", "RandomResizedCrop"):
            step["size"] = list(size)
            break
    return spec


class ProgressContext:
    """Wraps the job context: a tqdm bar on a terminal, heartbeats passed through."""

    def __init__(self, ctx):
        from tqdm import tqdm

        self.ctx = ctx
        self.bar = tqdm(total=None, unit="step", dynamic_ncols=True, disable=None)

    def heartbeat(self, step=None, total_steps=None, epoch=None, message=None, **kw) -> None:
        if total_steps is not None and self.bar.total != total_steps:
            self.bar.total = total_steps
            self.bar.refresh()
        if step is not None and step > self.bar.n:
            self.bar.update(step - self.bar.n)
        if epoch is not None:
            self.bar.set_postfix_str(f"epoch {epoch}", refresh=False)
        self.ctx.heartbeat(step=step, total_steps=total_steps, epoch=epoch, message=message, **kw)

    def cancel_requested(self) -> bool:
        return self.ctx.cancel_requested()

    def close(self) -> None:
        self.bar.close()


def train_in_foreground(run) -> str:
    """Run the job through core.runs.jobs (lock, slot, status) and return its final state."""
    from core import runs
    from core.runs import jobs
    from core.training.loop import run_training

    def work(ctx) -> None:
        progress = ProgressContext(ctx)
        try:
            run_training(run, progress)
        finally:
            progress.close()

    state = jobs.run_job(run, work)
    status = runs.read_status(run)
    print(f"{state}" + (f": {status.get('error')}" if status.get("error") else ""), flush=True)
    return state
