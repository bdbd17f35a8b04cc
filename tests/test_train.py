"""The training core: config validation, the person split, the input pipeline and the resumable loop."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from core import runs
from core.data import demo
from core.errors import ConfigError, JobCancelled
from core.specs import transforms
from core.training.config import TrainConfig
from core.training.loader import Batch, CachedSource, DecodeSource, make_source, open_or_build_cache
from core.training.loop import evaluate, lr_factor, run_training, split_indices


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """One torch thread (two shared cores: OpenMP spinning against other work is slower), a private cache."""
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Ctx:
    """A stand-in for core.runs.jobs.JobContext that records heartbeats and cancels at a given step."""

    def __init__(self, cancel_at: int | None = None):
        self.cancel_at = cancel_at
        self.step = 0
        self.beats: list[dict] = []

    def heartbeat(self, step=None, total_steps=None, epoch=None, message=None, force=False):
        if step is not None:
            self.step = step
        self.beats.append({"step": step, "total_steps": total_steps, "epoch": epoch, "message": message})

    def cancel_requested(self) -> bool:
        return self.cancel_at is not None and self.step >= self.cancel_at


def make_run(parent, name: str, **fields) -> runs.RunFolder:
    cfg = TrainConfig(**fields)
    run = runs.create_run_folder(parent, name)
    runs.write_config(run, {**cfg.to_dict(), "kind": "train"})
    return run


def small_specs(h: int, w: int, flip: bool = False) -> dict:
    train, eval_ = transforms.preset("baseline", (h, w))
    if flip:
        train = transforms.validate_spec([train[0], {"op": "RandomHorizontalFlip", "p": 0.5}, *train[1:]])
    return {"train_spec": train, "eval_spec": eval_, "img_size": [h, w]}


def metric_curve(run: runs.RunFolder) -> list[dict]:
    """metrics.jsonl without the wall-clock figures (images_per_s, threads), for exact comparison."""
    frame = runs.read_metrics(run).drop(columns=["images_per_s", "threads"], errors="ignore")
    return [
        {k: v for k, v in row.items() if not (isinstance(v, float) and np.isnan(v))} for row in frame.to_dict("records")
    ]


# ---- config -----------------------------------------------------------------------------------------


def test_default_config_round_trips_and_matches_the_baseline():
    cfg = TrainConfig()
    assert cfg.model == "small_cnn" and cfg.img_size == [128, 96]
    assert transforms.output_size(cfg.train_spec) == (128, 96)
    again = TrainConfig.from_dict(json.loads(json.dumps({**cfg.to_dict(), "kind": "train"})))
    assert again == cfg


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"colour": 1}, "colour"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": "64"}, "batch_size"),
        ({"lr": -0.1}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"scheduler": "exp"}, "scheduler"),
        ({"loss": "hinge"}, "loss"),
        ({"task": "race"}, "task"),
        ({"model": "resnet9000"}, "model"),
        ({"pretrained": "yes"}, "pretrained"),
        ({"pretrained": True}, "pretrained"),  # small_cnn has no weights
        ({"img_size": [64, 48]}, "train_spec"),  # the specs still resize to 128x96
        ({"img_size": [64]}, "img_size"),
        ({"train_spec": [{"op": "Blur"}]}, "train_spec"),
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"n_folds": 1}, "n_folds"),
        ({"n_folds": 5, "fold": 5}, "fold"),
        ({"fold": 2}, "fold"),
        ({"device": "tpu"}, "device"),
        ({"cache": "ram"}, "cache"),
        ({"kind": "predict"}, "kind"),
    ],
)
def test_invalid_config_fields_are_named(change, field):
    raw = {**TrainConfig().to_dict(), **change}
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict(raw)
    assert str(err.value).startswith(f"{field}:"), str(err.value)


def test_lr_schedule_warms_up_then_follows_the_scheduler():
    cfg = TrainConfig(warmup_steps=10, scheduler="cosine")
    factors = [lr_factor(s, cfg, spe=10, total_steps=100) for s in range(100)]
    assert factors[0] == pytest.approx(0.01) and factors[10] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(factors[:10], factors[1:11], strict=True))
    assert factors[-1] < 0.01
    step = TrainConfig(warmup_steps=0, scheduler="step", step_size=2, gamma=0.5)
    assert [lr_factor(s, step, spe=10, total_steps=100) for s in (0, 19, 20, 40)] == [1.0, 1.0, 0.5, 0.25]


def test_val_f1_is_the_mean_of_the_counted_per_class_f1():
    """Class 3 has no validation image and is never predicted: like scikit-learn's macro F1 (the
    leaderboard's), it is not counted, and its per-class entry says so with None."""
    from sklearn.metrics import f1_score

    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    pred = [0, 1, 1, 1, 2, 0]
    logits = torch.nn.functional.one_hot(torch.tensor(pred), 4).float() * 5  # the model is the identity
    batches = [Batch(logits[:4], np.arange(4)), Batch(logits[4:], np.arange(4, 6))]
    result = evaluate(torch.nn.Identity(), batches, labels, 4, torch.device("cpu"))
    assert result.f1_per_class[3] is None
    assert result.f1_per_class[:3] == pytest.approx([0.5, 0.8, 2 / 3])  # by hand: 2TP / (2TP + FP + FN)
    counted = result.f1_per_class[:3]
    assert result.f1 == pytest.approx(sum(counted) / 3)
    assert result.f1 == pytest.approx(f1_score(labels.numpy(), pred, average="macro"))
    assert result.acc == pytest.approx(4 / 6) and result.preds.tolist() == pred


