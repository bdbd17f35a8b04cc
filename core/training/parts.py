"""What one optimizer step needs, built from a TrainConfig: device, model placement, loss, optimizer,
learning-rate schedule, gradient scaler and, on a CPU, the thread governor.

``TrainParts`` bundles them so ``train_one_epoch`` takes one argument instead of eight, and knows
how its pieces go into and come out of a checkpoint (``model``, ``optimizer``, ``scheduler``, ``scaler``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ConfigError
from core.training.config import TrainConfig
from core.training.cputhreads import ThreadGovernor

# ---- loss, optimizer, schedule ------------------------------------------------------------------------------


class FocalLoss(nn.Module):
    """Softmax focal loss (Lin et al.): down-weights easy examples by (1 - p_true) ** gamma."""

    def __init__(self, gamma: float):
        super().__init__()
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits.float(), target, reduction="none")
        return ((1.0 - torch.exp(-ce)) ** self.gamma * ce).mean()


def make_loss(cfg: TrainConfig, train_labels: np.ndarray, num_classes: int) -> nn.Module:
    if cfg.loss == "label_smoothing":
        return nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    if cfg.loss == "focal":
        return FocalLoss(cfg.focal_gamma)
    if cfg.loss == "weighted_ce":
        counts = np.bincount(train_labels, minlength=num_classes).clip(min=1)
        weights = len(train_labels) / (num_classes * counts)
        return nn.CrossEntropyLoss(weight=torch.as_tensor(weights, dtype=torch.float32))
    return nn.CrossEntropyLoss()


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = model.parameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(step: int, cfg: TrainConfig, spe: int, total_steps: int) -> float:
    """Multiplier of cfg.lr before optimizer step ``step`` (0-based): linear warm-up, then the schedule."""
    if step < cfg.warmup_steps:
        return 0.01 + 0.99 * step / cfg.warmup_steps
    if cfg.scheduler == "step":
        return cfg.gamma ** ((step // spe) // cfg.step_size)
    if cfg.scheduler == "cosine":
        span = max(1, total_steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def make_scheduler(cfg: TrainConfig, optimizer, spe: int, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    # A closure, not a lambda object: LambdaLR then keeps only plain numbers in its state_dict.
    def factor(step: int) -> float:
        return lr_factor(step, cfg, spe, total_steps)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ---- device ------------------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was asked for but no CUDA GPU is visible; use auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def to_device(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return images.to(device, non_blocking=True).contiguous(memory_format=fmt)


def cpu_thread_governor(device: torch.device, fixed_threads: int) -> ThreadGovernor | None:
    """On a CPU the thread count is measured as the job runs: two threads are faster on an idle
    machine and much slower than one beside a busy app (see core.training.cputhreads). A fixed count
    (WORKBENCH_TRAIN_THREADS) keeps float results bit-identical between a resumed and a straight run."""
    if device.type != "cpu":
        return None
    if fixed_threads:
        torch.set_num_threads(fixed_threads)
        return None
    return ThreadGovernor()


# ---- the bundle ------------------------------------------------------------------------------------------


@dataclass
class TrainParts:
    model: nn.Module  # on ``device``, in channels_last when the backbone prefers it
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler  # stepped once per optimizer step
    scaler: torch.amp.GradScaler  # enabled on CUDA (float16 autocast), a no-op on CPU
    device: torch.device
    channels_last: bool  # inputs are converted to the model's memory format
    governor: ThreadGovernor | None = None  # CPU only, unless the thread count is fixed

    def to_checkpoint(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
        }  # fmt: skip

    def load_checkpoint(self, ckpt: dict[str, Any], model_name: str, num_classes: int) -> None:
        from core.training import models

        models.load_state_dict_checked(self.model, ckpt["model"], model_name, num_classes)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        # A run saved on a CPU has an empty (disabled) scaler state; resumed on CUDA it starts a fresh scale.
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])


def build_parts(
    cfg: TrainConfig, model: nn.Module, device: torch.device, train_labels: np.ndarray, num_classes: int,
    spe: int, total_steps: int, fixed_threads: int = 0,
) -> TrainParts:  # fmt: skip
    """Place ``model`` on ``device`` and build its loss, optimizer, schedule and scaler from ``cfg``."""
    from core.training import models

    channels_last = cfg.channels_last and models.prefers_channels_last(cfg.model)
    model = model.to(device=device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    optimizer = make_optimizer(cfg, model)
    return TrainParts(
        model=model,
        loss_fn=make_loss(cfg, train_labels, num_classes).to(device),
        optimizer=optimizer,
        scheduler=make_scheduler(cfg, optimizer, spe, total_steps),
        scaler=torch.amp.GradScaler(device.type, enabled=device.type == "cuda"),
        device=device,
        channels_last=channels_last,
        governor=cpu_thread_governor(device, fixed_threads),
    )
