"""Prediction: demo eval submissions, the run's own eval geometry, ensembles, TTA, missing images, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from core import runs
from core.data import tasks
from core.errors import CheckpointError, ConfigError, SubmissionError
from core.evaluation import infer, predjobs, submission

IMG_SIZE = (32, 24)


def eval_spec(img_size=IMG_SIZE) -> list[dict]:
    from core.specs import transforms

    return transforms.preset("baseline", img_size=img_size)[1]


def make_run(
    parent: Path,
    name: str,
    task: str = "class",
    model: str = "small_cnn",
    spec: list[dict] | None = None,
    seed: int = 0,
    classes: list[str] | None = None,
) -> Path:
    """A completed run folder with a random-weight model, in the format core.training.loop writes."""
    from core.training import models

    classes = classes or tasks.task_classes(task)
    torch.manual_seed(seed)
    net = models.build_model(model, len(classes), pretrained=False)
    spec = spec if spec is not None else eval_spec()
    folder = runs.create_run_folder(parent, run_id=name)
    meta = {"model": model, "task": task, "classes": classes, "img_size": list(IMG_SIZE), "eval_spec": spec}
    runs.write_config(folder, {"kind": "imported", **meta, "train_spec": spec, "source": "test"})
    runs.save_checkpoint(
        folder.best_checkpoint,
        {
            "model": net.state_dict(),
            "model_name": model,
            "task": task,
            "classes": classes,
            "img_size": list(IMG_SIZE),
            "eval_spec": spec,
            "config": meta,
        },
    )
    runs.write_status(folder, state="completed")
    return folder.root


def make_eval(root: Path, n: int = 6, size=(64, 48), fmt: str = "PNG") -> Path:
    """An eval folder (info.csv + images/) of ``n`` distinct, left-right asymmetric pictures."""
    (root / "images").mkdir(parents=True)
    ids = []
    rng = np.random.default_rng(1)
    for k in range(n):
        image_id = f"{rng.integers(1 << 62):040x}.{'png' if fmt == 'PNG' else 'jpg'}"
        arr = rng.integers(0, 255, size=(*size, 3), dtype=np.uint8)
        arr[:, : size[1] // 3] = (40 * k) % 255  # asymmetric: a flat band on the left only
        Image.fromarray(arr).save(root / "images" / image_id, fmt)
        ids.append(image_id)
    pd.DataFrame({"ImageID": ids, "ans": 0}).to_csv(root / "info.csv", index=False)
    return root


@pytest.fixture
def models_dir(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "models"
    monkeypatch.setenv("WORKBENCH_MODELS_DIR", str(path))
    monkeypatch.setenv("WORKBENCH_SUBMISSIONS_DIR", str(tmp_path / "submissions"))
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    return path


def test_demo_eval_submission_matches_info_and_validates(demo_root, models_dir, tmp_path):
    run = make_run(models_dir, "r1")
    out = tmp_path / "out" / "submission.csv"
    seen = []
    summary = infer.predict_to_files([run], demo_root / "eval", out, progress=lambda d, t: seen.append((d, t)))
    info = pd.read_csv(demo_root / "eval" / "info.csv", dtype=str)
    sub = pd.read_csv(out, dtype=str)
    assert list(sub.columns) == ["ImageID", "ans"]
    assert sub["ImageID"].tolist() == info["ImageID"].tolist()  # row for row, in info.csv's order
    assert sub["ans"].astype(int).between(0, 17).all()
    assert submission.validate_submission(out, demo_root / "eval" / "info.csv") == []
    assert summary["validator"] == {"valid": True, "problems": []}
    assert sum(summary["counts"]) == len(info) and summary["tta"] is False and summary["runs"][0]["run"] == "r1"
    probs = pd.read_parquet(predjobs.output_paths(out)["probabilities"])
    assert np.allclose(probs[[f"p{k}" for k in range(18)]].sum(axis=1), 1, atol=1e-4)
    assert json.loads(predjobs.output_paths(out)["summary"].read_text())["images"] == len(info)
    assert seen[-1] == (len(info), len(info))


def test_run_predicts_with_its_own_center_crop(models_dir, tmp_path):
    """A photo with a red border and a green middle: the run's crop keeps only green."""
    crop_spec = [{"op": "CenterCrop", "size": [256, 192]}, *eval_spec()]
    run = infer.load_run(make_run(models_dir, "crop", spec=crop_spec), device="cpu")
    arr = np.zeros((512, 384, 3), np.uint8)
    arr[..., 0] = 255  # red everywhere ...
    arr[96:416, 72:312] = (0, 255, 0)  # ... except a green middle, larger than the 256x192 crop
    photo = tmp_path / "photo.png"
    Image.fromarray(arr).save(photo)

    seen = infer.input_loader(run.eval_spec)(photo)
    assert tuple(seen.shape[-2:]) == IMG_SIZE
    assert bool((seen[1] > seen[0]).all()), "the run's input shows red: its center crop was not applied"
    plain = infer.input_loader(eval_spec())(photo)  # the same resize without the crop shows the red border
    assert bool(plain[0, 0, 0] > plain[1, 0, 0])


