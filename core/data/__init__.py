"""Data: dataset formats → index + problems, the one image opener, thumbnails, zip uploads, demo data.

Modules: ``datasets`` (scan, DatasetIndex, EvalSet), ``images`` (the one place that opens images),
``thumbnails`` (gallery JPEGs and their caches), ``archive`` (zip uploads), ``demo`` (synthetic
competition data).
"""

from core._exports import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "scan": "datasets",
        "scan_eval": "datasets",
        "DatasetIndex": "datasets",
        "EvalSet": "datasets",
        "Problem": "datasets",
        "open_rgb": "images",
        "read_header": "images",
        "thumbnail_jpeg": "thumbnails",
        "extract_dataset_zip": "archive",
        "generate": "demo",
    },
)
