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
    output_size(spec, input_hw=(512, 384)) -> (h, w)   # final size the model receives
    PRESETS: dict[str, tuple[list, list]]   # name -> (train spec, eval spec): baseline, center-crop, light, strong
    check_pair(train_spec, eval_spec, input_hw=(512, 384)) -> list[str]   # findings in words; [] if they match
    denormalize(tensor, spec) -> uint8 HWC numpy for display
    saved specs: save_named_pair(name, train, eval, folder) / list_named_pairs(folder) / load_named_pair(name, folder)
"""
