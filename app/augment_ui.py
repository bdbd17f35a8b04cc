"""Pieces of the Augmentations page: image picker, step editor built from the op registry, previews.

All image work happens in ``core.specs.transforms`` (preview_samples, model_input_view); this module only
keeps the page's state in ``st.session_state`` and draws widgets. Pipelines are stored as lists of
``{"uid": int, "step": dict}``: the uid keys the step's widgets, so reordering keeps each widget's
state and loading a new spec (new uids) starts fresh widgets. Session-state and widget keys start
with ``augment_``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from app import widgets
from app.widgets import plain
from core import cachebudget, settings
from core.errors import WorkbenchError
from core.specs import transforms

PIPES = ("A", "B")
WHICH = ("train", "eval")
WHICH_LABEL = {"train": "training", "eval": "evaluation"}
DEFAULT_PRESETS = {"A": "baseline", "B": "light"}
PATTERN = "pattern:"  # source key of the built-in test pattern
MAX_SAMPLES = 8
# Uploaded images are kept (content-addressed) under <cache_dir>/uploads so the image opener can read
# them; past this many bytes the least recently used go (never the one just uploaded).
UPLOADS_BUDGET_BYTES = 256 * 1024 * 1024
# In-memory caches of this page, bounded by bytes (see ByteBudgetCache): the decoded source images, and
# the previews (samples and model-input views) computed from them.
SOURCE_CACHE_BYTES = 128 * 1024 * 1024
PREVIEW_CACHE_BYTES = 64 * 1024 * 1024


# ---------------------------------------------------------------------------------------------- state


def _state_key(pipe: str) -> str:
    return f"augment_pipe_{pipe}"


def _next_uid() -> int:
    st.session_state["augment_uid"] = st.session_state.get("augment_uid", 0) + 1
    return st.session_state["augment_uid"]


def load_into(pipe: str, train: list[dict], eval_: list[dict] | None, origin: str) -> None:
    """Replace pipeline ``pipe`` (eval kept when ``eval_`` is None); new uids give fresh widgets."""
    state = st.session_state.get(_state_key(pipe), {})
    new = {
        "train": [{"uid": _next_uid(), "step": s} for s in train],
        "eval": [{"uid": _next_uid(), "step": s} for s in eval_] if eval_ is not None else state.get("eval", []),
        "origin": origin,
    }
    st.session_state[_state_key(pipe)] = new


def ensure_state() -> None:
    for pipe in PIPES:
        if _state_key(pipe) not in st.session_state:
            train, eval_ = transforms.preset(DEFAULT_PRESETS[pipe])
            load_into(pipe, train, eval_, f"preset {DEFAULT_PRESETS[pipe]}")
            st.session_state[f"augment_{pipe}_pick"] = f"preset: {DEFAULT_PRESETS[pipe]}"


def entries(pipe: str, which: str) -> list[dict]:
    return st.session_state[_state_key(pipe)][which]


def current_spec(pipe: str, which: str) -> list[dict]:
    return [dict(e["step"]) for e in entries(pipe, which)]


# ---------------------------------------------------------------------------------------------- image picker


def _save_upload(name: str, data: bytes) -> str:
    """Keep an uploaded image under the cache dir (content-addressed) so core.data.images can open it."""
    from core.data import images
    from core.fsutil import atomic_write_bytes

    suffix = Path(name).suffix.lower()
    if suffix not in images.IMAGE_EXTENSIONS:
        suffix = ".img"
    digest = hashlib.sha256(data).hexdigest()[:24]
    folder = settings.load().cache_dir / "uploads"
    path = folder / f"{digest}{suffix}"
    if path.exists():
        cachebudget.touch_used(path)  # uploaded again: the most recently used now
    else:
        atomic_write_bytes(path, data)
    cachebudget.enforce_budget(folder, UPLOADS_BUDGET_BYTES, protected=[path])
    return str(path)


class ByteBudgetCache:
    """A least-recently-used cache of numpy arrays (or objects holding them) bounded by their bytes.

    Streamlit's ``cache_data(max_entries=N)`` bounds the number of entries, but one entry here may be a
    few KB (eight 128×96 samples) or tens of MB (a 12-Mpx stage of a model-input view), so counting
    entries bounds nothing. This one keeps at most ``max_bytes`` of array data (a value larger than
    that is returned but never kept). It lives in the server process and is shared by every session,
    like cache_data; values are made read-only because every caller gets the same objects.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # sessions run in threads of one process

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The cached value of ``key``, else ``compute()`` (kept when it fits); errors are not cached."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key][0]
        value = compute()  # outside the lock: a slow preview does not hold up other sessions
        size = _freeze_arrays(value)
        with self._lock:
            if size <= self.max_bytes and key not in self._items:
                self._items[key] = (value, size)
                self._bytes += size
                while self._bytes > self.max_bytes:
                    _key, (_value, dropped) = self._items.popitem(last=False)
                    self._bytes -= dropped
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items


