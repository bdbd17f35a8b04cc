"""Backbone registry (torchvision) with head replacement and weight loading.

CONTRACT (stub; the training work fills it in):

    MODEL_NAMES: list[str]   # small_cnn, resnet18, resnet34, resnet50, vgg11, vgg11_bn, efficientnet_b0,
                             # mobilenet_v3_small, mobilenet_v3_large, convnext_tiny
    build_model(name, num_classes, pretrained=False) -> nn.Module
        # pretrained weights via torchvision's weights API from the local torch cache only; when absent
        # raises CheckpointError naming the file and the folder to put it in (never downloads, never hangs)
    load_state_dict_checked(model, state_dict, name, num_classes) -> None
        # raises CheckpointError saying which: wrong architecture (unexpected/missing keys) or wrong class count
"""
