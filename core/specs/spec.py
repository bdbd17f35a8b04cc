"""The validated spec type: ``TransformSpec.parse(raw)`` checks a JSON spec once; everything after trusts it.

A raw spec is a list of steps, each ``{"op": NAME, **params}`` with NAME and params as in
``torchvision.transforms.v2`` (sizes are ``[height, width]``)::

    [{"op": "CenterCrop", "size": [320, 256]}, {"op": "Resize", "size": [128, 96]},
     {"op": "Normalize", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}]

``TransformSpec.parse`` fills defaults, expands scalars and raises SpecError naming the step
(counted from 1), the op, the parameter and the nearest op for a misspelt name. The result is
immutable and hashable (equal by content), so it can be kept in a config, used as a cache key and
passed to every builder without being checked again. Public functions that take a spec accept a
TransformSpec or a raw list and call ``as_spec`` once at their boundary; internal helpers take a
TransformSpec and never re-validate. ``to_list()`` gives the plain JSON form (lists, not tuples):
what config.json, checkpoints and the page's editor hold. Import needs no torch.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

from core.errors import SpecError
from core.specs.ops import MAX_OUTPUT_PIXELS, MAX_OUTPUT_SIDE, OPS, OpInfo, ParamInfo, is_deterministic

# Limits on what a spec may ask for, so that a 1 KB imported spec cannot make a preview (run in the server
# process) or a training batch allocate gigabytes: at most MAX_STEPS steps, and no step may make an image
# larger than MAX_OUTPUT_SIDE a side or MAX_OUTPUT_PIXELS in all (ops.py, beside the registry's bounds).
MAX_STEPS = 64

# ---- parameter checks -------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _range_text(info: ParamInfo) -> str:
    return f"between {info.low:g} and {info.high:g}"


def _check_numbers(values: list, info: ParamInfo, where: str, integer: bool) -> list:
    for value in values:
        if integer and not (isinstance(value, int) and not isinstance(value, bool)):
            raise SpecError(f"{where}: {info.name} must be whole numbers, got {value!r}")
        if not _is_number(value):
            raise SpecError(f"{where}: {info.name} must be numbers, got {value!r}")
        if (info.low is not None and value < info.low) or (info.high is not None and value > info.high):
            raise SpecError(f"{where}: {info.name} must be {_range_text(info)}, got {value!r}")
    return values


def check_param(info: ParamInfo, value: Any, where: str) -> Any:
    """The normalised value of one parameter, or SpecError naming ``where`` and the parameter."""
    if value is None:
        if info.optional:
            return None
        raise SpecError(f"{where}: {info.name} cannot be null")
    kind = info.kind
    if kind == "bool":
        if not isinstance(value, bool):
            raise SpecError(f"{where}: {info.name} must be true or false, got {value!r}")
        return value
    if kind == "choice":
        if value not in info.choices or isinstance(value, bool):
            options = ", ".join(json.dumps(c) for c in info.choices)
            raise SpecError(f"{where}: {info.name} must be one of {options}, got {value!r}")
        return value
    if kind in ("int", "float"):
        if not _is_number(value) or (kind == "int" and not isinstance(value, int)):
            noun = "a whole number" if kind == "int" else "a number"
            raise SpecError(f"{where}: {info.name} must be {noun}, got {value!r}")
        if (info.low is not None and value < info.low) or (info.high is not None and value > info.high):
            raise SpecError(f"{where}: {info.name} must be {_range_text(info)}, got {value!r}")
        return float(value) if kind == "float" else int(value)
    if kind in ("size", "pair"):
        if _is_number(value) and info.scalar:
            value = [-value, value] if info.scalar == "sym" else [value, value]
        shape = "[height, width]" if kind == "size" else f"[{', '.join(info.parts or ('low', 'high'))}]"
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise SpecError(f"{where}: {info.name} must be {shape}, got {value!r}")
        values = _check_numbers(list(value), info, where, integer=kind == "size")
        if kind == "pair":
            if values[0] > values[1] and not info.parts:
                raise SpecError(f"{where}: {info.name} must be [low, high] with low <= high, got {value!r}")
            return [float(v) for v in values]
        return [int(v) for v in values]
    if kind == "triple":
        if not isinstance(value, (list, tuple)) or len(value) != 3:
            raise SpecError(f"{where}: {info.name} must be three numbers (R, G, B), got {value!r}")
        return [float(v) for v in _check_numbers(list(value), info, where, integer=False)]
    raise AssertionError(f"unknown parameter kind {kind}")


def _check_step_rules(op: OpInfo, params: dict, where: str) -> None:
    """Rules that tie parameters of one op together (torchvision would fail later, less clearly)."""
    if op.name == "GaussianBlur" and params["kernel_size"] % 2 == 0:
        raise SpecError(f"{where}: kernel_size must be odd, got {params['kernel_size']}")
    if op.name == "RandAugment" and params["magnitude"] >= params["num_magnitude_bins"]:
        raise SpecError(
            f"{where}: magnitude must be below num_magnitude_bins ({params['num_magnitude_bins']}),"
            f" got {params['magnitude']}"
        )


def step_where(index: int, op_name: str | None = None) -> str:
    return f"step {index + 1} ({op_name})" if op_name else f"step {index + 1}"


def validate_step(step: Any, index: int = 0) -> dict:
    """One raw step normalised (defaults filled, scalars expanded) as a plain dict, or SpecError naming it."""
    if not isinstance(step, Mapping):
        raise SpecError(f'{step_where(index)}: a step must be an object like {{"op": "Resize", ...}}, got {step!r}')
    name = step.get("op")
    if not isinstance(name, str):
        raise SpecError(f'{step_where(index)}: missing "op" (the name of a torchvision.transforms.v2 class)')
    op = OPS.get(name)
    if op is None:
        close = difflib.get_close_matches(name, OPS, n=1)
        hint = f"; did you mean {close[0]}?" if close else f"; known ops: {', '.join(OPS)}"
        raise SpecError(f"{step_where(index)}: unknown op {name!r}{hint}")
    where = step_where(index, name)
    known = {p.name for p in op.params}
    for key in step:
        if key != "op" and key not in known:
            takes = ", ".join(p.name for p in op.params)
            raise SpecError(f"{where}: unknown parameter {key!r}; {name} takes {takes}")
    out: dict[str, Any] = {"op": name}
    for info in op.params:
        if info.name in step:
            out[info.name] = check_param(info, step[info.name], where)
        elif info.required:
            raise SpecError(f"{where}: {info.name} is required ({info.help or info.kind})")
        else:
            out[info.name] = copy.deepcopy(info.default)
    _check_step_rules(op, out, where)
    return out


def _check_order(steps: Sequence[Mapping[str, Any]]) -> None:
    normalized = False
    for i, step in enumerate(steps):
        if step["op"] == "Normalize":
            normalized = True
        elif normalized and OPS[step["op"]].stage == "colour":
            raise SpecError(
                f"{step_where(i, step['op'])}: colour changes must come before Normalize "
                "(they expect pixel values between 0 and 1)"
            )


def _check_sizes(steps: Sequence[Mapping[str, Any]]) -> None:
    """Refuse a step that would make an image over MAX_OUTPUT_SIDE or MAX_OUTPUT_PIXELS.

    What is followed is the spec's own contribution: the sizes its steps set (Resize, crops) plus the
    borders they add (Pad, RandomCrop's padding), starting from a 0x0 input. Until a step sets the size,
    the input's own size comes on top, and that is bounded where images are opened (core.data.images).
    The same walk as core.specs.geometry.simulate, which needs a real input size (and imports this module).
    """
    h = w = 0
    for i, step in enumerate(steps):
        name = step["op"]
        if name == "RandomCrop" and step["padding"]:
            pad = step["padding"]
            _check_size(i, name, h + 2 * pad, w + 2 * pad)  # padded first, then cropped
        if name in ("Resize", "RandomResizedCrop", "CenterCrop", "RandomCrop"):
            h, w = step["size"]
        elif name == "Pad":
            h, w = h + 2 * step["padding"], w + 2 * step["padding"]
        _check_size(i, name, h, w)


def _check_size(index: int, op_name: str, h: int, w: int) -> None:
    where = step_where(index, op_name)
    if max(h, w) > MAX_OUTPUT_SIDE:
        raise SpecError(
            f"{where}: the image would grow to at least {h}×{w}; at most {MAX_OUTPUT_SIDE} pixels a side are "
            "allowed (use smaller sizes or borders)"
        )
    if h * w > MAX_OUTPUT_PIXELS:
        raise SpecError(
            f"{where}: the image would grow to at least {h}×{w} = {h * w:,} pixels; at most "
            f"{MAX_OUTPUT_PIXELS:,} pixels are allowed (use smaller sizes or borders)"
        )


# ---- the validated types ----------------------------------------------------------------------------


def _freeze(value: Any) -> Any:
    return tuple(_freeze(v) for v in value) if isinstance(value, (list, tuple)) else value


def _thaw(value: Any) -> Any:
    return [_thaw(v) for v in value] if isinstance(value, tuple) else value


@dataclass(frozen=True, eq=False)
class Step(Mapping[str, Any]):
    """One validated step, read-only: ``step["size"]`` reads like the JSON (lists come back as tuples).

    Made by ``TransformSpec.parse``. Equal to another Step, or to a plain dict, with the same content.
    """

    op: str
    params: tuple[tuple[str, Any], ...]  # (name, frozen value) in the registry's order, defaults filled

    def __getitem__(self, key: str) -> Any:
        if key == "op":
            return self.op
        for name, value in self.params:
            if name == key:
                return value
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        yield "op"
        yield from (name for name, _ in self.params)

    def __len__(self) -> int:
        return 1 + len(self.params)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Step):
            return (self.op, self.params) == (other.op, other.params)
        if isinstance(other, Mapping):
            return {k: _freeze(v) for k, v in other.items()} == {"op": self.op, **dict(self.params)}
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.op, self.params))

    def __repr__(self) -> str:
        return f"Step({self.to_dict()!r})"

    def to_dict(self) -> dict[str, Any]:
        """A plain JSON-able copy: {"op": name, **params} with lists."""
        return {"op": self.op, **{name: _thaw(value) for name, value in self.params}}


@dataclass(frozen=True)
class TransformSpec(Sequence[Step]):
    """A validated transform spec: an immutable sequence of Steps, equal and hashed by content."""

    steps: tuple[Step, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.steps, tuple) or not all(isinstance(s, Step) for s in self.steps):
            raise TypeError("TransformSpec holds a tuple of Steps; make one with TransformSpec.parse(raw)")

    @classmethod
    def parse(cls, raw: Any, source: str | None = None) -> TransformSpec:
        """Validate a raw spec (a list of steps, or {"steps": [...]}) once; SpecError names the step,
        op and parameter, prefixed with ``source`` (a file name, a field) when given."""
        if isinstance(raw, TransformSpec):
            return raw
        try:
            raw_steps = _step_list(raw)
            if len(raw_steps) > MAX_STEPS:
                raise SpecError(f"the spec has {len(raw_steps)} steps; at most {MAX_STEPS} are allowed")
            steps = tuple(_as_step(validate_step(step, i)) for i, step in enumerate(raw_steps))
            _check_order(steps)
            _check_sizes(steps)
        except SpecError as err:
            if source is None:
                raise
            raise SpecError(f"{source}: {err}") from err
        return cls(steps)

    def to_list(self) -> list[dict[str, Any]]:
        """The plain JSON form: a list of {"op": name, **params} dicts (fresh copies, safe to edit)."""
        return [step.to_dict() for step in self.steps]

    @overload
    def __getitem__(self, index: int) -> Step: ...

    @overload
    def __getitem__(self, index: slice) -> TransformSpec: ...

    def __getitem__(self, index: int | slice) -> Step | TransformSpec:
        # a contiguous run of a valid spec is valid: the one rule across steps is about their order
        return TransformSpec(self.steps[index]) if isinstance(index, slice) else self.steps[index]

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def __repr__(self) -> str:
        return f"TransformSpec({self.to_list()!r})"

    @property
    def random(self) -> bool:
        """True when some step does not do the same thing to every image."""
        return not all(is_deterministic(step) for step in self.steps)

    def ops(self) -> list[str]:
        return [step.op for step in self.steps]


def _step_list(raw: Any) -> Sequence[Any]:
    if isinstance(raw, Mapping) and set(raw) == {"steps"}:
        raw = raw["steps"]
    if not isinstance(raw, (list, tuple)):
        raise SpecError(
            'a transform spec must be a list of steps like [{"op": "Resize", "size": [128, 96]}], '
            f"got {type(raw).__name__}"
        )
    return raw


def _as_step(normalised: dict[str, Any]) -> Step:
    return Step(normalised["op"], tuple((k, _freeze(v)) for k, v in normalised.items() if k != "op"))


def as_spec(spec: Any, source: str | None = None) -> TransformSpec:
    """The one boundary helper: a TransformSpec as it is, anything else parsed (and so validated) once."""
    return spec if isinstance(spec, TransformSpec) else TransformSpec.parse(spec, source)


def validate_spec(spec: Any) -> list[dict]:
    """A normalised plain copy of ``spec`` (for editors and JSON); SpecError names the step, op and parameter."""
    return as_spec(spec).to_list()
