"""The Training page's new-run form, built from TrainConfig's fields.

Each field gets a widget chosen by its choices (the config module's constants) or the type of its
default, labelled from its name; ``FIELD_UI`` holds the few labels, helps and steps that need more.
No bounds are repeated here: TrainConfig checks the whole config on every change and its
ConfigError, which names the field, is shown above the Launch button. Widget keys are
``train_<field>``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import streamlit as st

from app import backbone_ui, widgets
from app.train_ui import RUN_KEY
from core.data import tasks
from core.errors import ConfigError, WorkbenchError
from core.runs import jobs
from core.specs import transforms
from core.specs.presets import BACKBONE_DEFAULT
from core.training import models
from core.training.config import AMP_MODES, CACHES, DEVICES, LOSSES, OPTIMIZERS, SCHEDULERS, TrainConfig


@dataclasses.dataclass(frozen=True)
class FieldUI:
    """How one TrainConfig field is shown where the default (a label made from the field's name, a
    widget chosen by the type of its default) is not enough. No bounds: TrainConfig checks every
    value and its ConfigError names the field."""

    label: str | None = None
    help: str | None = None
    step: float | None = None
    format: str | None = None


FIELD_UI: dict[str, FieldUI] = {
    "model": FieldUI("Backbone", help="Type to search the whole zoo: small_cnn, torchvision models, timm:<name>."),
    "pretrained": FieldUI(
        "Pretrained weights",
        help="ImageNet weights, downloaded by the training job on first use into the torch hub or Hugging Face "
        "cache and reused after that; offline, put the file there by hand (README: Backbones and pretrained weights).",
    ),
    "max_steps": FieldUI("Max steps (0 = use epochs)"),
    "lr": FieldUI("Learning rate", step=1e-4, format="%.6f"),
    "momentum": FieldUI("Momentum (SGD)"),
    "weight_decay": FieldUI(step=1e-5, format="%.6f"),
    "warmup_steps": FieldUI("Warm-up steps"),
    "step_size": FieldUI("Step size (epochs, step scheduler)"),
    "gamma": FieldUI("Decay factor (step scheduler)"),
    "label_smoothing": FieldUI("Label smoothing amount"),
    "focal_gamma": FieldUI("Focal gamma (focal loss)"),
    "val_fraction": FieldUI("Validation fraction"),
    "n_folds": FieldUI("Folds (0 = use the validation fraction)"),
    "fold": FieldUI("Validation fold"),
    "workers": FieldUI("Loader workers (-1 = auto)"),
    "freeze_epochs": FieldUI(
        "Head-only epochs (-1 = auto)",
        help="Train only the classifier head first (auto: 1 for a pretrained backbone, else 0).",
    ),
    "backbone_lr_mult": FieldUI(
        "Backbone lr multiplier (-1 = auto)",
        step=0.05,
        format="%.3f",
        help="The backbone learns at lr × this (auto: 0.1 for a pretrained backbone, else 1).",
    ),
    "ema_decay": FieldUI(
        "Weight EMA decay (0 = off)",
        step=1e-3,
        format="%.4f",
        help="Evaluate and keep an exponential moving average of the weights, e.g. 0.999.",
    ),
    "amp": FieldUI(
        "Mixed precision", help="auto: bfloat16 on a GPU that has it, else float16 with loss scaling; off on a CPU."
    ),
    "compile": FieldUI(
        "torch.compile",
        help="Compile the model (slow start, faster steps on a GPU); falls back with the reason in the log.",
    ),
    "nproc": FieldUI(
        "Processes (0 = one per GPU)", help="Several processes train through torchrun and DistributedDataParallel."
    ),
    "log_every": FieldUI("Log every N steps"),
    "cache": FieldUI(
        "Decoded-image cache",
        help="memmap: decode each image once into a uint8 cache; later epochs and runs skip decoding.",
    ),
    "channels_last": FieldUI("Channels-last memory format"),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer": OPTIMIZERS, "scheduler": SCHEDULERS, "loss": LOSSES,
    "device": DEVICES, "cache": CACHES, "amp": AMP_MODES,
}  # fmt: skip
FORM_ROWS = (("task", "model", "pretrained"), ("epochs", "max_steps", "batch_size", "device"))
SET_ELSEWHERE = ("data", "train_spec", "eval_spec", "img_size")  # the sidebar's dataset and the transform pair
ROW_WIDTH = 4


def field_label(name: str) -> str:
    return FIELD_UI.get(name, FieldUI()).label or name.replace("_", " ").capitalize()


def more_fields() -> list[str]:
    """TrainConfig's fields the expander shows: all but the first rows' and those set elsewhere, in
    the dataclass's order, so a new field appears in the form without a change here."""
    shown = {name for row in FORM_ROWS for name in row} | set(SET_ELSEWHERE)
    return [f.name for f in dataclasses.fields(TrainConfig) if f.name not in shown]


