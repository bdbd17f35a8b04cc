"""Resume checks what changed between a cancel and its resume: the config, the class list, the split.

A changed run fails with a message naming what changed, and leaves the checkpoint and the metrics as
they were; changes that only affect where, how fast or how often the run logs are accepted.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from core import runs
from core.errors import JobCancelled, RunError
from core.runs import jobs
from core.specs import transforms
from core.training.config import TrainConfig
from core.training.loop import run_training
from core.training.state import check_resumable, config_changes


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WORKBENCH_TRAIN_THREADS", "1")
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


class CancelAt:
    """A job context that asks for a cancel once the run has reached ``step``."""

    def __init__(self, step: int):
        self.cancel_at, self.step = step, 0

    def heartbeat(self, step=None, total_steps=None, epoch=None, message=None, force=False):
        self.step = step if step is not None else self.step

    def cancel_requested(self) -> bool:
        return self.step >= self.cancel_at


def write_class(folder, n: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (32, 24, 3), dtype=np.uint8)).save(folder / f"{folder.name}{i}.jpg")


@pytest.fixture
def cats_and_dogs(tmp_path):
    root = tmp_path / "pets"
    write_class(root / "cats", 8, seed=1)
    write_class(root / "dogs", 8, seed=2)
    return root


def config(data) -> dict:
    train_spec, eval_spec = transforms.preset("baseline", (32, 24))
    cfg = TrainConfig(
        data=str(data),
        train_spec=train_spec,
        eval_spec=eval_spec,
        img_size=[32, 24],
        batch_size=4,
        epochs=3,
        log_every=1,
        warmup_steps=0,
        device="cpu",
        seed=0,
    )
    return {**cfg.to_dict(), "kind": "train"}


def cancelled_run(tmp_path, data) -> runs.RunFolder:
    """A run cancelled mid-way through its second epoch (3 steps per epoch)."""
    run = runs.create_run_folder(tmp_path / "models", "pets")
    runs.write_config(run, config(data))
    with pytest.raises(JobCancelled):
        run_training(run, CancelAt(4))
    assert runs.load_checkpoint(run.last_checkpoint)["step"] == 4
    return run


def resume_refused(run: runs.RunFolder) -> str:
    """Resume ``run`` as a job; check it failed and touched neither last.pt nor metrics.jsonl; return the error."""
    checkpoint, metrics = run.last_checkpoint.read_bytes(), run.metrics.read_bytes()
    assert jobs.run_job(run, lambda ctx: run_training(run, ctx)) == "failed"
    assert run.last_checkpoint.read_bytes() == checkpoint
    assert run.metrics.read_bytes() == metrics
    return runs.read_status(run)["error"]


def test_resume_refuses_an_edited_learning_rate(tmp_path, cats_and_dogs):
    run = cancelled_run(tmp_path, cats_and_dogs)
    runs.write_config(run, {**runs.read_config(run), "lr": 0.1})
    error = resume_refused(run)
    assert error.startswith("config.json changed since the checkpoint at step 4 was saved: lr 0.003 → 0.1.")
    assert "put the old values back" in error


def test_resume_refuses_a_reordered_class_list(tmp_path, cats_and_dogs):
    run = cancelled_run(tmp_path, cats_and_dogs)
    (cats_and_dogs / "cats").rename(cats_and_dogs / "zebras")  # same count; label 0 is now the dogs
    error = resume_refused(run)
    assert "class list changed" in error
    assert "class 0: 'cats' → 'dogs', class 1: 'dogs' → 'zebras'" in error


def test_resume_refuses_a_changed_split(tmp_path, cats_and_dogs):
    run = cancelled_run(tmp_path, cats_and_dogs)
    write_class(cats_and_dogs / "dogs", 12, seed=3)  # four more dogs (and the first eight redrawn)
    error = resume_refused(run)
    assert error.startswith("the dataset changed since the checkpoint at step 4 was saved")
    assert "(was 12/4)" in error, error


def test_resume_accepts_changes_that_do_not_change_what_is_learnt(tmp_path, cats_and_dogs):
    run = cancelled_run(tmp_path, cats_and_dogs)
    runs.write_config(run, {**runs.read_config(run), "log_every": 2, "cache": "none", "channels_last": False})
    assert jobs.run_job(run, lambda ctx: run_training(run, ctx)) == "completed"
    assert runs.load_checkpoint(run.last_checkpoint)["step"] == 9
    steps = runs.read_metrics(run).dropna(subset=["train_loss"])["step"].tolist()
    assert steps == [1, 2, 3, 4, 6, 8, 9]  # every step before the cancel, every second one after


def test_config_changes_name_each_field_and_skip_the_harmless_ones():
    base = TrainConfig()
    saved = base.to_dict()
    changed = base.replace(lr=0.1, epochs=5, workers=2, device="cpu", log_every=3, amp="bf16", compile=True, nproc=2)
    assert config_changes(saved, changed) == ["epochs 3 → 5", "lr 0.003 → 0.1"]  # where and how fast: accepted
    assert config_changes(saved, base.replace(freeze_epochs=2, ema_decay=0.99)) == [
        "ema_decay 0.0 → 0.99",
        "freeze_epochs -1 → 2",
    ]
    older = {k: v for k, v in saved.items() if k not in ("freeze_epochs", "backbone_lr_mult", "ema_decay")}
    assert config_changes(older, base) == []  # a checkpoint from before the fine-tuning fields: their defaults
    flipped = TrainConfig.from_dict(
        {
            **saved,
            "train_spec": [
                *saved["train_spec"][:1],
                {"op": "RandomHorizontalFlip", "p": 0.5},
                *saved["train_spec"][1:],
            ],
        }
    )
    assert config_changes(saved, flipped) == ["train_spec changed"]
    assert config_changes({**saved, "lr": 3e-3 * 1}, base) == []
    with pytest.raises(RunError, match=r"3 → 2 classes; added none, removed \['c'\]"):
        check_resumable({"step": 1, "config": saved, "classes": ["a", "b", "c"]}, base, ["a", "b"], {})
    check_resumable({"step": 1}, base, ["a", "b"], {"digest": "x"})  # an older checkpoint: nothing to compare
