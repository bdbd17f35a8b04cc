"""The train/eval pair check: every way evaluation images would differ from what training showed the model.

``check_pair(train, eval)`` simulates both specs' geometry on a photo-sized input (no pixels, no
torch) and compares the view of the picture, the size, normalisation, always-applied changes and
randomness at evaluation, in plain words. Random augmentations that training applies only
sometimes are the point of augmenting and are not reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from core.specs.geometry import Geometry, hw_text, simulate
from core.specs.ops import DEFAULT_INPUT_HW, OPS, always_applied, is_deterministic, is_noop
from core.specs.spec import Step, TransformSpec, as_spec

_BOX_TOLERANCE = 0.01  # share of the input side below which two views count as the same


def _describe_box(geo: Geometry) -> str:
    top, left, bh, bw = geo.box
    h, w = geo.input_hw
    if not _boxes_differ(geo.box, [0.0, 0.0, float(h), float(w)], geo.input_hw):
        return "the whole picture"
    centred = abs(top + bh / 2 - h / 2) <= max(1.5, _BOX_TOLERANCE * h) and abs(left + bw / 2 - w / 2) <= max(
        1.5, _BOX_TOLERANCE * w
    )
    if centred and bh <= h and bw <= w:
        return f"the central {hw_text((bh, bw))} region"
    if centred:
        return f"a {hw_text((bh, bw))} region centred on the picture (with a border)"
    return f"rows {top:.0f}–{top + bh:.0f} and columns {left:.0f}–{left + bw:.0f}"


def _boxes_differ(a: Sequence[float], b: Sequence[float], input_hw: tuple[int, int]) -> bool:
    h, w = input_hw
    tol_y, tol_x = max(1.5, _BOX_TOLERANCE * h), max(1.5, _BOX_TOLERANCE * w)
    a_edges = (a[0], a[0] + a[2], a[1], a[1] + a[3])
    b_edges = (b[0], b[0] + b[2], b[1], b[1] + b[3])
    tols = (tol_y, tol_y, tol_x, tol_x)
    return any(abs(x - y) > t for x, y, t in zip(a_edges, b_edges, tols, strict=True))


def _random_crop_findings(train: Geometry, eval_: Geometry) -> list[str]:
    """Train takes RandomResizedCrops: eval's view should be one of the crops it could have taken."""
    rc = train.random_crop
    assert rc is not None
    top, left, bh, bw = rc["box"]
    et, el, eh, ew = eval_.box
    area = (eh * ew) / (bh * bw)
    lo, hi = rc["scale"]
    findings = []
    outside = et < top - 1.5 or el < left - 1.5 or et + eh > top + bh + 1.5 or el + ew > left + bw + 1.5
    if outside or not (lo * 0.98 <= area <= hi * 1.02):
        findings.append(
            f"training shows the model random crops covering {lo:.0%}–{hi:.0%} of the picture "
            f"(RandomResizedCrop); evaluation shows {_describe_box(eval_)}, which no training crop looks like"
        )
    # RandomResizedCrop's ratio is width/height in the pixels of the image it crops.
    ratio = (ew / (bw / rc["hw"][1])) / (eh / (bh / rc["hw"][0]))
    rlo, rhi = rc["ratio"]
    if not (rlo * 0.98 <= ratio <= rhi * 1.02):
        findings.append(
            f"training crops regions with width/height between {rlo:.2f} and {rhi:.2f} (RandomResizedCrop); "
            f"evaluation's view has width/height {ratio:.2f}, so shapes are stretched differently"
        )
    return findings


def _geometry_findings(train: Geometry, eval_: Geometry) -> list[str]:
    findings = []
    if train.hw != eval_.hw:
        findings.append(f"training feeds the model {hw_text(train.hw)} images; evaluation feeds {hw_text(eval_.hw)}")
    if bool(train.resizes) != bool(eval_.resizes):
        who, other = ("training", "evaluation") if train.resizes else ("evaluation", "training")
        size = (train.resizes or eval_.resizes)[-1]
        findings.append(f"{who} resizes to {hw_text(size)}; {other} does not resize")
    if train.random_crop is not None:
        return findings + _random_crop_findings(train, eval_)
    if not _boxes_differ(train.box, eval_.box, train.input_hw):
        return findings
    if train.cropped and not eval_.cropped:
        findings.append(f"training {'; '.join(train.crops)}; evaluation does not crop")
    elif eval_.cropped and not train.cropped:
        findings.append(f"evaluation {'; '.join(eval_.crops)}; training does not crop")
    else:
        findings.append(
            f"training sees {_describe_box(train)} of the {hw_text(train.input_hw)} input; "
            f"evaluation sees {_describe_box(eval_)}"
        )
    return findings


def _normalize_text(steps: list[Step]) -> str:
    return " then ".join(f"mean {list(s['mean'])} and std {list(s['std'])}" for s in steps)


def _normalize_findings(train: TransformSpec, eval_: TransformSpec) -> list[str]:
    tn = [s for s in train if s["op"] == "Normalize"]
    en = [s for s in eval_ if s["op"] == "Normalize"]
    same = len(tn) == len(en) and all(
        np.allclose(a["mean"], b["mean"], atol=1e-6) and np.allclose(a["std"], b["std"], atol=1e-6)
        for a, b in zip(tn, en, strict=True)
    )
    if same:
        return []
    if not en:
        return [f"training normalises with {_normalize_text(tn)}; evaluation does not normalise"]
    if not tn:
        return [f"evaluation normalises with {_normalize_text(en)}; training does not normalise"]
    return [f"training normalises with {_normalize_text(tn)}; evaluation with {_normalize_text(en)}"]


def _always_effects(spec: TransformSpec) -> list[tuple[str, str]]:
    """(effect, op) of the steps that change every image in the same way, other than size/crop/normalize."""
    return [
        (OPS[s["op"]].effect, s["op"]) for s in spec if OPS[s["op"]].effect and always_applied(s) and not is_noop(s)
    ]


def _effect_findings(train: TransformSpec, eval_: TransformSpec) -> list[str]:
    findings = []
    t_effects, e_effects = _always_effects(train), _always_effects(eval_)
    e_names = [e for e, _ in e_effects]
    t_names = [e for e, _ in t_effects]
    for effect, op in t_effects:
        if effect not in e_names:
            findings.append(f"training always {effect} ({op}); evaluation does not")
    for effect, op in e_effects:
        if effect not in t_names:
            findings.append(f"evaluation always {effect} ({op}); training does not")
    return findings


def _random_eval_findings(eval_: TransformSpec) -> list[str]:
    return [
        f"evaluation step {i + 1} ({s['op']}) is random, so predictions change from run to run; "
        "keep evaluation deterministic"
        for i, s in enumerate(eval_)
        if not is_deterministic(s)
    ]


def check_pair(train_spec: Any, eval_spec: Any, input_hw: tuple[int, int] = DEFAULT_INPUT_HW) -> list[str]:
    """Every way evaluation images would differ from what the model saw in training, in plain words.

    Random augmentations that training applies only sometimes (p < 1, random crops around the same
    view) are the point of augmenting and are not reported.
    """
    train, eval_ = as_spec(train_spec), as_spec(eval_spec)
    findings = _geometry_findings(simulate(train, input_hw), simulate(eval_, input_hw))
    findings += _normalize_findings(train, eval_)
    findings += _effect_findings(train, eval_)
    findings += _random_eval_findings(eval_)
    return findings
