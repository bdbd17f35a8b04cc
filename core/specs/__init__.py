"""Transform specs: plain JSON lists of ``{"op": name, ...params}`` built into torchvision v2 pipelines.

Modules: ``ops`` (the op registry), ``spec`` (TransformSpec: a spec validated once; as_spec, the one
boundary helper), ``geometry`` (output size, simulated without pixels), ``presets``, ``pipeline``
(building, stages, and PrefixThenRest: the one prefix/remainder split the loader, inference and the
preview share), ``paircheck`` (the train/eval check), ``preview`` (samples and the model-input view
for the page), ``saved`` (JSON files and named pairs). ``ops``, ``spec``, ``geometry``, ``presets``
and ``paircheck`` import no torch. ``transforms`` re-exports everything for notebooks and older callers.
"""

from core._exports import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "OPS": "ops",
        "OpInfo": "ops",
        "ParamInfo": "ops",
        "STAGES": "ops",
        "DEFAULT_INPUT_HW": "ops",
        "IMAGENET_MEAN": "ops",
        "IMAGENET_STD": "ops",
        "is_deterministic": "ops",
        "TransformSpec": "spec",
        "Step": "spec",
        "as_spec": "spec",
        "validate_spec": "spec",
        "validate_step": "spec",
        "output_size": "geometry",
        "PRESETS": "presets",
        "preset": "presets",
        "preset_pair": "presets",
        "build_pipeline": "pipeline",
        "build_stages": "pipeline",
        "stage_of_steps": "pipeline",
        "split_deterministic_prefix": "pipeline",
        "PrefixThenRest": "pipeline",
        "draft_size": "pipeline",
        "check_pair": "paircheck",
        "denormalize": "preview",
        "preview_samples": "preview",
        "model_input_view": "preview",
        "ModelInputView": "preview",
        "StagePicture": "preview",
        "test_pattern": "preview",
        "spec_to_json": "saved",
        "pair_to_json": "saved",
        "parse_spec_json": "saved",
        "parse_spec_document": "saved",
        "load_spec_file": "saved",
        "load_spec_document": "saved",
        "load_spec_pair": "saved",
        "check_pair_name": "saved",
        "save_named_pair": "saved",
        "list_named_pairs": "saved",
        "load_named_pair": "saved",
        "resolve_pair": "saved",
    },
)
