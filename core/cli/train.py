"""``python -m core train``: run one training job in the foreground (the app launches the same command).

    python -m core train --run models/<run-id>              # the run folder's config.json (resumes if stopped)
    python -m core train --config cfg.json                  # a new run folder under the models dir
    python -m core train --run models/try1 --data data/demo --task mask --epochs 2   # new folder, defaults + flags
    python -m core train --run models/try1 --nproc 2        # two processes (torchrun + DDP); auto = every GPU

With ``--nproc N`` (or ``nproc`` in the config) this command starts
``python -m torch.distributed.run --standalone --nproc-per-node N -m core train --run-dir R`` and waits
for it (``--run-dir`` is ``--run``: torchrun's parser refuses ``--run`` as an ambiguous abbreviation); each process torchrun starts runs this command again, as one rank of the group
(core.training.distributed): rank 0 runs the job (lock, slot, status.json, everything written), the
others follow it and write nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import time
from pathlib import Path


def _nproc(text: str) -> int:
    if text == "auto":
        return 0
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of processes or auto, got {text!r}") from None


def add_commands(sub: argparse._SubParsersAction) -> None:
    from core.data.tasks import TASK_NAMES
    from core.training.config import AMP_MODES, DEVICES

    p = sub.add_parser(
        "train",
        help="train a model in the foreground (resumes a stopped run)",
        description="Train from a run folder's config.json or from --config FILE; flags override the config.",
    )
    # --run-dir: the same, for torchrun's command line, whose own parser takes --run for a prefix of --run-path
    p.add_argument(
        "--run", "--run-dir", dest="run", help="run folder (models/<run-id>); created when it does not exist"
    )
    p.add_argument("--config", help="a TrainConfig JSON file (fields as in config.json)")
    p.add_argument("--data", help="dataset root")
    p.add_argument("--task", choices=TASK_NAMES, help="what to predict: every class, or one competition attribute")
    p.add_argument("--model", help="backbone, e.g. small_cnn, resnet18, timm:resnet10t")
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, help="start from ImageNet weights")
    p.add_argument("--epochs", type=int)
    p.add_argument("--max-steps", type=int, dest="max_steps", help="optimizer steps instead of epochs (0 = epochs)")
    p.add_argument(
        "--img-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        dest="img_size",
        help="model input size; also sets the final Resize of both transform specs",
    )
    p.add_argument("--batch-size", type=int, dest="batch_size", help="the global batch (split over --nproc processes)")
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--freeze-epochs",
        type=int,
        dest="freeze_epochs",
        help="epochs training only the head (-1 = auto: 1 when pretrained)",
    )
    p.add_argument(
        "--backbone-lr-mult",
        type=float,
        dest="backbone_lr_mult",
        help="backbone lr = lr x this (-1 = auto: 0.1 when pretrained)",
    )
    p.add_argument("--ema-decay", type=float, dest="ema_decay", help="evaluate an EMA of the weights (0 = off)")
    p.add_argument("--device", choices=DEVICES)
    p.add_argument("--amp", choices=AMP_MODES, help="mixed precision (auto: bf16/fp16 on CUDA, off on CPU)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, help="torch.compile the model")
    p.add_argument("--nproc", type=_nproc, help="training processes via torchrun: N, or auto = one per visible GPU")
    p.add_argument("--workers", type=int, help="image-decoding processes (-1 = sized to the machine)")
    p.set_defaults(func=cmd_train)


OVERRIDES = (
    "data", "task", "model", "pretrained", "epochs", "max_steps", "img_size", "batch_size", "lr", "seed",
    "freeze_epochs", "backbone_lr_mult", "ema_decay", "device", "amp", "compile", "nproc", "workers",
)  # fmt: skip


def cmd_train(args: argparse.Namespace) -> int:
    from core.training import distributed

    cfg, overrides = config_from_args(args)
    if distributed.in_torchrun():
        return train_as_rank(args, cfg, overrides)
    run = prepare_run_folder(args, cfg, overrides)
    print(f"run folder: {run.root}", flush=True)
    nproc = distributed.resolve_nproc(cfg.nproc, cfg.device) if cfg.nproc != 1 else 1
    if nproc > 1:
        return train_with_torchrun(run, nproc)
    return 0 if train_in_foreground(run) == "completed" else 1


def config_from_args(args: argparse.Namespace):
    """(the TrainConfig the command trains, the flags given); reads files, writes nothing."""
    from core import runs
    from core.errors import ConfigError
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
    return apply_overrides(TrainConfig.from_dict(raw) if raw else None, overrides), overrides


def prepare_run_folder(args: argparse.Namespace, cfg, overrides: dict):
    """The run folder (made when new) with ``cfg`` as its config.json. Flags that would change what a run
    with a checkpoint learns are refused; where and how fast it runs (e.g. --nproc) may change."""
    from core import runs, settings
    from core.errors import RunError
    from core.training.state import RESUMABLE_CHANGES

    if args.run:
        run = runs.RunFolder(args.run)
        if not run.root.is_dir():
            run = runs.create_run_folder(run.root.parent, run.root.name)
    else:
        run = runs.create_run_folder(settings.load().models_dir)
    if run.last_checkpoint.is_file() and set(overrides) - RESUMABLE_CHANGES:
        raise RunError(f"run {run.id} has a checkpoint: resume it without flags, or train into a new run folder")
    config = {**cfg.to_dict(), "kind": "train"}
    if not (run.config.is_file() and runs.read_config(run) == config):
        write_config_unless_busy(run, config)  # unchanged: nothing to write (run_job refuses a busy run)
    return run


def write_config_unless_busy(run, config: dict) -> None:
    """Write config.json only while no other process writes the run: a running job reads it (a resume
    replays from it), so a second ``train --run X`` must refuse before changing it, not after.

    This process may already hold the run's lock: handed over by jobs.launch (the app started it), or
    held by torchrun for the group whose rank 0 this is (the command that started torchrun checked)."""
    from core import runs
    from core.training import distributed

    if distributed.in_torchrun() or _holds_handed_lock(run):
        runs.write_config(run, config)
        return
    # A job holds this lock from its launch to its end (a queued job too, while it waits for a slot), so
    # taking it is the whole check: RunError "already being written by pid N" when a job has the run.
    fd = runs.lock_run_folder(run)
    try:
        runs.write_config(run, config)
    finally:
        runs.unlock_run_folder(fd)


def _holds_handed_lock(run) -> bool:
    """True when jobs.launch handed this process the run's locked descriptor (it is left for run_job)."""
    from core.runs import jobs

    try:
        fd = int(os.environ.get(jobs._LOCK_FD_ENV, ""))
        return os.fstat(fd).st_ino == os.stat(run.lock).st_ino
    except (ValueError, OSError):
        return False


