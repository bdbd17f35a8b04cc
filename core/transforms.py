"""JSON transform specs -> torchvision.transforms.v2 pipelines; presets; the train/eval pair check.

CONTRACT (stub; the augmentation work fills it in):

    A spec is a list of steps, each {"op": NAME, **params}, NAME and params as in torchvision.transforms.v2.
    OPS: dict[str, OpInfo]      # registry: params (type, range, default), random: bool, stage
                                # ("geometry" | "colour" | "tensor")
    validate_spec(spec) -> list[dict]    # normalised copy with defaults filled; raises SpecError naming
                                         # the step index, op and parameter
    build_pipeline(spec) -> v2.Compose   # input: PIL image or uint8 CHW tensor; output: float32 CHW tensor
                                         # (normalised if the spec has Normalize)
    build_stages(spec) -> dict[str, v2.Compose]   # "geometry", "colour", "tensor" in order
    split_deterministic_prefix(spec) -> (prefix, rest)
        # the leading steps that are deterministic geometry (Resize, CenterCrop, ...) and can be applied
        # once and cached as uint8 by the training loader; `rest` is applied per sample, per epoch.
        # build_pipeline(prefix) then build_pipeline(rest) on its uint8 output == build_pipeline(spec).
    output_size(spec, input_hw=(512, 384)) -> (h, w)   # final size the model receives
    PRESETS: dict[str, tuple[list, list]]   # name -> (train spec, eval spec): baseline, center-crop, light, strong
    preset(name, img_size=None) -> (train, eval)  # a preset, optionally with its final Resize set to img_size
    check_pair(train_spec, eval_spec, input_hw=(512, 384)) -> list[str]   # findings in words; [] if they match
    denormalize(tensor, spec) -> uint8 HWC numpy for display
    saved pairs (settings.specs_dir): save_named_pair(name, train, eval, folder=None) /
        list_named_pairs(folder=None) -> list[str] / load_named_pair(name, folder=None) -> (train, eval)
"""
