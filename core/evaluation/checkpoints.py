"""Checkpoints trained elsewhere: reading a state dict safely and importing it as a completed run.

Files load with ``weights_only`` (pickled code is refused unrun) or as safetensors; the weights are
checked against the architecture and class count before any run folder is written.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from core import runs
from core.data.tasks import task_classes
from core.errors import CheckpointError

IMPORT_SUFFIXES = (".pt", ".pth", ".safetensors")


def read_state_dict(file: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a .pt/.pth (weights_only: pickled code is refused unrun) or .safetensors file.

    Accepts a raw state_dict or a dict holding it under "model" or "state_dict"; strips the
    "module." prefix DataParallel adds.
    """
    file = Path(file)
    suffix = file.suffix.lower()
    if suffix not in IMPORT_SUFFIXES:
        raise CheckpointError(f"{file.name}: unsupported file type; use .pt, .pth or .safetensors")
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if not file.is_file():
            raise CheckpointError(f"{file}: checkpoint not found")
        try:
            obj: Any = load_file(str(file))
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{file.name}: not a readable safetensors file ({err})") from err
    else:
        obj = runs.load_checkpoint(file)
    for key in ("model", "state_dict"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not obj or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise CheckpointError(
            f"{file.name}: holds no state_dict (a dict of tensors, or one under 'model'/'state_dict')"
        )
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def import_checkpoint(
    file: str | os.PathLike,
    model: str,
    task: str,
    run_dir: str | os.PathLike,
    classes: list[str] | None = None,
    img_size: tuple[int, int] = (128, 96),
    eval_spec: list[dict] | None = None,
    train_spec: list[dict] | None = None,
) -> runs.RunFolder:
    """Make a completed run at ``run_dir`` from weights trained elsewhere, after checking them.

    The weights are loaded into ``model`` built for ``task``'s classes before anything is written:
    a refused file (pickled code, wrong architecture, wrong class count) leaves no run folder behind.
    The eval spec defaults to the baseline preset at ``img_size`` (what the weights are assumed to expect).
    """
    from core.specs import transforms
    from core.training import models

    classes = list(classes) if classes else task_classes(task)
    models.check_model_name(model)  # any backbone of the zoo; ConfigError names the nearest names
    state_dict = read_state_dict(file)
    net = models.build_model(model, len(classes), pretrained=False)
    models.load_state_dict_checked(net, state_dict, model, len(classes))
    img_size = (int(img_size[0]), int(img_size[1]))
    if eval_spec is None or train_spec is None:
        preset_train, preset_eval = transforms.preset("baseline", img_size=img_size)
        eval_spec = preset_eval if eval_spec is None else eval_spec
        train_spec = preset_train if train_spec is None else train_spec
    eval_spec, train_spec = transforms.validate_spec(eval_spec), transforms.validate_spec(train_spec)  # plain lists

    run_dir = Path(run_dir)
    folder = runs.create_run_folder(run_dir.parent, run_id=run_dir.name)
    meta = {"model": model, "task": task, "classes": classes, "img_size": list(img_size),
            "eval_spec": eval_spec, "train_spec": train_spec}  # fmt: skip
    runs.write_config(folder, {"kind": "imported", **meta, "source": str(Path(file).name)})
    runs.save_checkpoint(
        folder.best_checkpoint,
        {
            "model": net.state_dict(),
            "model_name": model,
            "task": task,
            "classes": classes,
            "img_size": list(img_size),
            "eval_spec": eval_spec,
            "config": {"kind": "imported", **meta},
        },
    )
    now = time.time()
    runs.write_status(
        folder,
        state="completed",
        started_at=now,
        finished_at=now,
        heartbeat=now,
        message=f"imported from {Path(file).name}",
    )
    return folder
