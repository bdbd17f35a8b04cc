"""Several training processes through torchrun: the process group, each rank's share, agreeing to stop.

A run with ``nproc`` N > 1 (TrainConfig; ``--nproc`` on the command line) is trained by

    python -m torch.distributed.run --standalone --nproc-per-node N -m core train --run-dir models/<id>

which core.runs.jobs launches as the job's detached process, so cancel, resume and the pages work as
for one process. torchrun starts N copies of ``python -m core train``; each joins the process group
here (NCCL with one GPU per process on CUDA, gloo on a CPU) and then, in core.training.loop:

- builds the same model from the same seed; DistributedDataParallel averages the gradients;
- walks the SAME global epoch order one process would (core.training.split) and takes a contiguous
  slice of every global batch (``Group.slice``): the batch size stays the global batch, and each
  rank's loss is weighted by its share of it, so the averaged gradient is the whole batch's;
- evaluates its slice of every validation batch; the slices are gathered (``Group.gather``), so
  the metrics are computed once, on all validation images, in one-process order;
- rank 0 alone writes the run folder (status.json, metrics, checkpoints of the unwrapped model,
  TensorBoard, predictions) and holds the job slot; every step the ranks agree whether to stop
  (``Group.any``: rank 0's cancel flag), so a cancel stops every rank at the same step.

Waits that may be long (rank 0 queued for a job slot, building the decoded cache) go through
torchrun's key-value store, polled, not through collectives with their timeout. A rank that dies
makes the others' next collective fail (gloo and NCCL notice the closed connection), torchrun tears
the group down and exits non-zero, and rank 0 records the run as failed (see core.cli.train).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import torch
from torch import nn

from core.errors import ConfigError, JobCancelled, RunError

T = TypeVar("T")
COLLECTIVE_TIMEOUT = timedelta(minutes=30)  # a hung (not dead) rank; dead ones fail the next collective at once
STORE_POLL_S = 0.2


def in_torchrun() -> bool:
    """True in a process torchrun started (it sets these for each worker)."""
    return "TORCHELASTIC_RUN_ID" in os.environ and "WORLD_SIZE" in os.environ


# ---- how many processes ----------------------------------------------------------------------------------


def visible_gpus(device: str) -> int:
    if device == "cpu":
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_nproc(nproc: int, device: str) -> int:
    """Processes to start on this machine: ``nproc``, or one per visible GPU for 0 (1 without a GPU)."""
    gpus = visible_gpus(device)
    if nproc == 0:
        return max(1, gpus)
    if gpus and nproc > gpus:
        raise ConfigError(
            f"nproc: {nproc} processes need {nproc} GPUs but {gpus} are visible; use nproc 0 (one per GPU), "
            f"at most {gpus}, or device cpu"
        )
    return nproc


def torchrun_args(run_root: str | os.PathLike, nproc: int) -> list[str]:
    """The arguments after ``python`` that train ``run_root`` with ``nproc`` processes on this machine.
    (``--run-dir`` is train's ``--run``: torchrun's parser rejects "--run" as an ambiguous prefix of --run-path.)"""
    return [
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "-m",
        "core",
        "train",
        "--run-dir",
        str(run_root),
    ]


def training_args(run_root: str | os.PathLike, config: dict[str, Any]) -> list[str]:
    """What core.runs.jobs launches for a run folder's config: ``train --run R`` (after ``python -m core``),
    or the torchrun command (``-m torch.distributed.run ...``) when it asks for several processes.
    ConfigError when it asks for more processes than there are GPUs."""
    nproc, device = config.get("nproc", 1), config.get("device", "auto")
    if isinstance(nproc, int) and not isinstance(nproc, bool) and isinstance(device, str) and nproc != 1:
        count = resolve_nproc(nproc, device)
        if count > 1:
            return torchrun_args(run_root, count)
    return ["train", "--run", str(run_root)]


# ---- the group ---------------------------------------------------------------------------------------------


@dataclass(eq=False)  # compared by identity: SINGLE is a shared default
class Group:
    """This process's place among the run's processes; one process (the default) is a group of one."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    node: int = 0
    device: torch.device | None = None  # where this rank trains (None: as the config says)
    store: Any = field(default=None, repr=False)  # torchrun's key-value store, for the long waits

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def slice(self, n: int) -> slice:
        """This rank's contiguous part of ``n`` items (sizes differ by at most one)."""
        return slice(n * self.rank // self.world, n * (self.rank + 1) // self.world)

    # ---- collectives (every rank calls them at the same point) ----

    def any(self, *flags: bool) -> list[bool]:
        """For each flag: true on every rank when it is true on any (one small all-reduce)."""
        if not self.active:
            return [bool(f) for f in flags]
        import torch.distributed as dist

        t = torch.tensor([1.0 if f else 0.0 for f in flags], device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    def sums(self, values: Sequence[float | torch.Tensor]) -> list[float]:
        """Each value summed over the ranks (one small all-reduce)."""
        device = self._comm_device()
        t = torch.stack([torch.as_tensor(v, dtype=torch.float64).to(device).reshape(()) for v in values])
        if self.active:
            import torch.distributed as dist

            dist.all_reduce(t)
        return t.tolist()

    def gather(self, obj: T) -> list[T]:
        """Every rank's ``obj``, in rank order."""
        if not self.active:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm statistics) everywhere: DDP syncs them at the start of each forward,
        so after the last training step each rank holds its own; evaluation must use the ones saved."""
        if not self.active:
            return
        import torch.distributed as dist

        for buf in module.buffers():
            dist.broadcast(buf.data, src=0)

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in DistributedDataParallel (parameters that do not require grad are left out)."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device is not None and self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def _comm_device(self) -> torch.device:
        return self.device if self.device is not None and self.device.type == "cuda" else torch.device("cpu")

    # ---- the store (polled: waits of any length) ----

    def publish(self, key: str, value: str) -> None:
        if self.store is not None:
            self.store.set(key, value)

    def published(self, key: str) -> str | None:
        if self.store is None or not self.store.check([key]):
            return None
        return self.store.get(key).decode()

    def wait_for(self, key: str) -> str:
        """The value rank 0 (or this machine's first rank) publishes under ``key``, however long it takes."""
        while True:
            value = self.published(key)
            if value is not None:
                return value
            time.sleep(STORE_POLL_S)

    def machine_first(self, key: str, make: Callable[[], T]) -> T:
        """``make()`` on this machine's first rank, then on the others: one process builds what they share
        on disk (the decoded-image cache), the others reuse it instead of building it N times at once."""
        if not self.active:
            return make()
        key = f"{key}/node{self.node}"
        if self.local_rank == 0:
            try:
                result = make()
            except JobCancelled:
                self.publish(key, "cancelled")
                raise
            except BaseException:
                self.publish(key, "failed")
                raise
            self.publish(key, "ready")
            return result
        outcome = self.wait_for(key)
        if outcome == "cancelled":
            raise JobCancelled("cancelled while rank 0 prepared the images")
        if outcome != "ready":
            raise RunError("the first process of this machine failed preparing the images (see job.log)")
        return make()


SINGLE = Group()


def init_group(device: str) -> Group:
    """Join the process group torchrun set up (a group of one outside torchrun or with one process)."""
    if not in_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return SINGLE
    import torch.distributed as dist

    env = os.environ
    rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    local_rank, local_world = int(env.get("LOCAL_RANK", 0)), int(env.get("LOCAL_WORLD_SIZE", 1))
    gpus = visible_gpus(device)
    if device == "cuda" and not gpus:
        raise ConfigError("device: cuda was asked for but no CUDA GPU is visible; use auto or cpu")
    if gpus and local_world > gpus:
        raise ConfigError(f"nproc: {local_world} processes on this machine but {gpus} GPUs are visible")
    if gpus:
        torch.cuda.set_device(local_rank)
        where = torch.device("cuda", local_rank)
        dist.init_process_group("nccl", timeout=COLLECTIVE_TIMEOUT, device_id=where)
    else:
        where = torch.device("cpu")
        dist.init_process_group("gloo", timeout=COLLECTIVE_TIMEOUT)
    attempt = f"{env.get('TORCHELASTIC_RUN_ID', '')}/{env.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    client = dist.TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), is_master=False, timeout=COLLECTIVE_TIMEOUT)
    return Group(
        rank=rank,
        world=world,
        local_rank=local_rank,
        local_world=local_world,
        node=int(env.get("GROUP_RANK", 0)),
        device=where,
        store=dist.PrefixStore(f"workbench/{attempt}/", client),
    )


def leave_group(group: Group) -> None:
    if group.active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


class FollowerContext:
    """The job context of ranks other than 0: they write no status and take the cancel decision from
    rank 0 (through ``Group.any`` in the training loop)."""

    def heartbeat(self, step=None, total_steps=None, epoch=None, message=None, force=False) -> None:
        pass

    def cancel_requested(self) -> bool:
        return False
