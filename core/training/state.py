"""The training state that goes into checkpoints/last.pt and comes back out on resume, and the
check that a checkpoint still belongs to the run being resumed.

Checkpoints load with ``torch.load(weights_only=True)``, so everything here goes in as plain data:
numbers, strings, lists, dicts and tensors (the RNG states included).

What may change between a cancel and its resume (``RESUMABLE_CHANGES``): only the fields that
change where or how fast the run computes, or how often it logs - ``workers``, ``device``, ``cache``,
``channels_last``, ``log_every``, ``amp``, ``compile``, ``nproc`` (a run trained on N processes
resumes on one and vice versa: the checkpoint holds the unwrapped model and rank 0's RNG state).
Every other config field changes what the run learns from or how (learning rate, schedule length,
split, specs, model...), and a checkpoint continued under it would silently be a different run:
resume refuses it, as it refuses a dataset whose class list or training/validation split changed (a
renamed class folder remaps labels; added images shift the replayed batch offset).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from core.errors import ConfigError, RunError
from core.training.config import TrainConfig

# ---- the state ----------------------------------------------------------------------------------------------


@dataclass
class LogWindow:
    """Running sums since the last logged step (saved in checkpoints so resume logs the same numbers)."""

    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    steps: int = 0
    started: float = field(default_factory=time.perf_counter)  # wall clock, not saved

    def add(self, loss: float, correct: int, n: int) -> None:
        self.loss_sum += loss * n
        self.correct += correct
        self.seen += n
        self.steps += 1

    def means(self) -> tuple[float, float, float]:
        """(mean loss, accuracy, images per second) over the window."""
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        return self.loss_sum / self.seen, self.correct / self.seen, self.seen / elapsed

    def state(self) -> dict[str, float]:
        return {"loss_sum": self.loss_sum, "correct": self.correct, "seen": self.seen, "steps": self.steps}


@dataclass
class TrainState:
    """Where a run is: what ``run_training`` carries from step to step and epoch to epoch."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # epochs done (a cancel mid-epoch counts only whole epochs)
    best_val_f1: float = -1.0  # the best epoch's validation macro F1 (-1: no epoch evaluated yet)
    window: LogWindow = field(default_factory=LogWindow)

    def record_step(self, loss: float, correct: int, n: int) -> None:
        self.step += 1
        self.window.add(loss, correct, n)

    def to_checkpoint(self) -> dict[str, Any]:
        """This state's checkpoint keys; ``rng`` is the process's RNG state at the time of the call."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "best_val_f1": self.best_val_f1,
            "log_window": self.window.state(),
            "rng": rng_state(),
        }

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> TrainState:
        """The state a checkpoint saved (its RNG state is restored separately, by ``set_rng_state``)."""
        return cls(
            step=int(ckpt["step"]),
            epoch=int(ckpt.get("epoch", 0)),
            best_val_f1=float(ckpt.get("best_val_f1", -1.0)),
            window=LogWindow(**ckpt.get("log_window", {})),
        )


# ---- RNG state as plain data -----------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "python": [py_version, list(py_internal), py_gauss],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_py = state["python"]
    random.setstate((version, tuple(internal), gauss_py))
    if "cuda" in state and torch.cuda.is_available():
        # Saved on a machine with another GPU count (N processes, one GPU each): the GPUs both have.
        for index, gpu_state in enumerate(list(state["cuda"])[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(gpu_state, index)


# ---- does the checkpoint still belong to this run? --------------------------------------------------------------

# Where and how fast the run computes, and how often it logs: nothing the model learns depends on these.
RESUMABLE_CHANGES = frozenset({"workers", "device", "cache", "channels_last", "log_every", "amp", "compile", "nproc"})


def check_resumable(ckpt: dict[str, Any], cfg: TrainConfig, classes: list[str], split: dict[str, Any]) -> None:
    """Raise RunError when ``cfg``, the class list or the split differ from what ``ckpt`` was trained with.

    ``split`` is RunData.fingerprint() of the dataset as it is now. Checkpoints written before a key
    existed (no ``config``, ``classes`` or ``split``) are not checked on that key."""
    at = f"the checkpoint at step {int(ckpt.get('step', 0))}"
    if isinstance(ckpt.get("config"), dict):
        changed = config_changes(ckpt["config"], cfg)
        if changed:
            raise RunError(
                f"config.json changed since {at} was saved: {'; '.join(changed)}. Resuming would silently "
                "train a different run: put the old values back to resume, or start a new run with the new config"
            )
    if "classes" in ckpt and list(ckpt["classes"]) != list(classes):
        raise RunError(
            f"the dataset's class list changed since {at} was saved ({class_changes(list(ckpt['classes']), list(classes))}), "
            "so its labels would be remapped: restore the dataset's class folders to resume, or start a new run"
        )
    old = ckpt.get("split")
    if isinstance(old, dict) and old.get("digest") != split.get("digest"):
        raise RunError(
            f"the dataset changed since {at} was saved: the training/validation split is now "
            f"{split.get('train')}/{split.get('val')} images (was {old.get('train')}/{old.get('val')}) and not the "
            "same images, so the resumed epochs would not replay: restore the dataset to resume, or start a new run"
        )


def config_changes(saved: dict[str, Any], cfg: TrainConfig) -> list[str]:
    """'field old → new' for every field of ``cfg`` that differs from ``saved``, except RESUMABLE_CHANGES.

    Both sides go through TrainConfig first, so a field written differently but meaning the same
    (1 vs 1.0, a spec's defaults spelled out) is not a change."""
    try:
        before = TrainConfig.from_dict(saved).to_dict()
    except ConfigError:
        before = dict(saved)  # written by an older TrainConfig: compare as saved
    before.pop("kind", None)
    now = cfg.to_dict()
    names = [name for name in now.keys() | before.keys() if name not in RESUMABLE_CHANGES]
    return [
        _change(name, before.get(name), now.get(name)) for name in sorted(names) if before.get(name) != now.get(name)
    ]


def _change(name: str, old: Any, new: Any) -> str:
    old_text, new_text = json.dumps(old, default=str), json.dumps(new, default=str)
    if max(len(old_text), len(new_text)) > 80:  # a transform spec: its name is enough
        return f"{name} changed"
    return f"{name} {old_text} → {new_text}"


def class_changes(old: list[str], new: list[str]) -> str:
    if len(old) != len(new):
        added, removed = sorted(set(new) - set(old)), sorted(set(old) - set(new))
        return f"{len(old)} → {len(new)} classes; added {added or 'none'}, removed {removed or 'none'}"
    moved = [f"class {i}: {a!r} → {b!r}" for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b]
    return ", ".join(moved[:3]) + (f" and {len(moved) - 3} more" if len(moved) > 3 else "")
