"""The GPU path: mixed precision, channels_last, the uint8 cache normalised on the device, prefetching,
torch.compile with its fallback, and inference under autocast.

Tests marked ``gpu`` need CUDA and are skipped without it (``pytest -m gpu`` on a GPU machine; see
bench/gpu_check.sh). The others run the same code paths on the CPU where torch allows it (bfloat16 and
float16 autocast, the GradScaler, the device-side Normalize, the compile fallback), so they cannot rot
on machines without a GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core import runs
from core.specs import transforms
from core.specs.pipeline import PrefixThenRest
from core.training import loader
from core.training.config import TrainConfig
from core.training.loop import run_training
from core.training.parts import amp_dtype

REPO_ROOT = Path(__file__).resolve().parent.parent
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WORKBENCH_TRAIN_THREADS", "1")
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


class Ctx:
    def __init__(self):
        self.messages: list[str] = []

    def heartbeat(self, step=None, total_steps=None, epoch=None, message=None, force=False):
        if message:
            self.messages.append(message)

    def cancel_requested(self) -> bool:
        return False


def make_run(parent, name: str, data, size=(32, 24), **fields) -> runs.RunFolder:
    train_spec, eval_spec = transforms.preset("baseline", size)
    base = dict(
        data=str(data),
        task="mask",
        img_size=list(size),
        train_spec=train_spec,
        eval_spec=eval_spec,
        batch_size=16,
        max_steps=4,
        log_every=1,
        warmup_steps=0,
        seed=0,
    )
    run = runs.create_run_folder(parent, name)
    runs.write_config(run, {**TrainConfig(**{**base, **fields}).to_dict(), "kind": "train"})
    return run


def cached_source(tmp_path, spec, n: int = 12, device_finish: bool = False) -> loader.CachedSource:
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(rng.integers(0, 255, (20, 16, 3), dtype=np.uint8)).save(paths[-1])
    steps = PrefixThenRest(spec)
    cache, skipped, _ = loader.open_or_build_cache(paths, steps.prefix_spec, (20, 16), tmp_path / "cache")
    return loader.CachedSource(cache, steps, skipped, device_finish=device_finish)


NORMALIZE = {"op": "Normalize", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
SPECS = {
    "normalize": [{"op": "Resize", "size": [20, 16]}, NORMALIZE],
    "flip_normalize": [{"op": "Resize", "size": [20, 16]}, {"op": "RandomHorizontalFlip", "p": 0.5}, NORMALIZE],
}


# ---- on the CPU: the same code paths -------------------------------------------------------------------


def test_amp_modes_resolve_per_device():
    cpu = torch.device("cpu")
    assert [amp_dtype(m, cpu) for m in ("auto", "off", "bf16", "fp16")] == [None, None, torch.bfloat16, torch.float16]
    if CUDA:
        gpu = torch.device("cuda")
        assert amp_dtype("auto", gpu) == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    assert loader.resolve_workers(-1, "cpu") == 0 and loader.resolve_workers(3, "cpu") == 3
    assert 1 <= loader.resolve_workers(-1, "cuda", processes=2) <= 8


@pytest.mark.parametrize("spec", sorted(SPECS))
def test_uint8_batches_finished_on_the_device_equal_the_cpu_path(tmp_path, spec):
    """A cached source for the GPU hands out uint8 (flips already applied per sample) and Normalize runs
    where the batch goes; here the device is the CPU, and the numbers are the CPU path's exactly."""
    positions, seeds = np.arange(12)[::-1].copy(), np.arange(12, dtype=np.int64) * 7919
    plain = list(cached_source(tmp_path, SPECS[spec]).batches(positions, seeds, 5))
    deferred = list(cached_source(tmp_path, SPECS[spec], device_finish=True).batches(positions, seeds, 5))
    assert all(b.images.dtype == torch.uint8 and b.finish is not None for b in deferred)
    for a, b in zip(plain, deferred, strict=True):
        torch.testing.assert_close(b.to(torch.device("cpu"), channels_last=True), a.images, rtol=0, atol=0)