# ---- split ----------------------------------------------------------------------------------------------


def test_split_keeps_each_person_on_one_side_and_stratifies():
    rng = np.random.default_rng(0)
    groups = np.repeat([f"p{i:03d}" for i in range(50)], 7)
    labels = np.tile([0, 0, 0, 0, 0, 1, 2], 50)  # every person has all three mask states, 5:1:1
    rng.shuffle(groups)  # order must not matter
    train, val = split_indices(labels, groups, 0.2, seed=1)
    assert set(groups[train]).isdisjoint(groups[val])
    assert len(train) + len(val) == len(labels)
    assert 0.15 <= len(val) / len(labels) <= 0.25
    assert set(labels[val]) == {0, 1, 2}
    assert split_indices(labels, groups, 0.2, seed=1)[1].tolist() == val.tolist()  # same seed, same split


def test_k_folds_partition_the_people():
    groups = np.repeat(np.arange(20).astype(str), 3)
    labels = np.tile([0, 1, 2], 20)
    vals = [split_indices(labels, groups, 0.2, seed=0, n_folds=4, fold=k)[1] for k in range(4)]
    assert sorted(np.concatenate(vals).tolist()) == list(range(60))


def test_split_with_unique_groups_is_a_stratified_shuffle():
    labels = np.array([0] * 40 + [1] * 10)
    train, val = split_indices(labels, np.arange(50).astype(str), 0.2, seed=0)
    assert sorted(labels[val].tolist()) == [0] * 8 + [1] * 2


def test_split_refuses_a_single_class_and_too_few_people():
    with pytest.raises(ConfigError, match="single class"):
        split_indices(np.zeros(10, int), np.arange(10).astype(str), 0.2, seed=0)
    with pytest.raises(ConfigError, match="at least 5 people"):
        split_indices(np.array([0, 1, 0, 1]), np.array(["a", "a", "b", "b"]), 0.2, seed=0)


# ---- input pipeline -------------------------------------------------------------------------------------


def write_images(folder, n: int = 6, size=(40, 30)) -> tuple[list[str], list[tuple[int, int]]]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"img{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (size[0], size[1], 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths, [size] * n


def test_cached_batches_equal_decoded_batches(tmp_path):
    paths, sizes = write_images(tmp_path / "imgs")
    spec = small_specs(16, 12, flip=True)["train_spec"]
    cached = make_source(paths, sizes, spec, "memmap", tmp_path / "cache", log=lambda m: None)
    decoded = make_source(paths, sizes, spec, "none", tmp_path / "cache", log=lambda m: None)
    assert isinstance(cached, CachedSource) and isinstance(decoded, DecodeSource)
    assert cached.random_head is not None  # flip per sample on uint8, Normalize once per batch
    pos, seeds = np.array([3, 1, 4, 0, 5, 2]), np.arange(100, 106)
    a = torch.cat([b.images for b in cached.batches(pos, seeds, 4)])
    b = torch.cat([b.images for b in decoded.batches(pos, seeds, 4)])
    assert a.shape == (6, 3, 16, 12)
    torch.testing.assert_close(a, b)
    other_seeds = torch.cat([b.images for b in cached.batches(pos, seeds + 1000, 4)])
    assert not torch.equal(a, other_seeds)  # the flip really is drawn per sample from its seed

    # A deterministic remainder runs once per batch: still the same as the per-image decode path.
    spec = small_specs(16, 12)["eval_spec"]
    cached = make_source(paths, sizes, spec, "memmap", tmp_path / "cache", log=lambda m: None)
    decoded = make_source(paths, sizes, spec, "none", tmp_path / "cache", log=lambda m: None)
    assert not cached.rest_random and cached.fast is not None  # the fused Normalize path
    a = torch.cat([b.images for b in cached.batches(pos, seeds, 4)])
    b = torch.cat([b.images for b in decoded.batches(pos, seeds, 4)])
    torch.testing.assert_close(a, b)