def test_draft_size_only_when_spec_starts_with_resize():
    assert infer.draft_size([{"op": "Resize", "size": [128, 96]}]) == (128, 96)
    assert infer.draft_size([{"op": "Resize", "size": 100}]) == (100, 100)
    assert infer.draft_size([{"op": "CenterCrop", "size": [256, 192]}, {"op": "Resize", "size": [128, 96]}]) is None


def test_input_shortcuts_give_the_plain_pipelines_numbers(tmp_path):
    """A Resize to the draft-decoded size is skipped and Normalize runs fused: same tensor either way."""
    from core.data import images
    from core.specs import transforms

    rng = np.random.default_rng(3)
    photo = tmp_path / "p.jpg"
    Image.fromarray(rng.integers(0, 255, size=(128, 96, 3), dtype=np.uint8)).save(photo, quality=90)
    spec = eval_spec((64, 48))  # Resize to exactly the 1/2-scale draft, then Normalize
    fast = infer.input_loader(spec)
    plain = transforms.build_pipeline(spec)(images.open_rgb(photo, min_size=(64, 48)))
    assert fast.steps.resize_only_to == (64, 48)
    torch.testing.assert_close(fast(photo), plain, rtol=0, atol=1e-5)
    other = eval_spec((60, 45))  # a real resize after the draft: the prefix runs
    torch.testing.assert_close(
        infer.input_loader(other)(photo),
        transforms.build_pipeline(other)(images.open_rgb(photo, min_size=(60, 45))),
        rtol=0,
        atol=1e-5,
    )


def test_predictions_run_through_a_fused_copy_with_the_same_answers(models_dir, tmp_path):
    data = make_eval(tmp_path / "eval", n=4)
    run = infer.load_run(make_run(models_dir, "fused"), device="cpu")
    assert run.net is not run.model
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in run.net.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in run.model.modules()), "the loaded weights stay as saved"
    pipeline = infer.input_loader(run.eval_spec)
    batch = torch.stack([pipeline(p) for p in sorted((data / "images").iterdir())])
    with torch.inference_mode():
        torch.testing.assert_close(run.net(batch), run.model(batch), rtol=1e-4, atol=1e-5)


def test_tta_averages_the_mirrored_image(models_dir, tmp_path):
    data = make_eval(tmp_path / "eval", n=4)
    mirrored = tmp_path / "mirrored"
    mirrored.mkdir()
    for path in sorted((data / "images").iterdir()):
        Image.open(path).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirrored / path.name)
    run = infer.load_run(make_run(models_dir, "r1"), device="cpu")
    plain = infer.predict([run], mirrored.parent / "eval" / "images")
    flipped = infer.predict([run], mirrored)
    tta = infer.predict([run], data / "images", tta=True)
    cols = [f"p{k}" for k in range(18)]
    expected = (plain.frame[cols].to_numpy() + flipped.frame[cols].to_numpy()) / 2
    assert np.allclose(tta.frame[cols].to_numpy(), expected, atol=1e-5)
    assert not np.allclose(plain.frame[cols].to_numpy(), expected, atol=1e-5)  # the flip changed something


def test_ensemble_averages_and_refuses_mixed_tasks(models_dir, tmp_path):
    data = make_eval(tmp_path / "eval", n=3)
    a, b = make_run(models_dir, "a", seed=1), make_run(models_dir, "b", seed=2)
    cols = [f"p{k}" for k in range(18)]
    pa, pb = (infer.predict([r], data).frame[cols].to_numpy() for r in (a, b))
    both = infer.predict([a, b], data)
    assert np.allclose(both.frame[cols].to_numpy(), (pa + pb) / 2, atol=1e-5)
    assert [m["run"] for m in both.members] == ["a", "b"]

    with pytest.raises(ConfigError, match="task 'class'.*'mask'"):
        infer.predict([a, make_run(models_dir, "m", task="mask")], data)
    renamed = make_run(models_dir, "c", classes=[f"c{k}" for k in range(18)])
    with pytest.raises(ConfigError, match="different classes"):
        infer.predict([a, renamed], data)


def test_attribute_run_cannot_make_a_submission(models_dir, tmp_path):
    data = make_eval(tmp_path / "eval", n=2)
    with pytest.raises(SubmissionError, match="needs the 18-class task"):
        infer.predict([make_run(models_dir, "m", task="mask")], data)