def apply_overrides(cfg, overrides: dict):
    """The config with CLI flags applied; --img-size also resizes both specs' final Resize."""
    from core.specs import transforms
    from core.training.config import TrainConfig

    base = cfg.to_dict() if cfg is not None else None
    if base is None:
        # Defaults, but with the size given on the command line so the default specs match it.
        size = overrides.get("img_size")
        train, eval_ = transforms.preset("baseline", size) if size else (None, None)
        base = TrainConfig(
            **({"train_spec": train, "eval_spec": eval_, "img_size": list(size)} if size else {})
        ).to_dict()
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


def train_in_foreground(run, group=None) -> str:
    """Run the job through core.runs.jobs (lock, slot, status) and return its final state.

    As rank 0 of several processes, the others are told to start once the job has its slot, and a
    failure caused by another rank is reported with that rank's own error."""
    from core import runs
    from core.runs import jobs
    from core.training.loop import run_training

    def work(ctx) -> None:
        if group is not None:
            group.publish("start", "go")
        progress = ProgressContext(ctx)
        try:
            run_training(run, progress, *([group] if group is not None else []))
        except Exception as err:
            replacement = _peer_failure(group, err)
            if replacement is None:
                raise
            raise replacement from err
        finally:
            progress.close()

    try:
        state = jobs.run_job(run, work)
    finally:
        if group is not None and group.published("start") is None:
            group.publish("start", "stop")  # never started (cancelled while queued, a busy folder): the others stop
    status = runs.read_status(run)
    print(f"{state}" + (f": {status.get('error')}" if status.get("error") else ""), flush=True)
    return state