def test_prefetched_batches_are_the_same_and_an_early_stop_ends_the_thread(tmp_path):
    import threading

    source = cached_source(tmp_path, SPECS["flip_normalize"])
    positions, seeds = np.arange(12), np.arange(12, dtype=np.int64)
    plain = list(source.batches(positions, seeds, 2))
    ahead = list(loader.prefetched(source.batches(positions, seeds, 2), depth=2, pin=False))
    assert all(torch.equal(a.images, b.images) for a, b in zip(plain, ahead, strict=True)) and len(ahead) == 6
    stream = loader.prefetched(source.batches(positions, seeds, 2), depth=1, pin=False)
    next(stream)
    stream.close()  # what the training loop does on a cancel
    assert not any(t.name == "batch-prefetch" and t.is_alive() for t in threading.enumerate())


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_trains_on_the_cpu_and_predicts_in_full_precision(demo_root, tmp_path, amp):
    from core.evaluation import infer

    run = make_run(tmp_path, amp, demo_root, amp=amp, device="cpu")
    ctx = Ctx()
    run_training(run, ctx)
    assert any(f"autocast {'bfloat16' if amp == 'bf16' else 'float16'}" in m for m in ctx.messages), ctx.messages
    last = runs.load_checkpoint(run.last_checkpoint)
    assert all(v.dtype == torch.float32 for v in last["model"].values() if v.is_floating_point())  # fp32 weights
    assert bool(last["scaler"]) == (amp == "fp16")  # float16 scales its loss; bfloat16 needs no scaler
    losses = runs.read_metrics(run)["train_loss"].dropna()
    assert len(losses) == 4 and np.isfinite(losses).all()
    member = infer.load_run(run.root, device="cpu")
    assert member.amp_dtype is None  # inference on a CPU: full precision
    preds = runs.read_predictions(run.val_predictions)
    probs, failures = infer.predict_probabilities(member, preds["path"].tolist()[:8])
    assert not failures and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_a_failing_compile_falls_back_to_eager_with_the_reason_logged(demo_root, tmp_path, monkeypatch):
    def no_compiler(model, *args, **kwargs):
        raise RuntimeError("no C++ compiler here")

    monkeypatch.setattr(torch, "compile", no_compiler)
    ctx = Ctx()
    run_training(make_run(tmp_path, "refused", demo_root, compile=True, device="cpu", max_steps=2), ctx)
    assert any("torch.compile unavailable" in m and "no C++ compiler here" in m for m in ctx.messages)

    def breaks_when_called(model, *args, **kwargs):
        def compiled(*a, **k):
            raise RuntimeError("backend compiler failed: unsupported op")

        return compiled

    monkeypatch.setattr(torch, "compile", breaks_when_called)
    ctx = Ctx()
    run = make_run(tmp_path, "broken", demo_root, compile=True, device="cpu", max_steps=2)
    run_training(run, ctx)
    failed = [m for m in ctx.messages if "torch.compile failed, training uncompiled" in m]
    assert len(failed) == 1 and "unsupported op" in failed[0]  # said once; every step then runs eagerly
    assert runs.load_checkpoint(run.last_checkpoint)["step"] == 2


@pytest.mark.slow
def test_a_real_compile_trains_on_the_cpu(demo_root, tmp_path):
    """~90 s on two busy cores (inductor compiles forward and backward): marked slow."""
    ctx = Ctx()
    run = make_run(tmp_path, "compiled", demo_root, compile=True, device="cpu", max_steps=2)
    run_training(run, ctx)
    assert not any("torch.compile" in m for m in ctx.messages), ctx.messages  # no fallback was needed
    assert not any(k.startswith("_orig_mod.") for k in runs.load_checkpoint(run.last_checkpoint)["model"])


# ---- on CUDA ----------------------------------------------------------------------------------------------


