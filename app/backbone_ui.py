"""The backbone chooser on the Training page: every backbone of the zoo in one searchable picker, and a
"Backbone facts" panel saying what the chosen one costs before an hour is spent on it.

The facts come from core.training.zoo: the listing row (source, default input size, fixed size,
ImageNet top-1, weights cached) is cheap; parameters and GFLOPs build the model (on the meta device
when it can) and run only while the panel is open, cached per name and size; speed on this machine is
measured only when asked (seconds to minutes) and cached by core on disk. Widget keys start with
``train_``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import streamlit as st

from app import widgets
from core.errors import WorkbenchError
from core.training import models, zoo

FACTS_KEY = "train_facts"  # the facts expander's open state
SPEEDS_KEY = "train_facts_speeds"  # {(name, h, w): measured speed} of this session's measurements
H_KEY, W_KEY = "train_h", "train_w"  # the form's image size fields


@st.cache_resource(show_spinner="Listing the backbones…")
def backbone_names() -> tuple[str, ...]:
    """Every backbone name: today's short list first (the usual picks), then the rest of the zoo."""
    try:
        listed = [row["name"] for row in zoo.list_backbones()]
    except ImportError:  # timm missing: torchvision's and the built-in ones still work
        listed = [row["name"] for row in zoo.list_backbones(sources=("builtin", "torchvision"))]
    return tuple(dict.fromkeys([*models.MODEL_NAMES, *listed]))


@st.cache_data(ttl=60, max_entries=64, show_spinner=False)
def backbone_row(name: str) -> dict[str, Any]:
    """The cheap listing facts (ttl: "weights cached" changes once a job downloads them)."""
    return zoo.backbone_row(name)


@st.cache_data(max_entries=64, show_spinner="Counting parameters and FLOPs…")
def model_facts(name: str, height: int, width: int, num_classes: int) -> dict[str, Any]:
    return zoo.model_facts(name, (height, width), num_classes=num_classes)


def fixed_size(name: str, pretrained: bool) -> tuple[int, int] | None:
    """The one input size ``name`` takes, or None (also None for a name core does not know)."""
    try:
        return models.fixed_input_size(name, pretrained)
    except WorkbenchError:
        return None


def _use_size(height: int, width: int) -> None:
    st.session_state[H_KEY], st.session_state[W_KEY] = height, width


def fixed_size_notice(name: str, pretrained: bool, img_size: Sequence[int]) -> None:
    """Say, before launch, that ``name`` takes one input size, and offer to set the size fields to it."""
    fixed = fixed_size(name, pretrained)
    if not fixed:
        return
    h, w = fixed
    if tuple(int(v) for v in img_size) == fixed:
        st.caption(f"{name} takes {h}×{w} images only; the image size is set to it.")
        return
    widgets.warning(f"{name} takes {h}×{w} images only: set Image height and width to {h} and {w}.")
    st.button(f"Use {h}×{w}", key="train_use_fixed_size", on_click=_use_size, args=(h, w))


def facts_panel(name: str, img_size: Sequence[int], num_classes: int) -> None:
    """The "Backbone facts" expander: listing facts, then (while open) parameters and GFLOPs at the
    chosen size, and speed on this machine on demand."""
    panel = st.expander("Backbone facts", key=FACTS_KEY, on_change="rerun")
    with panel:
        if not panel.open:
            return  # closed: nothing is built
        try:
            row = backbone_row(name)
        except WorkbenchError as err:
            widgets.error(err)
            return
        st.markdown("\n".join(f"- {label}: {widgets.plain(value)}" for label, value in listing_facts(row)))
        h, w = (int(v) for v in row["fixed_size"] or img_size)
        try:
            facts = model_facts(name, h, w, num_classes)
        except (WorkbenchError, RuntimeError, ValueError) as err:
            widgets.error(f"Could not build {name} to count it: {err}")
        else:
            st.markdown(widgets.plain(cost_line(facts)))
            if facts.get("note"):
                st.caption(widgets.plain(facts["note"]))
        speed_section(name, (h, w), num_classes)


def listing_facts(row: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) lines of the cheap facts."""
    size = row.get("input_size")
    top1 = row.get("imagenet_top1")
    if not row.get("pretrained"):
        weights = "none published (random initialisation only)"
    else:
        weights = "already cached on this machine" if row.get("cached") else "downloaded on first use"
    return [
        ("Source", str(row["source"])),
        ("Default input size", f"{size[0]}×{size[1]}" if size else "any"),
        ("Fixed input size", f"{row['fixed_size'][0]}×{row['fixed_size'][1]}" if row.get("fixed_size") else "no"),
        ("ImageNet top-1", f"{top1:.1f}%" if isinstance(top1, (int, float)) else "not published"),
        ("Pretrained weights", weights),
    ]


def cost_line(facts: dict[str, Any]) -> str:
    h, w = facts["img_size"]
    return (
        f"Parameters: {facts['params'] / 1e6:.2f} M · {facts['gflops']:.3f} GFLOPs per image at {h}×{w} "
        f"({facts['num_classes']} classes)"
    )


def speed_section(name: str, size: tuple[int, int], num_classes: int) -> None:
    speeds = st.session_state.setdefault(SPEEDS_KEY, {})
    key = (name, *size)
    if st.button(
        "Measure on this machine",
        key="train_facts_measure",
        help="Times a few training and inference steps with random images (seconds to minutes).",
    ):
        with st.spinner(f"Measuring {name} at {size[0]}×{size[1]}…"):
            try:
                speeds[key] = zoo.measure_speed(name, size, num_classes=num_classes)
            except (WorkbenchError, RuntimeError, ValueError) as err:
                widgets.error(f"Could not measure {name}: {err}")
    if key in speeds:
        st.markdown(widgets.plain(speed_line(speeds[key])))


def speed_line(speed: dict[str, Any]) -> str:
    h, w = speed["img_size"]
    return (
        f"On this machine ({speed['device']}, batch {speed['batch_size']}, {h}×{w}): "
        f"training {speed['train_images_per_s']} images/s · inference {speed['infer_images_per_s']} images/s"
    )