def choices(name: str) -> tuple | None:
    """The options of a field picked from a list (the backbone list is the whole zoo, listed once)."""
    return backbone_ui.backbone_names() if name == "model" else CHOICES.get(name)


def field_widget(container, name: str, default: Any, options: list | tuple | None = None, format_func=str) -> Any:
    """One widget for one TrainConfig field (key ``train_<field>``), picked by its choices or the type
    of its default; returns the value as the config holds it."""
    ui = FIELD_UI.get(name, FieldUI())
    label, key = field_label(name), f"train_{name}"
    options = options if options is not None else choices(name)
    if options is not None:
        options = list(options)
        index = options.index(default) if default in options else 0
        return container.selectbox(label, options, index=index, format_func=format_func, key=key, help=ui.help)
    if isinstance(default, bool):
        return container.checkbox(label, value=default, key=key, help=ui.help)
    if isinstance(default, int):
        step = int(ui.step or 1)
        return int(container.number_input(label, value=default, step=step, key=key, help=ui.help))
    if isinstance(default, float):
        step, fmt = float(ui.step or 0.01), ui.format or "%0.2f"
        return float(container.number_input(label, value=default, step=step, format=fmt, key=key, help=ui.help))
    if isinstance(default, str):
        return container.text_input(label, value=default, key=key, help=ui.help)
    return default  # lists and other structures are not edited here


def pick_transform_pair(img_hw: tuple[int, int]) -> tuple[list, list, tuple[int, int] | None]:
    """The train/eval specs from a preset (resized to img_hw) or a saved pair (which fixes its own size)."""
    saved = transforms.list_named_pairs()
    options = [f"preset: {name}" for name in transforms.PRESETS] + [f"preset: {BACKBONE_DEFAULT}"]
    options += [f"saved: {name}" for name in saved]
    choice = st.selectbox(
        "Train / eval transforms",
        options,
        key="train_pair",
        help="Presets, the chosen backbone's own preprocessing (its pretrained weights' size, crop and "
        "normalisation), or pairs saved on the Augmentations page. The eval spec is also used for inference.",
    )
    kind, name = choice.split(": ", 1)
    if name == BACKBONE_DEFAULT:
        from core.training import zoo

        train_spec, eval_spec = zoo.backbone_default_pair(str(st.session_state.get("train_model") or "small_cnn"))
        return train_spec.to_list(), eval_spec.to_list(), tuple(transforms.output_size(eval_spec))
    if kind == "preset":
        train_spec, eval_spec = transforms.preset(name, img_hw)
        return list(train_spec), list(eval_spec), None
    train_spec, eval_spec = transforms.load_named_pair(name)
    return list(train_spec), list(eval_spec), tuple(transforms.output_size(eval_spec))