def _freeze_arrays(value: Any) -> int:
    """Bytes of the numpy arrays in ``value`` (an array, a list of them, or a ModelInputView), each made
    read-only on the way."""
    if isinstance(value, np.ndarray):
        value.flags.writeable = False
        return value.nbytes
    if isinstance(value, (list, tuple)):
        return sum(_freeze_arrays(item) for item in value)
    if hasattr(value, "stages"):  # a ModelInputView: its pictures
        return sum(_freeze_arrays(stage.image) for stage in value.stages)
    return 0


_SOURCES = ByteBudgetCache(SOURCE_CACHE_BYTES)
_PREVIEWS = ByteBudgetCache(PREVIEW_CACHE_BYTES)


def source_array(source: str) -> np.ndarray:
    """The picked image as uint8 HxWx3, read-only (decoded once per source while it fits the cache).
    Raises WorkbenchError."""
    return _SOURCES.get(source, lambda: _decode_source(source))


def _decode_source(source: str) -> np.ndarray:
    if source.startswith(PATTERN):
        return np.array(transforms.test_pattern())
    from core.data import images

    return np.array(images.open_rgb(source.split("\x00")[0]))


def _file_source(path: str) -> str:
    """Source key of a file: its path plus modification time, so an edited file is decoded again."""
    try:
        stamp = os.stat(path).st_mtime_ns
    except OSError:
        stamp = 0  # opening it will report the problem
    return f"{path}\x00{stamp}"


def _random_image(frame) -> None:
    row = frame.iloc[random.randrange(len(frame))]
    st.session_state["augment_class"] = str(row["class_name"])
    labels = frame.index[frame["class_name"] == row["class_name"]]
    st.session_state["augment_index"] = int(list(labels).index(row.name))


def _dataset_picker() -> tuple[str, str] | None:
    root = widgets.current_dataset_root()
    if not root:
        st.info("No dataset is open: pick one in the sidebar, upload an image, or use the test pattern.")
        return None
    try:
        index = widgets.load_index(root)
    except WorkbenchError as err:
        widgets.error(err)
        return None
    frame = index.frame
    if frame.empty:
        st.info("This dataset has no usable images.")
        return None
    present = [c for c in index.classes if (frame["class_name"] == c).any()]
    if st.session_state.get("augment_class") not in present:
        st.session_state["augment_class"] = present[0]
    cols = st.columns([3, 2, 2], vertical_alignment="bottom")
    with cols[0]:
        class_name = st.selectbox("Class", present, key="augment_class")
    of_class = frame[frame["class_name"] == class_name]
    with cols[1]:
        if st.session_state.get("augment_index", 0) >= len(of_class):
            st.session_state["augment_index"] = 0
        position = st.number_input(
            f"Image (0–{len(of_class) - 1})", min_value=0, max_value=len(of_class) - 1, step=1, key="augment_index"
        )
    with cols[2]:
        st.button("Random image", key="augment_random", on_click=_random_image, args=(frame,))
    row = of_class.iloc[int(position)]
    return _file_source(str(row["path"])), f"{class_name} — {row['rel']}"


