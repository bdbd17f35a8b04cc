"""Fine-tuning controls: head-only epochs really freeze the backbone, the backbone's learning-rate
multiplier reaches the optimizer, the weight EMA is what evaluation and best.pt use, and a resumed
run continues the EMA exactly."""

from __future__ import annotations

import pytest
import torch

from core import runs
from core.errors import ConfigError, JobCancelled
from core.specs import transforms
from core.training import finetune, models
from core.training.config import TrainConfig
from core.training.loop import make_optimizer, make_scheduler, run_training


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WORKBENCH_TRAIN_THREADS", "1")  # bit-exact comparisons need one fixed thread count
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


class Ctx:
    def __init__(self, cancel_at: int | None = None):
        self.cancel_at, self.step = cancel_at, 0

    def heartbeat(self, step=None, total_steps=None, epoch=None, message=None, force=False):
        self.step = step if step is not None else self.step

    def cancel_requested(self) -> bool:
        return self.cancel_at is not None and self.step >= self.cancel_at


def make_run(parent, name: str, data, **fields) -> runs.RunFolder:
    train_spec, eval_spec = transforms.preset("baseline", (32, 24))
    base = dict(
        data=str(data),
        task="mask",
        img_size=[32, 24],
        train_spec=train_spec,
        eval_spec=eval_spec,
        batch_size=16,
        log_every=1,
        warmup_steps=0,
        device="cpu",
        seed=0,
    )
    run = runs.create_run_folder(parent, name)
    runs.write_config(run, {**TrainConfig(**{**base, **fields}).to_dict(), "kind": "train"})
    return run


def split_state(state: dict, model: torch.nn.Module) -> tuple[dict, dict]:
    """(head entries, backbone entries) of a state dict: parameters and buffers alike."""
    head = models.head_weight_key(model).rpartition(".")[0] + "."
    return (
        {k: v for k, v in state.items() if k.startswith(head)},
        {k: v for k, v in state.items() if not k.startswith(head)},
    )


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- what the config asks for -----------------------------------------------------------------------------


def test_auto_values_fine_tune_a_pretrained_backbone_and_leave_scratch_runs_alone():
    scratch = TrainConfig()
    assert (finetune.freeze_epochs(scratch), finetune.backbone_lr_mult(scratch)) == (0, 1.0)
    pretrained = TrainConfig(model="resnet18", pretrained=True)  # validated only: nothing is downloaded
    assert (finetune.freeze_epochs(pretrained), finetune.backbone_lr_mult(pretrained)) == (1, 0.1)
    chosen = pretrained.replace(freeze_epochs=0, backbone_lr_mult=0.5)
    assert (finetune.freeze_epochs(chosen), finetune.backbone_lr_mult(chosen)) == (0, 0.5)
    for bad in ({"freeze_epochs": -2}, {"backbone_lr_mult": -0.5}, {"ema_decay": 1.0}, {"amp": "fp8"}, {"nproc": -1}):
        with pytest.raises(ConfigError, match=f"^{next(iter(bad))}:"):
            TrainConfig.from_dict({**scratch.to_dict(), **bad})


def test_backbone_multiplier_reaches_the_optimizer():
    model = models.build_model("small_cnn", 3)
    cfg = TrainConfig(lr=0.01, backbone_lr_mult=0.1, warmup_steps=0, scheduler="cosine")
    optimizer = make_optimizer(cfg, model)
    head, backbone = optimizer.param_groups
    assert [id(p) for p in head["params"]] == [id(p) for p in model.classifier.parameters()]
    assert len(backbone["params"]) == len(list(model.parameters())) - 2
    assert (head["lr"], backbone["lr"]) == (pytest.approx(0.01), pytest.approx(0.001))
    scheduler = make_scheduler(cfg, optimizer, spe=10, total_steps=100)
    for _ in range(30):
        optimizer.step()
        scheduler.step()
    first, second = scheduler.get_last_lr()
    assert 0 < first < 0.01 and second == pytest.approx(first * 0.1)  # the schedule scales both groups
    assert len(make_optimizer(TrainConfig(), model).param_groups) == 1  # a multiplier of 1: one group, as before