def test_cache_is_reused_and_rebuilt_when_an_image_changes(tmp_path):
    paths, _ = write_images(tmp_path / "imgs")
    prefix = transforms.split_deterministic_prefix(small_specs(16, 12)["eval_spec"])[0]
    first, _, built = open_or_build_cache(paths, prefix, (16, 12), tmp_path / "cache")
    assert built and first.shape == (6, 16, 12, 3)
    again, _, built = open_or_build_cache(paths, prefix, (16, 12), tmp_path / "cache")
    assert not built and np.array_equal(first, again)
    Image.new("RGB", (30, 40), "red").save(paths[2])
    os.utime(paths[2], ns=(1, 1))
    changed, _, built = open_or_build_cache(paths, prefix, (16, 12), tmp_path / "cache")
    assert built
    assert changed[2, 8, 6, 0] > 240 and changed[2, 8, 6, 1] < 15  # now red
    assert not list((tmp_path / "cache" / "decoded").glob("*.tmp"))


def test_unreadable_images_are_skipped_and_reported(tmp_path):
    paths, sizes = write_images(tmp_path / "imgs", n=4)
    with open(paths[1], "r+b") as fh:
        fh.truncate(100)
    spec = small_specs(16, 12)["eval_spec"]
    for cache in ("memmap", "none"):
        source = make_source(paths, sizes, spec, cache, tmp_path / cache, log=lambda m: None)
        got = np.concatenate([b.positions for b in source.batches(np.arange(4), np.zeros(4, np.int64), 2)])
        assert got.tolist() == [0, 2, 3]
        assert list(source.skipped.reasons) == [1]
        assert "img1.jpg" in source.skipped.reasons[1]


# ---- the loop ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo40(tmp_path_factory):
    """40 people (280 photos): enough for the mask state to be learnt in a few dozen steps."""
    return demo.generate(tmp_path_factory.mktemp("demo40") / "demo", people=40, eval_people=0, seed=3)


def test_short_cpu_run_learns_the_mask_state(demo40, tmp_path):
    # Chance: always predicting "wear" (5 of 7 photos) has accuracy 0.71 but macro F1 0.28, and
    # guessing has macro F1 ~ 1/3. Macro F1 >= 0.6 over the three mask states needs the two minority
    # states recognised well above chance, which the majority trick cannot give (typically ~0.8 here).
    run = make_run(
        tmp_path / "models",
        "learn",
        data=str(demo40),
        task="mask",
        **small_specs(64, 48),
        batch_size=32,
        max_steps=60,
        lr=3e-3,
        balanced_sampling=True,
        log_every=5,
        warmup_steps=5,
    )
    ctx = Ctx()
    run_training(run, ctx)

    metrics = runs.read_metrics(run)
    val = metrics.dropna(subset=["val_f1"])
    assert val["val_f1"].max() >= 0.6, val[["step", "val_acc", "val_f1"]]
    logged = metrics.dropna(subset=["train_loss"])
    assert {"step", "epoch", "train_loss", "train_acc", "lr", "images_per_s", "threads"} <= set(logged.columns)
    assert set(logged["threads"]) <= {1, os.cpu_count()}, "the measured choice is one thread or all cores"
    assert logged["step"].tolist() == list(range(5, 61, 5))
    assert all(len(v) == 3 for v in val["val_f1_per_class"])
    for f1, per_class in zip(val["val_f1"], val["val_f1_per_class"], strict=True):  # one definition of F1
        counted = [v for v in per_class if v is not None]
        assert f1 == pytest.approx(sum(counted) / len(counted))
    assert ctx.beats[-1]["step"] == 60 or any(b["step"] == 60 for b in ctx.beats)

    best = runs.load_checkpoint(run.best_checkpoint)
    assert best["val_f1"] == pytest.approx(val["val_f1"].max())
    assert best["classes"] == ["Wear", "Incorrect", "Not wear"] and best["img_size"] == [64, 48]
    last = runs.load_checkpoint(run.last_checkpoint)
    assert last["step"] == 60 and {"optimizer", "scheduler", "scaler", "rng", "config"} <= set(last)

    preds = runs.read_predictions(run.val_predictions)
    assert list(preds.columns[:5]) == ["path", "group", "label", "pred", "loss"]
    assert list(preds.columns[5:]) == ["p0", "p1", "p2"]
    np.testing.assert_allclose(preds[["p0", "p1", "p2"]].sum(axis=1), 1.0, rtol=1e-5)
    # No person on both sides: the validation people never appear among the training images.
    from core.data import datasets

    frame = datasets.scan(demo40).frame
    train_groups = set(frame.loc[~frame["path"].isin(preds["path"]), "group"])
    assert train_groups.isdisjoint(set(preds["group"]))
    assert len(preds) == len(frame) - len(frame[frame["group"].isin(train_groups)])
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(run.tensorboard))