def image_picker() -> tuple[str, str] | None:
    """Where the picture comes from; returns (source key, caption) or None when there is none yet."""
    options = ["Dataset", "Upload", "Test pattern"]
    default = 0 if widgets.current_dataset_root() else 2
    source = st.radio("Image", options, index=default, horizontal=True, key="augment_source")
    if source == "Dataset":
        return _dataset_picker()
    if source == "Upload":
        from core.data import images

        types = sorted(ext.lstrip(".") for ext in images.IMAGE_EXTENSIONS)
        upload = st.file_uploader("An image file", type=types, key="augment_upload_image", max_upload_size=50)
        if upload is None:
            st.info("Upload a photo to preview the pipelines on it.")
            return None
        return _save_upload(upload.name, upload.getvalue()), f"uploaded: {upload.name}"
    return PATTERN + "default", "test pattern (grid, colour bars, a marker in the top-left corner)"


def sample_controls() -> tuple[int, int]:
    """(samples per pipeline, seed). "New samples" moves the seed on, so any view can be recalled."""
    cols = st.columns([3, 2, 2], vertical_alignment="bottom")
    with cols[0]:
        n = st.slider("Samples per pipeline", 1, MAX_SAMPLES, 6, key="augment_n")
    with cols[1]:
        # no value=: the "New samples" callback sets this key, and a default beside it would warn
        seed = st.number_input("Seed", min_value=0, max_value=2**31 - 1, step=1, key="augment_seed")
    with cols[2]:
        st.button("New samples", key="augment_new", on_click=_bump_seed)
    return int(n), int(seed)


def _bump_seed() -> None:
    st.session_state["augment_seed"] = int(st.session_state.get("augment_seed", 0)) + 1


# ---------------------------------------------------------------------------------------------- step editor


def _param_widget(info: transforms.ParamInfo, value: Any, key: str) -> Any:
    """One widget per registry parameter kind; returns the new value."""
    label = info.name
    kind = info.kind
    if info.optional:
        on = st.checkbox(f"{label} (on)", value=value is not None, key=f"{key}_on", help=info.help or None)
        if not on:
            return None
        if value is None:  # just switched on: start from the registry's suggestion
            value = info.suggest if info.suggest is not None else [info.low, info.high] if kind == "pair" else info.low
    if kind == "bool":
        return st.checkbox(label, value=bool(value), key=key, help=info.help or None)
    if kind == "choice":
        options = list(info.choices)
        return st.selectbox(label, options, index=options.index(value), key=key, help=info.help or None)
    if kind == "int":
        return int(
            st.number_input(label, int(info.low), int(info.high), int(value), step=1, key=key, help=info.help or None)
        )
    if kind == "float":
        if info.low == 0.0 and info.high == 1.0:
            return float(st.slider(label, 0.0, 1.0, float(value), step=0.05, key=key, help=info.help or None))
        return _float_input(label, info, value, key)
    if kind in ("size", "pair", "triple"):
        names = {"size": ("height", "width"), "pair": info.parts or ("low", "high"), "triple": ("R", "G", "B")}[kind]
        cols = st.columns(len(names))
        out = []
        for col, part, item in zip(cols, names, value, strict=True):
            with col:
                sub = f"{label} {part}"
                if kind == "size":
                    out.append(
                        int(st.number_input(sub, int(info.low), int(info.high), int(item), step=1, key=f"{key}_{part}"))
                    )
                else:
                    out.append(_float_input(sub, info, item, f"{key}_{part}"))
        return out
    raise AssertionError(kind)


def _float_input(label: str, info: transforms.ParamInfo, value: float, key: str) -> float:
    span = float(info.high) - float(info.low)
    step = 0.01 if span <= 2 else 0.1 if span <= 50 else 1.0
    return float(
        st.number_input(
            label,
            float(info.low),
            float(info.high),
            float(value),
            step=step,
            format="%.4g",
            key=key,
            help=info.help or None,
        )
    )


