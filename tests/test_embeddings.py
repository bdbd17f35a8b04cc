"""Embeddings: the head's input for a run's validation images or a folder, files, the 2-D map, neighbours, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from core import runs
from core.__main__ import main as cli_main
from core.errors import ConfigError, RunError
from core.evaluation import embeddings, infer

IMG_SIZE = (32, 24)


def eval_spec() -> list[dict]:
    from core.specs import transforms

    return transforms.preset("baseline", img_size=IMG_SIZE)[1]


def make_run(parent: Path, name: str = "r1", classes: int = 3) -> Path:
    """A completed small_cnn run with random weights (the format core.training.loop writes)."""
    from core.training import models

    torch.manual_seed(0)
    net = models.build_model("small_cnn", classes)
    names = [f"c{k}" for k in range(classes)]
    folder = runs.create_run_folder(parent, run_id=name)
    meta = {
        "model": "small_cnn",
        "task": "class",
        "classes": names,
        "img_size": list(IMG_SIZE),
        "eval_spec": eval_spec(),
    }
    runs.write_config(folder, {"kind": "imported", **meta, "train_spec": eval_spec(), "source": "test"})
    runs.save_checkpoint(
        folder.best_checkpoint,
        {
            "model": net.state_dict(),
            "model_name": "small_cnn",
            **{k: meta[k] for k in ("task", "classes", "img_size", "eval_spec")},
            "config": meta,
        },
    )
    runs.write_status(folder, state="completed")
    return folder.root


def make_images(folder: Path, n: int) -> list[str]:
    """``n`` class folders' worth of distinct pictures: folder/c{k%3}/img{k}.png."""
    rng = np.random.default_rng(3)
    paths = []
    for k in range(n):
        (folder / f"c{k % 3}").mkdir(parents=True, exist_ok=True)
        path = folder / f"c{k % 3}" / f"img{k:02d}.png"
        arr = rng.integers(0, 255, size=(40, 30, 3), dtype=np.uint8)
        arr[: 10 + k % 20] = 60 * (k % 3)
        Image.fromarray(arr).save(path)
        paths.append(str(path))
    return paths


def write_val_predictions(run: Path, paths: list[str]) -> None:
    k = 3
    probs = np.full((len(paths), k), 1 / k)
    labels = [i % k for i in range(len(paths))]
    frame = pd.DataFrame(
        {"path": paths, "group": [Path(p).stem for p in paths], "label": labels, "pred": 0, "loss": 1.0}
    )
    frame = pd.concat([frame, pd.DataFrame(probs, columns=[f"p{i}" for i in range(k)])], axis=1)
    runs.write_predictions(runs.RunFolder(run).val_predictions, frame)