def transforms_row(defaults: TrainConfig) -> dict[str, Any] | None:
    """The transform pair and image size: {"train_spec", "eval_spec", "img_size"}, or None (error shown)."""
    c1, c2, c3 = st.columns([2, 1, 1])
    # Seeded once, then owned by the widgets: "Use 224×224" (backbone_ui) sets them in a callback.
    st.session_state.setdefault(backbone_ui.H_KEY, defaults.img_hw[0])
    st.session_state.setdefault(backbone_ui.W_KEY, defaults.img_hw[1])
    height = c2.number_input("Image height", step=8, key=backbone_ui.H_KEY)
    width = c3.number_input("Image width", step=8, key=backbone_ui.W_KEY)
    with c1:
        try:
            train_spec, eval_spec, fixed_hw = pick_transform_pair((int(height), int(width)))
        except WorkbenchError as err:
            widgets.error(err)
            return None
    if fixed_hw:
        st.caption(f"This saved pair produces {fixed_hw[0]}×{fixed_hw[1]} images; the size fields are ignored.")
    for finding in transforms.check_pair(train_spec, eval_spec):
        widgets.warning(f"Train/eval check: {finding}")
    return {"train_spec": train_spec, "eval_spec": eval_spec, "img_size": list(fixed_hw or (int(height), int(width)))}


def dataset_tasks(data_root: str) -> list[tasks.Task] | None:
    """The tasks the open dataset supports (its own classes, or the competition layout's four)."""
    try:
        index = widgets.load_index(data_root)
    except WorkbenchError as err:
        widgets.error(err)
        return None
    return tasks.dataset_tasks(index.classes, index.has_attributes)


def new_run_form(data_root: str | None) -> None:
    """The form: every TrainConfig field with a widget, the dataset from the sidebar, the transform pair;
    TrainConfig checks the whole config on every change, and Launch starts the job."""
    st.subheader("New run")
    if not data_root:
        st.info("Pick a dataset in the sidebar to train on it.")
        return
    st.caption(f"Dataset: {widgets.plain(data_root)}")
    offered = dataset_tasks(data_root)
    if offered is None:
        return
    defaults = TrainConfig(data=data_root)
    labels = {task.name: task.label for task in offered}
    values: dict[str, Any] = {}

    first = st.columns(ROW_WIDTH)
    name = first[0].text_input("Run name (optional)", key="train_name", placeholder="automatic")
    values["task"] = field_widget(first[1], "task", defaults.task, list(labels), format_func=labels.get)
    for col, field in zip(first[2:], FORM_ROWS[0][1:], strict=True):
        values[field] = field_widget(col, field, getattr(defaults, field))
    pair = transforms_row(defaults)
    if pair is None:
        return
    for col, field in zip(st.columns(ROW_WIDTH), FORM_ROWS[1], strict=True):
        values[field] = field_widget(col, field, getattr(defaults, field))
    backbone_ui.fixed_size_notice(values["model"], values["pretrained"], pair["img_size"])
    chosen_task = next(task for task in offered if task.name == values["task"])
    backbone_ui.facts_panel(values["model"], pair["img_size"], chosen_task.num_classes)
    with st.expander("Optimiser, loss and data"):
        rest = more_fields()
        for start in range(0, len(rest), ROW_WIDTH):
            row = rest[start : start + ROW_WIDTH]
            for col, field in zip(st.columns(ROW_WIDTH), row, strict=False):
                values[field] = field_widget(col, field, getattr(defaults, field))

    config = {**defaults.to_dict(), **values, **pair, "data": data_root}
    problem = config_problem(config)
    if problem is not None:
        widgets.error(problem)
    if st.button("Launch training", type="primary", key="train_launch", disabled=problem is not None):
        launch(config, name)


def config_problem(config: dict[str, Any]) -> ConfigError | None:
    """What the backbone check or TrainConfig finds wrong with the form's values (the message names the
    field), or None. The backbone is checked first: its messages say what a model needs (a fixed size)."""
    try:
        models.check_model_config(config["model"], bool(config["pretrained"]), config["img_size"])
        TrainConfig.from_dict(config)
    except ConfigError as err:
        return err
    return None


def launch(config: dict[str, Any], name: str) -> None:
    try:
        run = jobs.launch_training(config, name=name.strip() or None)
    except WorkbenchError as err:
        widgets.error(err)
        return
    st.session_state[RUN_KEY] = run.id
    st.success(f"Launched {widgets.plain(run.id)}. It runs in the background: you can leave this page.")