def _move(pipe: str, which: str, position: int, delta: int) -> None:
    items = entries(pipe, which)
    target = position + delta
    if 0 <= target < len(items):
        items[position], items[target] = items[target], items[position]


def _remove(pipe: str, which: str, position: int) -> None:
    del entries(pipe, which)[position]


def _add(pipe: str, which: str) -> None:
    name = st.session_state[f"augment_{pipe}_{which}_addop"]
    op = transforms.OPS[name]
    step = {"op": name, **{p.name: p.initial() for p in op.params}}
    entries(pipe, which).append({"uid": _next_uid(), "step": step})


def step_editor(pipe: str, which: str) -> None:
    """Steps of one spec: a row of move/remove buttons and registry-built widgets per step."""
    items = entries(pipe, which)
    if not items:
        st.caption("No steps: the image goes to the model as it is.")
    for position, item in enumerate(items):
        step = item["step"]
        op = transforms.OPS[step["op"]]
        base = f"augment_{pipe}_{which}_{item['uid']}"
        with st.container(border=True):
            head = st.columns([6, 1, 1, 1], vertical_alignment="center")
            head[0].markdown(f"**{position + 1}. {op.name}**")
            head[0].caption(f"{op.help} · {op.stage}{' · random' if op.random else ''}")
            head[1].button(
                "↑",
                key=f"{base}_up",
                on_click=_move,
                args=(pipe, which, position, -1),
                disabled=position == 0,
                help="move up",
            )
            head[2].button(
                "↓",
                key=f"{base}_down",
                on_click=_move,
                args=(pipe, which, position, 1),
                disabled=position == len(items) - 1,
                help="move down",
            )
            head[3].button("✕", key=f"{base}_remove", on_click=_remove, args=(pipe, which, position), help="remove")
            for info in op.params:
                if info.kind == "choice" and len(info.choices) == 1:
                    continue  # nothing to choose
                step[info.name] = _param_widget(info, step[info.name], f"{base}_{info.name}")
    cols = st.columns([3, 1], vertical_alignment="bottom")
    cols[0].selectbox("Add a step", list(transforms.OPS), key=f"augment_{pipe}_{which}_addop")
    cols[1].button("Add", key=f"augment_{pipe}_{which}_add", on_click=_add, args=(pipe, which))


# ---------------------------------------------------------------------------------------------- loading / saving


def _backbone() -> str:
    """The backbone chosen on the Training page in this session (its preprocessing is offered here)."""
    return str(st.session_state.get("train_model") or "resnet18")


def _pair_options() -> list[str]:
    return (
        [f"preset: {name}" for name in transforms.PRESETS]
        + [f"backbone default: {_backbone()}"]
        + [f"saved: {name}" for name in transforms.list_named_pairs()]
    )


def _load_pair(kind: str, name: str) -> tuple[list[dict], list[dict]]:
    if kind == "preset":
        return transforms.preset(name)
    if kind == "backbone default":
        from core.training import zoo

        train, eval_ = zoo.backbone_default_pair(name)
        return train.to_list(), eval_.to_list()
    return transforms.load_named_pair(name)


def _load_choice(pipe: str) -> None:
    choice = st.session_state[f"augment_{pipe}_pick"]
    kind, name = choice.split(": ", 1)
    try:
        train, eval_ = _load_pair(kind, name)
    except WorkbenchError as err:
        st.session_state[f"augment_{pipe}_error"] = str(err)
        return
    load_into(pipe, train, eval_, f"{kind} {name}")


def _import_upload(pipe: str, which: str) -> None:
    upload = st.file_uploader(
        "Import a JSON spec (a list of steps, or a saved pair)",
        type=["json"],
        key=f"augment_import_{pipe}",
        max_upload_size=1,
    )
    if upload is None or st.session_state.get(f"augment_{pipe}_imported") == upload.file_id:
        return
    st.session_state[f"augment_{pipe}_imported"] = upload.file_id
    try:
        train, eval_ = transforms.parse_spec_document(upload.getvalue(), upload.name)
    except WorkbenchError as err:
        widgets.error(err)
        return
    if eval_ is not None:
        load_into(pipe, train, eval_, f"imported pair {upload.name}")
    else:  # a single spec replaces the one being edited
        state = st.session_state[_state_key(pipe)]
        state[which] = [{"uid": _next_uid(), "step": s} for s in train]
        state["origin"] = f"{WHICH_LABEL[which]} spec imported from {upload.name}"
    st.rerun()