@pytest.fixture
def models_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("WORKBENCH_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "models"


def test_head_input_is_what_the_classifier_sees():
    from core.training import models

    net = models.build_model("small_cnn", 3).eval()
    x = torch.randn(4, 3, *IMG_SIZE)
    with torch.no_grad(), embeddings.capture_head_inputs(net) as captured:
        logits = net(x)
        net(x[:1])
    feats = captured.array()
    with torch.no_grad():
        expected = net.pool(net.features(x)).flatten(1).numpy()
        assert torch.allclose(net.classifier(torch.from_numpy(feats[:4])), logits, atol=1e-5)
    assert feats.shape == (5, expected.shape[1])
    assert np.allclose(feats[:4], expected, atol=1e-5)
    assert embeddings.head_module(models.build_model("resnet18", 3)) is not None
    net(x)  # the hook is gone after the block
    assert len(captured.batches) == 2


def test_validation_embeddings_are_saved_float16_with_their_index(models_dir, tmp_path):
    run = make_run(models_dir)
    paths = make_images(tmp_path / "val", 10)
    write_val_predictions(run, paths)
    seen = []
    npy, result = embeddings.embed_run(run, progress=lambda d, t: seen.append((d, t)), device="cpu")
    assert npy == run / "embeddings.npy" and (run / "embeddings.parquet").is_file()
    feats, index = embeddings.load_embeddings(run)
    assert feats.dtype == np.float16 and feats.shape == (10, result.features.shape[1])
    assert index["path"].tolist() == paths
    assert index["label"].tolist() == [i % 3 for i in range(10)]
    assert {"group", "pred", "confidence"} <= set(index.columns)
    assert seen[-1] == (10, 10)
    # the same numbers as the head's input computed directly through the run's eval pipeline
    member = infer.load_run(run, "cpu")
    load = infer.input_loader(member.eval_spec)
    with torch.no_grad(), embeddings.capture_head_inputs(member.model) as captured:
        member.model(torch.stack([load(p) for p in paths[:3]]))
    assert np.allclose(feats[:3].astype(np.float32), captured.array(), rtol=1e-2, atol=1e-2)
    assert index["pred"].between(0, 2).all() and index["confidence"].between(1 / 3 - 1e-6, 1).all()


def test_missing_and_half_written_embeddings_are_refused(models_dir):
    run = make_run(models_dir)
    with pytest.raises(RunError, match="python -m core embed --run"):
        embeddings.load_embeddings(run)
    embeddings.save_embeddings(run, pd.DataFrame({"path": ["a", "b"]}), np.ones((2, 4)))
    npy, _ = embeddings.embedding_paths(run)
    np.save(npy, np.ones((3, 4), dtype=np.float16))  # the features of another computation
    with pytest.raises(RunError, match="3 features for 2 index rows"):
        embeddings.load_embeddings(run)
    with pytest.raises(ConfigError, match="one row per feature"):
        embeddings.save_embeddings(run, pd.DataFrame({"path": ["a"]}), np.ones((2, 4)))


def test_the_training_loop_hook_keeps_confidence_from_the_probabilities(models_dir):
    run = make_run(models_dir)
    frame = pd.DataFrame(
        {
            "path": ["x.png", "y.png"],
            "group": ["g", "h"],
            "label": [0, 1],
            "pred": [0, 2],
            "loss": [0.1, 2.0],
            "p0": [0.9, 0.1],
            "p1": [0.05, 0.2],
            "p2": [0.05, 0.7],
        }
    )
    embeddings.save_run_embeddings(runs.RunFolder(run), np.arange(8, dtype=np.float32).reshape(2, 4), frame)
    feats, index = embeddings.load_embeddings(run)
    assert feats.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert index["confidence"].to_numpy() == pytest.approx([0.9, 0.7])
    assert list(index.columns) == ["path", "group", "label", "pred", "confidence"]


def test_cli_embeds_a_folder_next_to_the_validation_set(models_dir, tmp_path, capsys):
    run = make_run(models_dir)
    data = tmp_path / "other"
    paths = make_images(data, 6)
    assert cli_main(["embed", "--run", str(run), "--data", str(data), "--device", "cpu"]) == 0
    out = capsys.readouterr()
    assert "6 images x" in out.out and "embedding 6/6" in out.err
    npy, index_path = embeddings.embedding_paths(run, data)
    assert npy.name.startswith("embeddings-other-") and npy.is_file() and index_path.is_file()
    feats, index = embeddings.load_embeddings(run, data)
    assert sorted(index["path"]) == sorted(paths) and len(feats) == 6
    assert not (run / "embeddings.npy").exists()  # the validation set's files are another pair
    assert cli_main(["embed", "--run", str(run)]) == 2  # no val_predictions.parquet yet
    assert "no predictions yet" in capsys.readouterr().err


def two_blobs(n: int, dims: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    centres = np.where(labels[:, None] == 0, 4.0, -4.0) * np.ones(dims)
    return (centres + rng.normal(0, 1, (n, dims))).astype(np.float32), labels


def _separated(xy: np.ndarray, labels: np.ndarray) -> bool:
    """Every point nearer its own blob's centre than the other's."""
    c0, c1 = xy[labels == 0].mean(0), xy[labels == 1].mean(0)
    own = np.where(labels[:, None] == 0, c0, c1)
    other = np.where(labels[:, None] == 0, c1, c0)
    return bool((np.linalg.norm(xy - own, axis=1) < np.linalg.norm(xy - other, axis=1)).all())


def test_small_sets_are_mapped_with_pca():
    feats, labels = two_blobs(20)
    half = feats.astype(np.float16)  # as saved
    xy = embeddings.project_2d(half)
    assert xy.shape == (20, 2) and xy.dtype == np.float32
    assert _separated(xy, labels)
    assert np.array_equal(xy, embeddings.project_2d(half, method="pca"))  # auto is PCA below 50 points
    assert embeddings.project_2d(feats[:2]).shape == (2, 2)
    with pytest.raises(ConfigError, match="tsne"):
        embeddings.project_2d(feats, method="tsne")


@pytest.mark.skipif(not embeddings.umap_available(), reason="umap-learn is not installed")
def test_umap_map_is_deterministic_and_keeps_clusters_apart():
    feats, labels = two_blobs(80)
    xy = embeddings.project_2d(feats, random_state=7)
    assert xy.shape == (80, 2) and _separated(xy, labels)
    assert np.allclose(xy, embeddings.project_2d(feats, random_state=7))
    assert embeddings.project_2d(feats[:8], method="umap").shape == (8, 2)  # n_neighbors kept below n


def test_nearest_neighbours_by_cosine_closest_first():
    feats = np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0], [2, 0.1]], dtype=np.float32)
    rows, dist = embeddings.nearest_neighbours(feats, 0, k=3)
    assert rows.tolist() == [4, 1, 2]  # scale does not matter to cosine; row 0 itself left out
    assert np.all(np.diff(dist) >= 0) and dist[0] == pytest.approx(1 - 2 / np.hypot(2, 0.1), abs=1e-6)
    assert embeddings.nearest_neighbours(feats, 3, k=10)[0].tolist()[-1] == 0  # k clipped to n - 1, farthest last
    with pytest.raises(ConfigError, match="row 9"):
        embeddings.nearest_neighbours(feats, 9)
