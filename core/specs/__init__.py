"""Transform specs: plain JSON lists of ``{"op": name, ...params}`` built into torchvision v2 pipelines."""