def test_checkpoint_that_disagrees_with_its_run_is_refused(models_dir):
    run = runs.RunFolder(make_run(models_dir, "r1"))
    config = runs.read_config(run)
    runs.write_config(run, {**config, "task": "gender"})
    with pytest.raises(CheckpointError, match="task mismatch"):
        infer.load_run(run.root)
    runs.write_config(run, {**config, "model": "resnet18"})
    with pytest.raises(CheckpointError, match="architecture mismatch"):
        infer.load_run(run.root)
    # weights of another class count under the same name: the architecture check names the class count
    ckpt = runs.load_checkpoint(run.best_checkpoint)
    runs.write_config(run, config)
    runs.save_checkpoint(run.best_checkpoint, {**ckpt, "classes": ckpt["classes"][:3]})
    with pytest.raises(CheckpointError, match="class"):
        infer.load_run(run.root)


def test_missing_and_unreadable_images_stop_before_any_output(models_dir, tmp_path):
    data = make_eval(tmp_path / "eval", n=5)
    ids = pd.read_csv(data / "info.csv")["ImageID"].tolist()
    (data / "images" / ids[1]).unlink()
    (data / "images" / ids[3]).write_bytes(b"")  # present but not an image
    out = tmp_path / "out" / "submission.csv"
    with pytest.raises(infer.EvalImagesError) as caught:
        infer.predict_to_files([make_run(models_dir, "r1")], data, out)
    named = " ".join(caught.value.images)
    assert ids[1] in named and ids[3] not in named  # missing files are caught before any model work
    assert not out.parent.exists()

    (data / "images" / ids[1]).write_bytes((data / "images" / ids[0]).read_bytes())
    with pytest.raises(infer.EvalImagesError) as caught:
        infer.predict_to_files([make_run(models_dir, "r2")], data, out)
    assert [ids[3] in s for s in caught.value.images] == [True]  # then the undecodable one, by name
    assert not out.parent.exists()


def test_folder_of_images(models_dir, tmp_path):
    flat = tmp_path / "flat"
    make_eval(tmp_path / "e", n=3)
    (tmp_path / "e" / "images").rename(flat)
    out = tmp_path / "pred.csv"
    summary = infer.predict_to_files([make_run(models_dir, "r1")], flat, out)
    table = pd.read_csv(out)
    assert summary["kind"] == "images" and len(table) == 3
    assert set(table.columns) == {"id", "label", "pred", "class_name"}


def test_cli_predict_and_job(models_dir, tmp_path, capsys):
    from core.__main__ import main

    data = make_eval(tmp_path / "eval", n=3)
    run = make_run(models_dir, "r1")
    out = tmp_path / "sub.csv"
    assert main(["predict", "--run", "r1", "--run", str(run), "--tta", "--data", str(data), "--out", str(out)]) == 0
    assert submission.validate_submission(out, data / "info.csv") == []
    assert main(["validate-submission", str(out), "--info", str(data / "info.csv")]) == 0
    assert main(["predict", "--run", "nope", "--data", str(data), "--out", str(out)]) == 2
    assert "not found" in capsys.readouterr().err

    job = predjobs.create_prediction_job(["r1"], data, tta=False)
    assert runs.read_config(job)["runs"] == [str(run.resolve())]
    assert main(["predict", "--job", str(job.root)]) == 0
    assert runs.read_status(job)["state"] == "completed"
    assert predjobs.job_summary(job.root)["validator"]["valid"] is True
    assert (job.root / "submission.csv").is_file()


def test_job_with_missing_images_fails_naming_them(models_dir, tmp_path):
    from core.__main__ import main

    data = make_eval(tmp_path / "eval", n=3)
    gone = pd.read_csv(data / "info.csv")["ImageID"].iloc[2]
    (data / "images" / gone).unlink()
    job = predjobs.create_prediction_job([make_run(models_dir, "r1")], data, tta=False)
    main(["predict", "--job", str(job.root)])
    status = runs.read_status(job)
    assert status["state"] == "failed" and gone in status["error"]
    assert gone in json.loads((job.root / predjobs.IMAGE_PROBLEMS_FILE).read_text())["images"][0]
    assert not (job.root / "submission.csv").exists()


def test_class_folder_dataset_keeps_its_labels(models_dir, tmp_path):
    root = tmp_path / "classes"
    for name, shade in (("cats", 30), ("dogs", 200)):
        (root / name).mkdir(parents=True)
        for k in range(2):
            Image.new("RGB", (48, 64), (shade, k * 50, 90)).save(root / name / f"{name}{k}.png")
    out = tmp_path / "pred.csv"
    summary = infer.predict_to_files([make_run(models_dir, "r1")], root, out)
    table = pd.read_csv(out)
    assert summary["kind"] == "dataset" and len(table) == 4
    assert sorted(table["label"].tolist()) == [0, 0, 1, 1]
    assert table["id"].str.startswith(("cats/", "dogs/")).all()
