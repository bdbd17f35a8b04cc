"""Data: dataset formats → index + problems, tasks, the one image opener, thumbnails, zip uploads, demo data.

Modules: ``datasets`` (scan → DatasetIndex), ``tree`` (the walk of a dataset folder and its Problem
rows), ``evalset`` (the competition's eval folder), ``stats`` (the Dataset page's statistics),
``tasks`` (the one definition of tasks, class names and the 18-class encoding), ``images`` (the one
place that opens images), ``thumbnails`` (gallery JPEGs and their caches), ``archive`` (zip uploads),
``demo`` and ``demo_draw`` (synthetic competition data).
"""

from core._exports import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "scan": "datasets",
        "DatasetIndex": "datasets",
        "scan_eval": "evalset",
        "EvalSet": "evalset",
        "Problem": "tree",
        "Task": "tasks",
        "dataset_tasks": "tasks",
        "CLASS_NAMES": "tasks",
        "open_rgb": "images",
        "read_header": "images",
        "thumbnail_jpeg": "thumbnails",
        "extract_dataset_zip": "archive",
        "generate": "demo",
    },
)