def _save_pair_clicked(pipe: str) -> None:
    """Save in the click callback, before the rerun draws anything, so every picker lists the new name."""
    name = str(st.session_state.get(f"augment_{pipe}_savename", "")).strip()
    try:
        train = transforms.validate_spec(current_spec(pipe, "train"))
        eval_ = transforms.validate_spec(current_spec(pipe, "eval"))
        overwrite = bool(st.session_state.get(f"augment_{pipe}_overwrite", False))
        path = transforms.save_named_pair(name, train, eval_, overwrite=overwrite)
    except WorkbenchError as err:
        st.session_state[f"augment_{pipe}_saved"] = ("error", str(err))
    else:
        st.session_state[f"augment_{pipe}_saved"] = (
            "success", f"Saved as {path.stem}: the Training page lists it as “saved: {path.stem}”."
        )  # fmt: skip


def _save_pair(pipe: str) -> None:
    cols = st.columns([3, 1, 1], vertical_alignment="bottom")
    cols[0].text_input("Save this pair as", key=f"augment_{pipe}_savename", placeholder="e.g. crop-flip-v1")
    cols[1].checkbox("Overwrite", key=f"augment_{pipe}_overwrite", help="Replace a saved pair of the same name")
    cols[2].button("Save", key=f"augment_{pipe}_save", on_click=_save_pair_clicked, args=(pipe,))
    if outcome := st.session_state.pop(f"augment_{pipe}_saved", None):
        if outcome[0] == "error":
            widgets.error(outcome[1])
        else:
            st.success(plain(outcome[1]))


def pipeline_panel(pipe: str) -> tuple[list[dict], list[dict]] | None:
    """Pipeline ``pipe``: origin, loading, the pair check, the step editor, export. Returns the valid
    (train, eval) specs, or None (with an error shown) when the spec is invalid."""
    st.subheader(f"Pipeline {pipe}")
    state = st.session_state[_state_key(pipe)]
    st.caption(plain(f"Started from {state['origin']}."))
    cols = st.columns([3, 1], vertical_alignment="bottom")
    cols[0].selectbox("Start from", _pair_options(), key=f"augment_{pipe}_pick")
    cols[1].button("Load", key=f"augment_{pipe}_load", on_click=_load_choice, args=(pipe,))
    if error := st.session_state.pop(f"augment_{pipe}_error", None):
        widgets.error(error)
    check_area = st.container()  # the pair check goes on top, filled once the edited specs are known
    which = st.radio(
        "Editing", WHICH, format_func=lambda w: f"{WHICH_LABEL[w]} spec", horizontal=True, key=f"augment_{pipe}_which"
    )
    _import_upload(pipe, which)
    step_editor(pipe, which)
    try:
        train = transforms.validate_spec(current_spec(pipe, "train"))
        eval_ = transforms.validate_spec(current_spec(pipe, "eval"))
    except WorkbenchError as err:
        with check_area:
            widgets.error(f"Pipeline {pipe}: {err}")
        return None
    with check_area:
        _pair_check(pipe, train, eval_)
    with st.expander("JSON, download and save"):
        for spec, w in ((train, "train"), (eval_, "eval")):
            st.caption(f"{WHICH_LABEL[w]} spec")
            st.code(transforms.spec_to_json(spec), language="json")
        dl = st.columns(3)
        dl[0].download_button(
            "Training spec",
            transforms.spec_to_json(train),
            f"{pipe}-train.json",
            "application/json",
            key=f"augment_{pipe}_dl_train",
        )
        dl[1].download_button(
            "Evaluation spec",
            transforms.spec_to_json(eval_),
            f"{pipe}-eval.json",
            "application/json",
            key=f"augment_{pipe}_dl_eval",
        )
        dl[2].download_button(
            "Pair",
            transforms.pair_to_json(train, eval_),
            f"{pipe}-pair.json",
            "application/json",
            key=f"augment_{pipe}_dl_pair",
        )
        _save_pair(pipe)
    return train, eval_