@pytest.mark.gpu
@needs_cuda
def test_cuda_run_with_amp_completes_and_its_checkpoint_predicts_on_the_cpu(demo_root, tmp_path):
    from core.evaluation import infer

    run = make_run(tmp_path, "cuda", demo_root, size=(64, 48), device="cuda", max_steps=8)
    ctx = Ctx()
    run_training(run, ctx)
    expected = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    assert any("on cuda" in m and f"autocast {expected}" in m and "channels_last" in m for m in ctx.messages)
    assert torch.backends.cudnn.benchmark
    losses = runs.read_metrics(run)["train_loss"].dropna()
    assert len(losses) == 8 and np.isfinite(losses).all()
    preds = runs.read_predictions(run.val_predictions)
    paths = preds["path"].tolist()
    on_cpu, failures = infer.predict_probabilities(infer.load_run(run.root, device="cpu"), paths)
    assert not failures
    # The validation predictions were made on the GPU under autocast: the CPU agrees to autocast's rounding.
    assert np.abs(on_cpu - preds[["p0", "p1", "p2"]].to_numpy()).max() < 0.05
    on_gpu, _ = infer.predict_probabilities(infer.load_run(run.root, device="cuda"), paths)
    assert np.abs(on_gpu - on_cpu).max() < 0.05 and (on_gpu.argmax(1) == on_cpu.argmax(1)).mean() >= 0.9


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("spec", sorted(SPECS))
def test_uint8_cache_normalised_on_the_gpu_equals_the_cpu_path(tmp_path, spec):
    positions, seeds = np.arange(12), np.arange(12, dtype=np.int64) * 31
    plain = list(cached_source(tmp_path, SPECS[spec]).batches(positions, seeds, 5))
    on_gpu = loader.prefetched(cached_source(tmp_path, SPECS[spec], device_finish=True).batches(positions, seeds, 5))
    for a, b in zip(plain, on_gpu, strict=True):
        assert b.images.is_pinned()
        x = b.to(torch.device("cuda"), channels_last=True)
        assert x.is_cuda and x.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(x.cpu(), a.images, rtol=0, atol=1e-6)


@pytest.mark.gpu
@needs_cuda
def test_fp16_with_a_grad_scaler_resumes_on_cuda(demo_root, tmp_path):
    run = make_run(tmp_path, "fp16", demo_root, device="cuda", amp="fp16", max_steps=8)
    run_training(run, Ctx())
    last = runs.load_checkpoint(run.last_checkpoint)
    assert last["scaler"] and last["scaler"]["scale"] > 0


@pytest.mark.gpu
@needs_cuda
@pytest.mark.slow
def test_compiled_cuda_run_completes(demo_root, tmp_path):
    ctx = Ctx()
    run = make_run(tmp_path, "compiled", demo_root, size=(64, 48), device="cuda", compile=True, max_steps=6)
    run_training(run, ctx)
    assert not any("torch.compile" in m for m in ctx.messages), ctx.messages
    assert runs.load_checkpoint(run.last_checkpoint)["step"] == 6


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_two_gpus_through_torchrun(demo_root, tmp_path):
    folder = tmp_path / "models" / "two-gpus"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "WORKBENCH_MODELS_DIR": str(tmp_path / "models")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "core",
            "train",
            "--run",
            str(folder),
            "--data",
            str(demo_root),
            "--task",
            "mask",
            "--max-steps",
            "8",
            "--img-size",
            "64",
            "48",
            "--batch-size",
            "32",
            "--device",
            "cuda",
            "--nproc",
            "2",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = runs.open_run(folder)
    assert runs.read_status(run)["state"] == "completed"
    assert runs.load_checkpoint(run.last_checkpoint)["step"] == 8


def test_the_gpu_bench_runs_end_to_end_in_its_cpu_smoke_mode(tmp_path):
    """bench/gpu.py is run on a GPU machine only now and then: its CPU smoke mode keeps it from rotting."""
    import json

    repo = Path(__file__).resolve().parent.parent
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(repo / "bench" / "gpu.py"), "--cpu-smoke", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(out.read_text())["models"]["small_cnn"]
    assert "error" not in figures, figures
    assert figures["train"]["fp32"]["images_per_s"] > 0 and figures["loader"]["cache_images_per_s"] > 0
