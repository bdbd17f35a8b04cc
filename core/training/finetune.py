"""Fine-tuning controls: head-only epochs, a smaller learning rate for the backbone, a weight EMA.

A pretrained backbone fine-tuned with a freshly initialised head goes wrong in a known way: the
random head's first, large gradients flow into features that were good, and every step the
backbone takes at the head's learning rate moves it further from them. The usual remedy, here:

- ``freeze_epochs``: the first epochs train the head alone (backbone ``requires_grad`` off, its
  BatchNorm layers in eval mode so their running statistics stay the pretrained ones), then all.
- ``backbone_lr_mult``: two optimizer parameter groups, the head at ``lr`` and the backbone at
  ``lr * mult`` (the schedule scales both). A multiplier of 1 keeps one group, as before.
- ``ema_decay``: an exponential moving average of the weights (timm's ``ModelEmaV3`` when timm is
  installed, else ``torch.optim.swa_utils.AveragedModel`` with the same rule); evaluation, best.pt
  and the validation predictions use it, last.pt carries it so a resume continues it exactly.

The head is the module that owns ``core.training.models.head_weight_key(model)``; everything else
is the backbone. Auto values (-1 in TrainConfig) resolve here: 1 frozen epoch and a 0.1 multiplier
for a pretrained run, 0 and 1 otherwise (so runs from scratch train as they always did).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from core.training.config import AUTO, TrainConfig

PRETRAINED_FREEZE_EPOCHS = 1
PRETRAINED_BACKBONE_LR_MULT = 0.1
# EMA decay warm-up (timm's rule): decay(n) = 1 - (1 + n) ** -power, capped at ema_decay. 3/4 suits runs of
# thousands rather than millions of steps (timm's docstring): early on the average follows the weights.
EMA_WARMUP_POWER = 0.75


# ---- what the config asks for -------------------------------------------------------------------------


def freeze_epochs(cfg: TrainConfig) -> int:
    if cfg.freeze_epochs != AUTO:
        return cfg.freeze_epochs
    return PRETRAINED_FREEZE_EPOCHS if cfg.pretrained else 0


def backbone_lr_mult(cfg: TrainConfig) -> float:
    if cfg.backbone_lr_mult != AUTO:
        return cfg.backbone_lr_mult
    return PRETRAINED_BACKBONE_LR_MULT if cfg.pretrained else 1.0


def head_only(cfg: TrainConfig, epoch: int) -> bool:
    """Whether epoch ``epoch`` (0-based) trains the head alone."""
    return epoch < freeze_epochs(cfg)


# ---- head and backbone ----------------------------------------------------------------------------------


def head_module(model: nn.Module) -> nn.Module:
    from core.training import models

    name = models.head_weight_key(model).rpartition(".")[0]
    return model.get_submodule(name) if name else model


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(head parameters, backbone parameters), each in the model's parameter order."""
    head_ids = {id(p) for p in head_module(model).parameters()}
    params = list(model.parameters())
    return [p for p in params if id(p) in head_ids], [p for p in params if id(p) not in head_ids]


def param_groups(model: nn.Module, lr: float, mult: float) -> list[dict[str, Any]]:
    """Optimizer groups: one group when ``mult`` is 1 (checkpoints keep their old shape); else the head at
    ``lr`` first (so the logged lr is the head's) and the backbone at ``lr * mult``."""
    if mult == 1.0:
        return [{"params": list(model.parameters()), "lr": lr}]
    head, backbone = split_parameters(model)
    return [{"params": head, "lr": lr}, {"params": backbone, "lr": lr * mult}]


def set_head_only(model: nn.Module, head_only: bool) -> bool:
    """Switch the backbone's parameters off (or on again); True when anything changed."""
    _, backbone = split_parameters(model)
    changed = any(p.requires_grad == head_only for p in backbone)
    for p in backbone:
        p.requires_grad_(not head_only)
    return changed


def train_mode(model: nn.Module) -> None:
    """model.train(), except BatchNorm layers whose parameters are all frozen: their running statistics
    stay as they are (a frozen backbone keeps the statistics its weights were trained with)."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            own = list(module.parameters(recurse=False))
            if own and not any(p.requires_grad for p in own):
                module.eval()


# ---- weight EMA ---------------------------------------------------------------------------------------


def ema_decay_at(updates: int, decay: float) -> float:
    """The decay of update number ``updates + 1`` (0 on the first: the average starts as a copy)."""
    if updates <= 0:
        return 0.0
    return min(decay, 1.0 - (1.0 + updates) ** -EMA_WARMUP_POWER)


class WeightEma:
    """An exponential moving average of a model's weights and buffers, updated after each optimizer step.

    ``module`` is the averaged copy (what evaluation runs); ``state()``/``load_state()`` go into last.pt
    as plain data. ``update(model, step)`` takes the run's step count after the step (1 for the first),
    so a resumed run continues the same sequence of decays.
    """

    def __init__(self, model: nn.Module, decay: float, prefer_timm: bool = True):
        self.decay = decay
        self._timm = _timm_ema(model, decay) if prefer_timm else None
        if self._timm is not None:
            self.module: nn.Module = self._timm.module
            self.backend = "timm.ModelEmaV3"
        else:
            self._averaged = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=self._average, use_buffers=True)
            self.module = self._averaged.module
            self.backend = "torch AveragedModel"
        self.module.eval()
        self.module.requires_grad_(False)

    def _average(self, averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor) -> None:
        weight = 1.0 - ema_decay_at(int(updates), self.decay)
        for a, c in zip(averaged, current, strict=True):
            if a.is_floating_point():
                a.lerp_(c, weight)
            else:
                a.copy_(c)  # BatchNorm's num_batches_tracked

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        if self._timm is not None:
            self._timm.update(model, step=step)
        else:
            self._averaged.update_parameters(model)

    def state(self) -> dict[str, Any]:
        updates = None if self._timm is not None else int(self._averaged.n_averaged)
        return {"model": self.module.state_dict(), "updates": updates, "backend": self.backend}

    def load_state(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        if self._timm is None:
            # A checkpoint of the timm backend has no count: it updated once per step, like this one.
            updates = state.get("updates")
            self._averaged.n_averaged.fill_(int(updates) if updates is not None else 1)


def _timm_ema(model: nn.Module, decay: float) -> Any | None:
    try:
        from timm.utils import ModelEmaV3
    except ImportError:
        return None
    # use_warmup with timm's step rule gives ema_decay_at(step - 1): the same sequence as the fallback.
    return ModelEmaV3(model, decay=decay, use_warmup=True, warmup_power=EMA_WARMUP_POWER)
