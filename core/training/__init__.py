"""Training: the typed config, the loop, the input loader and decoded cache, models, CPU threads, k-fold.

Modules: ``config`` (TrainConfig), ``loop`` (run_training: prepare → epoch → end of epoch; train_one_epoch,
evaluate), ``steps`` (train_one_epoch, evaluate), ``progress`` (metrics.jsonl, TensorBoard, heartbeats), ``state`` (TrainState: step, best score, log window, RNG — into and out of a checkpoint),
``parts`` (model, loss, optimizer, scheduler, scaler, device), ``split`` (train/validation split by
person, epoch order, the batch offset a resume replays), ``finetune`` (head-only epochs, backbone lr
multiplier, weight EMA), ``distributed`` (torchrun / DistributedDataParallel process groups), ``loader`` (decoded sources and the uint8
cache), ``models`` (backbones), ``zoo`` (backbone facts, preprocessing), ``weights`` (downloads), ``cputhreads`` (ThreadGovernor), ``kfold`` (out-of-fold predictions).
"""

from core._exports import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "TrainConfig": "config",
        "run_training": "loop",
        "train_one_epoch": "loop",
        "evaluate": "loop",
        "TrainState": "state",
        "TrainParts": "parts",
        "split_indices": "split",
        "WeightEma": "finetune",
        "list_backbones": "zoo",
        "model_facts": "zoo",
        "preprocessing": "zoo",
        "check_model_name": "models",
        "make_source": "loader",
        "build_model": "models",
        "MODEL_NAMES": "models",
        "ThreadGovernor": "cputhreads",
        "out_of_fold_predictions": "kfold",
    },
)
