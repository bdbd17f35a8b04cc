"""The notebook-facing facade: every public name of ``core.specs`` in one module, as before the split.

``from core.specs import transforms as T; T.build_pipeline(spec)`` keeps working for notebooks and
for callers written before the package was split by concern. New code imports from the modules
(or from ``core.specs``): ``ops`` (registry), ``spec`` (TransformSpec, as_spec, validate_spec),
``geometry`` (output_size), ``presets``, ``pipeline`` (building, PrefixThenRest), ``paircheck``
(check_pair), ``preview`` (samples, model-input view) and ``saved`` (JSON files, named pairs).
This module only re-exports; it defines nothing.
"""

from __future__ import annotations

from core.specs.geometry import output_size
from core.specs.ops import (
    DEFAULT_INPUT_HW,
    IMAGENET_MEAN,
    IMAGENET_STD,
    OPS,
    STAGES,
    OpInfo,
    ParamInfo,
    is_deterministic,
)
from core.specs.paircheck import check_pair
from core.specs.pipeline import (
    Contiguous,
    PrefixThenRest,
    build_pipeline,
    build_stages,
    draft_size,
    split_deterministic_prefix,
    stage_of_steps,
)
from core.specs.presets import PRESETS, preset, preset_pair
from core.specs.preview import (
    ModelInputView,
    StagePicture,
    denormalize,
    model_input_view,
    preview_samples,
    test_pattern,
)
from core.specs.saved import (
    check_pair_name,
    list_named_pairs,
    load_named_pair,
    load_spec_document,
    load_spec_file,
    load_spec_pair,
    pair_to_json,
    parse_spec_document,
    parse_spec_json,
    resolve_pair,
    save_named_pair,
    spec_to_json,
)
from core.specs.spec import Step, TransformSpec, as_spec, validate_spec, validate_step

__all__ = [
    "DEFAULT_INPUT_HW", "IMAGENET_MEAN", "IMAGENET_STD", "OPS", "PRESETS", "STAGES", "Contiguous",
    "ModelInputView", "OpInfo", "ParamInfo", "PrefixThenRest", "StagePicture", "Step", "TransformSpec",
    "as_spec", "build_pipeline", "build_stages", "check_pair", "check_pair_name", "denormalize", "draft_size",
    "is_deterministic", "list_named_pairs", "load_named_pair", "load_spec_document", "load_spec_file",
    "load_spec_pair", "model_input_view", "output_size", "pair_to_json", "parse_spec_document", "parse_spec_json",
    "preset", "preset_pair", "preview_samples", "resolve_pair", "save_named_pair", "spec_to_json",
    "split_deterministic_prefix", "stage_of_steps", "test_pattern", "validate_spec", "validate_step",
]  # fmt: skip