def _pair_check(pipe: str, train: list[dict], eval_: list[dict]) -> None:
    size_t, size_e = transforms.output_size(train), transforms.output_size(eval_)
    st.caption(
        f"Model input from a 512×384 photo: training {size_t[0]}×{size_t[1]}, evaluation {size_e[0]}×{size_e[1]}."
    )
    findings = transforms.check_pair(train, eval_)
    for finding in findings:
        widgets.warning(f"Pipeline {pipe}: {finding}")
    if not findings:
        st.success(f"Pipeline {pipe}: evaluation images match what training shows the model.")


# ---------------------------------------------------------------------------------------------- previews


def _samples(source: str, spec_json: str, n: int, seed: int) -> list[np.ndarray]:
    return _PREVIEWS.get(
        ("samples", source, spec_json, n, seed),
        lambda: transforms.preview_samples(source_array(source), json.loads(spec_json), n, seed),
    )


def _view(source: str, spec_json: str, seed: int) -> transforms.ModelInputView:
    return _PREVIEWS.get(
        ("view", source, spec_json, seed),
        lambda: transforms.model_input_view(source_array(source), json.loads(spec_json), seed),
    )


def samples_grid(source: str, caption: str, specs: dict[str, tuple | None], n: int, seed: int) -> None:
    """The original beside ``n`` training samples of each pipeline, in aligned columns."""
    st.subheader("Samples")
    st.caption(plain(f"{caption} · seed {seed}: the same seed brings the same samples back."))
    original = source_array(source)
    for pipe, pair in specs.items():
        cols = st.columns(n + 1)
        cols[0].image(original, caption="original" if pipe == PIPES[0] else " ", width="stretch")
        if pair is None:
            cols[1].info(f"Fix pipeline {pipe} to see its samples.")
            continue
        try:
            images = _samples(source, json.dumps(pair[0]), n, seed)
        except WorkbenchError as err:
            with cols[1]:
                widgets.error(f"Pipeline {pipe}: {err}")
            continue
        for i, (col, image) in enumerate(zip(cols[1:], images, strict=True)):
            col.image(image, caption=f"{pipe} · {i + 1}", width="stretch")


def model_input_section(source: str, specs: dict[str, tuple | None], seed: int) -> None:
    """Each pipeline's stages at their real resolution: what the model receives (de-normalised)."""
    st.subheader("What the model receives")
    st.caption("Each stage at its real size; normalised tensors are shown de-normalised.")
    cols = st.columns(len(specs))
    for col, (pipe, pair) in zip(cols, specs.items(), strict=True):
        with col:
            st.markdown(f"**Pipeline {pipe}**")
            if pair is None:
                continue
            try:
                train_view = _view(source, json.dumps(pair[0]), seed)
                eval_view = _view(source, json.dumps(pair[1]), seed)
            except WorkbenchError as err:
                widgets.error(f"Pipeline {pipe}: {err}")
                continue
            pictures = train_view.stages[1:] or train_view.stages
            inner = st.columns(len(pictures) + 1)
            for slot, picture in zip(inner, pictures, strict=False):
                slot.image(picture.image, caption=picture.caption, width="content")
            inner[-1].image(
                eval_view.stages[-1].image, caption=f"evaluation: {eval_view.stages[-1].caption}", width="content"
            )
            mean = ", ".join(f"{v:.2f}" for v in train_view.channel_mean)
            st.caption(
                f"Tensor {tuple(train_view.shape)} {train_view.dtype}, values {train_view.minimum:.2f} to "
                f"{train_view.maximum:.2f}, channel means {mean}."
            )
