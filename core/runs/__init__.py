"""Runs: the run-folder format (``folder``, the one module that reads and writes it) and background
jobs (``jobs``: launch, cancel, resume, reconcile, list).

The run-folder API is exported here, so ``from core import runs; runs.read_status(run)`` reads a
folder; jobs are ``from core.runs import jobs``.
"""

from core.runs.folder import (
    ACTIVE_STATES,
    FINAL_STATES,
    STATES,
    RunFolder,
    adopt_run_lock,
    append_log,
    append_metrics,
    cancel_requested,
    clear_cancel,
    create_run_folder,
    list_run_folders,
    load_checkpoint,
    lock_run_folder,
    new_run_id,
    open_run,
    probability_columns,
    read_checked_predictions,
    read_config,
    read_metrics,
    read_predictions,
    read_predictions_safely,
    read_status,
    read_summary,
    remove_partial_checkpoints,
    request_cancel,
    save_checkpoint,
    tail,
    truncate_metrics,
    unlock_run_folder,
    validate_run_id,
    write_config,
    write_predictions,
    write_status,
)

__all__ = [
    "ACTIVE_STATES", "FINAL_STATES", "STATES", "RunFolder", "adopt_run_lock", "append_log", "append_metrics",
    "cancel_requested", "clear_cancel", "create_run_folder", "list_run_folders", "load_checkpoint",
    "lock_run_folder", "new_run_id", "open_run", "probability_columns", "read_checked_predictions", "read_config",
    "read_metrics", "read_predictions", "read_predictions_safely", "read_status", "read_summary", "remove_partial_checkpoints",
    "request_cancel", "save_checkpoint", "tail", "truncate_metrics", "unlock_run_folder", "validate_run_id",
    "write_config", "write_predictions", "write_status",
]  # fmt: skip
