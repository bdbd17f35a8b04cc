"""Evaluation: metrics, review selection and label-error scoring, inference, checkpoint import, submissions.

Modules: ``metrics``, ``review``, ``infer`` (predict with one run or an ensemble), ``checkpoints``
(weights trained elsewhere), ``submission`` (submission.csv written and checked), ``predjobs``
(prediction job folders).
"""

from core._exports import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "summarize": "metrics",
        "macro_f1": "metrics",
        "suspected_label_errors": "review",
        "label_issues": "review",
        "load_run": "infer",
        "predict": "infer",
        "predict_to_files": "infer",
        "import_checkpoint": "checkpoints",
        "validate_submission": "submission",
        "create_prediction_job": "predjobs",
    },
)
