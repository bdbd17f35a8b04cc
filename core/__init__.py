"""The workbench library: never imports streamlit; usable from a notebook.

Layers (each sub-package's ``__init__`` names its API):

- ``core.data``        dataset formats → index + problems, the image opener, thumbnails, zip uploads, demo
- ``core.specs``       transform specs: op registry, validation, pipelines, the train/eval pair check, preview
- ``core.training``    TrainConfig, the loop, the input loader and cache, models, CPU threads, k-fold
- ``core.runs``        the run-folder format and background jobs
- ``core.evaluation``  metrics, review, inference, checkpoint import, submission files
- ``core.cli``         ``python -m core …``, one module per sub-command group
- ``core.settings``, ``core.errors``, ``core.fsutil``
"""