def _peer_failure(group, err: BaseException) -> Exception | None:
    """The error to record when a collective failed because another rank stopped: that rank's own error
    when it published one, else a plain account of what happened (e.g. a process killed)."""
    from core.errors import RunError

    text = str(err).strip()
    if group is None or not group.active or not _is_collective_failure(err):
        return None
    peer = group.published("error")
    if peer:
        return RunError(peer)
    line = re.sub(r"^\[[^\]]*\]\s*", "", text.splitlines()[0]) if text else type(err).__name__  # gloo's source path
    return RunError(f"another process of this run stopped (killed, or it failed: see job.log): {line[:160]}")


def _is_collective_failure(err: BaseException) -> bool:
    text = str(err).lower()
    return type(err).__name__.startswith("Dist") or "gloo" in text or "nccl" in text or "connection" in text


def train_as_rank(args: argparse.Namespace, cfg, overrides: dict) -> int:
    """One process of a torchrun group: rank 0 prepares the run folder and runs the job; the others
    wait for it to start, train their share and write nothing."""
    from core import runs
    from core.errors import JobCancelled
    from core.runs import jobs
    from core.training import distributed
    from core.training.loop import run_training

    group = distributed.init_group(cfg.device)
    try:
        run = prepare_run_folder(args, cfg, overrides) if group.is_main else None
        run = runs.RunFolder(group.gather(str(run.root) if run is not None else "")[0])
        if group.is_main:
            print(f"run folder: {run.root} ({group.world} processes)", flush=True)
            # A cancel ends with 0 too: torchrun would report a non-zero exit as the group's failure.
            return 1 if train_in_foreground(run, group) == "failed" else 0
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - rank 0 speaks for the run; errors still go to stderr
        if group.wait_for("start") != "go":
            return 0
        try:
            run_training(run, distributed.FollowerContext(), group)
        except JobCancelled:
            return 0
        except Exception as err:
            group.publish("error", f"process {group.rank}: {jobs.error_line(err)}")
            raise
        return 0
    finally:
        distributed.leave_group(group)


def train_with_torchrun(run, nproc: int) -> int:
    """Train ``run`` with ``nproc`` processes in the foreground: torchrun as a child, then its outcome.
    A group that died before rank 0 recorded an end (a process killed) is recorded as failed."""
    import subprocess

    from core import runs
    from core.runs import jobs
    from core.training import distributed

    cmd = [sys.executable, *distributed.torchrun_args(run.root, nproc)]
    print(f"{nproc} processes: {' '.join(cmd[1:])}", flush=True)
    started = time.time()
    # Ctrl-C reaches torchrun too (same process group), which stops its processes (they run in sessions of
    # their own) and exits: this process waits for that instead of killing torchrun half-way.
    previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        code = subprocess.run(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"}, check=False).returncode
    finally:
        signal.signal(signal.SIGINT, previous)
    status = jobs.reconcile(run)
    if status.get("state") in runs.ACTIVE_STATES or (status.get("finished_at") or 0) < started:
        error = f"torchrun exited with code {code} before the run recorded its end (see the output above)"
        status = runs.write_status(run, state="failed", error=error, finished_at=time.time(), message="failed")
    print(f"{status.get('state')}" + (f": {status.get('error')}" if status.get("error") else ""), flush=True)
    return 0 if status.get("state") == "completed" else 1