# ---- in a run ---------------------------------------------------------------------------------------------


def test_head_only_epochs_freeze_the_backbone_then_everything_trains(demo_root, tmp_path):
    """4 steps per epoch; the cancel lands before the first step of epoch 2 (the first unfrozen one)."""
    run = make_run(tmp_path, "freeze", demo_root, epochs=2, freeze_epochs=1)
    with pytest.raises(JobCancelled):
        run_training(run, Ctx(cancel_at=4))
    torch.manual_seed(0)
    initial = models.build_model("small_cnn", 3)
    head0, backbone0 = split_state(initial.state_dict(), initial)
    frozen = runs.load_checkpoint(run.last_checkpoint)
    assert frozen["step"] == 4
    head1, backbone1 = split_state(frozen["model"], initial)
    assert same(backbone1, backbone0)  # weights and BatchNorm statistics, bit for bit
    assert not same(head1, head0)

    run_training(run, Ctx())  # resumed: epoch 2 trains everything
    head2, backbone2 = split_state(runs.load_checkpoint(run.last_checkpoint)["model"], initial)
    changed = [k for k in backbone0 if not torch.equal(backbone2[k], backbone0[k])]
    assert "features.0.0.weight" in changed and "features.0.1.running_mean" in changed


def test_ema_weights_are_evaluated_and_kept_in_best(demo_root, tmp_path):
    run = make_run(tmp_path, "ema", demo_root, max_steps=4, ema_decay=0.9, lr=1e-2)  # one epoch: best is last
    run_training(run, Ctx())
    last, best = runs.load_checkpoint(run.last_checkpoint), runs.load_checkpoint(run.best_checkpoint)
    assert last["ema"]["backend"] in ("timm.ModelEmaV3", "torch AveragedModel")
    assert not same(last["ema"]["model"], last["model"])  # the average lags the weights
    assert same(best["model"], last["ema"]["model"])  # best.pt holds what was evaluated: the EMA

    # The validation predictions are the EMA's: predicting with best.pt gives them again.
    from core.evaluation import infer

    preds = runs.read_predictions(run.val_predictions)
    probs, _ = infer.predict_probabilities(infer.load_run(run.root, device="cpu"), preds["path"].tolist())
    assert abs(probs - preds[["p0", "p1", "p2"]].to_numpy()).max() < 1e-4


def test_resume_continues_the_ema_exactly(demo_root, tmp_path):
    fields = dict(max_steps=8, ema_decay=0.9, lr=1e-2)
    straight = make_run(tmp_path, "straight", demo_root, **fields)
    run_training(straight, Ctx())
    stopped = make_run(tmp_path, "stopped", demo_root, **fields)
    with pytest.raises(JobCancelled):
        run_training(stopped, Ctx(cancel_at=6))  # mid-epoch 2
    run_training(stopped, Ctx())
    a, b = runs.load_checkpoint(straight.last_checkpoint), runs.load_checkpoint(stopped.last_checkpoint)
    assert same(a["ema"]["model"], b["ema"]["model"]) and same(a["model"], b["model"])
    assert (
        runs.read_metrics(straight)["val_loss"].dropna().tolist()
        == runs.read_metrics(stopped)["val_loss"].dropna().tolist()
    )


def test_both_ema_backends_average_the_same_way():
    torch.manual_seed(0)
    model = models.build_model("small_cnn", 3)
    timm_ema = finetune.WeightEma(model, 0.99, prefer_timm=True)
    torch_ema = finetune.WeightEma(model, 0.99, prefer_timm=False)
    assert torch_ema.backend == "torch AveragedModel"
    for step in range(1, 6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        timm_ema.update(model, step)
        torch_ema.update(model, step)
    a, b = timm_ema.module.state_dict(), torch_ema.module.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    assert not torch.equal(a["classifier.weight"], model.state_dict()["classifier.weight"])
    restored = finetune.WeightEma(models.build_model("small_cnn", 3), 0.99, prefer_timm=False)
    restored.load_state(torch_ema.state())
    assert same(restored.module.state_dict(), b) and int(restored._averaged.n_averaged) == 5
