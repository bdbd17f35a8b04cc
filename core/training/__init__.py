"""Training: the typed config, the loop, the input loader and decoded cache, models, CPU threads, k-fold.

Modules: ``config`` (TrainConfig), ``loop`` (run_training, train_one_epoch, evaluate), ``loader``
(decoded sources and the uint8 cache), ``models`` (backbones), ``cputhreads`` (ThreadGovernor),
``kfold`` (out-of-fold predictions).
"""

from core._exports import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "TrainConfig": "config",
        "run_training": "loop",
        "train_one_epoch": "loop",
        "evaluate": "loop",
        "make_source": "loader",
        "build_model": "models",
        "MODEL_NAMES": "models",
        "ThreadGovernor": "cputhreads",
        "out_of_fold_predictions": "kfold",
    },
)
