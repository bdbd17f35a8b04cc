"""What one optimizer step needs, built from a TrainConfig: device, model placement, loss, optimizer,
learning-rate schedule, mixed precision and its gradient scaler, the weight EMA, the wrapped network
the forward runs through (DistributedDataParallel, torch.compile) and, on a CPU, the thread governor.

``TrainParts`` bundles them so ``train_one_epoch`` takes one argument instead of eight, and knows
how its pieces go into and come out of a checkpoint (``model``, ``optimizer``, ``scheduler``,
``scaler``, ``ema``): always the unwrapped model, so a checkpoint trained on N processes, compiled
or not, loads in one process and vice versa.

On CUDA: mixed precision (``amp``: bfloat16 where the GPU has it, else float16 with a GradScaler),
channels_last for every backbone (tensor cores want it), cuDNN's autotuner and TF32 matmuls.
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
from core.training import finetune
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
    """One parameter group, or the head at lr and the backbone at lr x backbone_lr_mult (core.training.finetune)."""
    params = finetune.param_groups(model, cfg.lr, finetune.backbone_lr_mult(cfg))
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


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (None: full precision).

    auto: bfloat16 on a GPU that has it (no loss scaling needed), else float16; off on a CPU, where
    autocast is slower than float32 for these models. bf16/fp16 are honoured on a CPU too."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "fp16":
        return torch.float16
    bf16_ok = device.type != "cuda" or torch.cuda.is_bf16_supported()
    if amp == "bf16" and not bf16_ok:
        raise ConfigError("amp: this GPU has no bfloat16; use fp16 or auto")
    return torch.bfloat16 if bf16_ok else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    return torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def speed_up_cuda() -> None:
    """cuDNN picks the fastest convolution per input shape (shapes repeat every step); float32 matmuls
    may use TF32 (what AMP off still gains on Ampere and later)."""
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("high")


class CompiledOrEager:
    """Calls ``torch.compile(net)``; the first time a compiled call fails (no compiler, an unsupported op
    ...), logs why and runs ``net`` itself from then on. Compilation happens at the first call, so this
    is where it fails; a genuine error in the model fails again, eagerly, with its own message."""

    def __init__(self, net: nn.Module, compiled: Any, log: Any):
        self.net, self.compiled, self.log = net, compiled, log

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - any compiler failure: the eager model still trains
                self.compiled = None
                self.log(
                    f"torch.compile failed, training uncompiled: {type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
                )
        return self.net(*args, **kwargs)


def maybe_compile(net: nn.Module, enabled: bool, log: Any = print) -> Any:
    if not enabled:
        return net
    try:
        compiled = torch.compile(net)
    except Exception as err:  # noqa: BLE001 - e.g. no compiler backend for this platform
        log(f"torch.compile unavailable, training uncompiled: {type(err).__name__}: {err}")
        return net
    return CompiledOrEager(net, compiled, log)


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


def _identity(model: nn.Module) -> nn.Module:
    return model


@dataclass
class TrainParts:
    model: nn.Module  # the unwrapped model on ``device`` (what checkpoints hold), in the chosen memory format
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler  # stepped once per optimizer step
    scaler: torch.amp.GradScaler  # enabled with float16 autocast only, a no-op otherwise
    device: torch.device
    channels_last: bool  # inputs are converted to the model's memory format
    governor: ThreadGovernor | None = None  # CPU only, unless the thread count is fixed
    amp_dtype: torch.dtype | None = None  # autocast dtype (None: full precision)
    ema: finetune.WeightEma | None = None  # the weight average evaluation uses (ema_decay > 0)
    wrap: Any = _identity  # model -> what the forward runs through (DDP, torch.compile)
    net: Any = None  # wrap(model), rebuilt when the trainable parameters change

    def __post_init__(self) -> None:
        if self.net is None:
            self.net = self.wrap(self.model)

    @property
    def eval_model(self) -> nn.Module:
        """What evaluation, best.pt and the validation predictions use: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def autocast(self) -> torch.autocast:
        return autocast(self.device, self.amp_dtype)

    def set_head_only(self, head_only: bool) -> None:
        """Freeze or unfreeze the backbone; DistributedDataParallel only syncs the parameters that were
        trainable when it was made, so the network is wrapped again when that changes."""
        if finetune.set_head_only(self.model, head_only) and self.wrap is not _identity:
            self.net = None  # the old wrapper (and its gradient hooks) goes before the new one is made
            self.net = self.wrap(self.model)

    def after_step(self, step: int) -> None:
        if self.ema is not None:
            self.ema.update(self.model, step)

    def to_checkpoint(self) -> dict[str, Any]:
        ckpt = {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
        }  # fmt: skip
        if self.ema is not None:
            ckpt["ema"] = self.ema.state()
        return ckpt

    def load_checkpoint(self, ckpt: dict[str, Any], model_name: str, num_classes: int) -> None:
        from core.training import models

        models.load_state_dict_checked(self.model, ckpt["model"], model_name, num_classes)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        # A run saved without float16 has an empty (disabled) scaler state; resumed with it, a fresh scale.
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and isinstance(ckpt.get("ema"), dict):
            self.ema.load_state(ckpt["ema"])


def build_parts(
    cfg: TrainConfig,
    model: nn.Module,
    device: torch.device,
    train_labels: np.ndarray,
    num_classes: int,
    spe: int,
    total_steps: int,
    fixed_threads: int = 0,
    wrap: Any = None,
    log: Any = print,
) -> TrainParts:
    """Place ``model`` on ``device`` and build its loss, optimizer, schedule, scaler and EMA from ``cfg``.

    ``wrap`` (e.g. DistributedDataParallel) goes around the model, torch.compile (``cfg.compile``) around that."""
    from core.training import models

    dtype = amp_dtype(cfg.amp, device)
    if device.type == "cuda":
        speed_up_cuda()
    channels_last = cfg.channels_last and (device.type == "cuda" or models.prefers_channels_last(cfg.model))
    model = model.to(device=device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    optimizer = make_optimizer(cfg, model)
    outer = wrap or _identity

    def wrapped(m: nn.Module) -> Any:
        return maybe_compile(outer(m), cfg.compile, log)

    return TrainParts(
        model=model,
        loss_fn=make_loss(cfg, train_labels, num_classes).to(device),
        optimizer=optimizer,
        scheduler=make_scheduler(cfg, optimizer, spe, total_steps),
        scaler=torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
        device=device,
        channels_last=channels_last,
        governor=cpu_thread_governor(device, fixed_threads),
        amp_dtype=dtype,
        ema=finetune.WeightEma(model, cfg.ema_decay) if cfg.ema_decay > 0 else None,
        wrap=wrapped if (wrap is not None or cfg.compile) else _identity,
    )