def test_resume_after_cancel_continues_the_same_curve(demo_root, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_TRAIN_THREADS", "1")  # bit-exact needs one fixed thread count
    fields = dict(
        data=str(demo_root),
        task="mask",
        **small_specs(32, 24, flip=True),
        batch_size=16,
        max_steps=12,
        log_every=2,
        warmup_steps=2,
    )
    straight = make_run(tmp_path / "models", "straight", **fields)
    run_training(straight, Ctx())
    assert set(runs.read_metrics(straight)["threads"].dropna()) == {1}

    stopped = make_run(tmp_path / "models", "stopped", **fields)
    with pytest.raises(JobCancelled):
        run_training(stopped, Ctx(cancel_at=7))  # mid-epoch: 4 steps per epoch
    ckpt = runs.load_checkpoint(stopped.last_checkpoint)  # weights_only: plain data only
    assert ckpt["step"] == 7 and ckpt["epoch"] == 1
    # A line a killed job wrote after its last checkpoint must not appear twice after resume.
    runs.append_metrics(stopped, {"step": 9, "epoch": 3, "train_loss": 9.9})
    run_training(stopped, Ctx())

    assert metric_curve(stopped) == metric_curve(straight)
    a, b = runs.load_checkpoint(straight.last_checkpoint), runs.load_checkpoint(stopped.last_checkpoint)
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0)
    pa, pb = runs.read_predictions(straight.val_predictions), runs.read_predictions(stopped.val_predictions)
    pd.testing.assert_frame_equal(pa, pb)

    before = len(runs.read_metrics(stopped))
    run_training(stopped, Ctx())  # a finished run resumed again does nothing
    assert len(runs.read_metrics(stopped)) == before


def test_single_class_dataset_is_refused(tmp_path):
    write_images(tmp_path / "one" / "cats", n=6)
    run = make_run(tmp_path / "models", "one", data=str(tmp_path / "one"), **small_specs(32, 24))
    with pytest.raises(ConfigError, match="single class"):
        run_training(run, Ctx())
    assert not run.last_checkpoint.exists()


def test_cancel_while_caching_stops_before_training_and_leaves_no_half_cache(demo_root, tmp_path):
    run = make_run(tmp_path / "models", "early", data=str(demo_root), task="mask", **small_specs(32, 24))
    with pytest.raises(JobCancelled, match="caching"):
        run_training(run, Ctx(cancel_at=0))
    assert not run.last_checkpoint.exists()
    cache = tmp_path / "cache" / "decoded"
    assert not list(cache.glob("*.u8")) and not list(cache.glob("*.tmp"))


def test_missing_pretrained_weights_fail_the_run_before_any_work(demo_root, tmp_path, monkeypatch):
    from core.errors import CheckpointError

    before = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        run = make_run(
            tmp_path / "models", "pre", data=str(demo_root), model="resnet18", pretrained=True, **small_specs(32, 24)
        )
        with pytest.raises(CheckpointError, match=r"resnet18-f37072fd\.pth.*hub/checkpoints"):
            run_training(run, Ctx())
    finally:
        torch.hub.set_dir(before)
    assert not (tmp_path / "cache" / "decoded").exists()


def test_a_class_folder_run_records_and_reviews_its_class_names(tmp_path):
    from core.evaluation import review

    for name in ("cats", "dogs", "owls"):
        write_images(tmp_path / "pets" / name, n=8)
    run = make_run(
        tmp_path / "models", "pets", data=str(tmp_path / "pets"), epochs=1, batch_size=8, **small_specs(32, 24)
    )
    run_training(run, Ctx())
    assert runs.read_config(run)["classes"] == ["cats", "dogs", "owls"]
    _, classes, task = review.run_predictions(run)
    assert classes == ["cats", "dogs", "owls"] and task == "class"
    TrainConfig.from_dict(runs.read_config(run))  # the recorded list is not a setting: still a valid config


def test_the_best_epoch_saves_the_validation_embeddings(tmp_path):
    from core.evaluation import embeddings

    for name in ("cats", "dogs"):
        write_images(tmp_path / "pets" / name, n=10)
    run = make_run(
        tmp_path / "models", "emb", data=str(tmp_path / "pets"), epochs=2, batch_size=8, **small_specs(32, 24)
    )
    run_training(run, Ctx())
    features, frame = embeddings.load_embeddings(run.root)
    predictions = runs.read_predictions(run.val_predictions)
    assert features.dtype == np.float16 and len(features) == len(predictions) > 0
    assert frame["path"].tolist() == predictions["path"].tolist()  # row i is validation image i
