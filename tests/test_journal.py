"""The run journal (names, tags, stars, notes, archive) and deleting runs with their decoded-image caches."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from core import runs
from core.__main__ import main
from core.errors import RunError
from core.runs import deletion, jobs, journal
from core.specs import transforms
from core.training.config import TrainConfig
from tests.conftest import wait_state


@pytest.fixture
def env(jobs_env):
    return jobs_env  # conftest: private models and cache folders, one job slot


def tiny_config(data: Path, size=(32, 24), **fields) -> dict:
    train, eval_ = transforms.preset("baseline", size)
    cfg = TrainConfig(
        data=str(data),
        task="mask",
        epochs=1,
        batch_size=16,
        img_size=list(size),
        train_spec=train,
        eval_spec=eval_,
        **fields,
    )
    return {**cfg.to_dict(), "kind": "train"}


def make_run(env: Path, name: str, config: dict | None = None) -> runs.RunFolder:
    run = runs.create_run_folder(env / "models", name)
    runs.write_config(run, config or {"kind": "train", "model": "small_cnn", "task": "mask"})
    runs.write_status(run, state="completed")
    return run


def listed(capsys, *args: str) -> str:
    capsys.readouterr()
    assert main(["jobs", "list", *args]) == 0
    return capsys.readouterr().out


# ---- journal ----------------------------------------------------------------------------------------


def test_notes_tags_star_and_name_persist_on_disk(env, capsys):
    run = make_run(env, "r1")
    make_run(env, "r2")
    assert main(["jobs", "note", "r1", "lr", "too", "high?"]) == 0
    assert main(["jobs", "note", str(run.root), "**yes**: loss diverged"]) == 0
    assert main(["jobs", "tag", "r1", "baseline", "lr-sweep", "baseline"]) == 0
    assert main(["jobs", "star", "r1"]) == 0
    assert main(["jobs", "name", "r1", "first", "try"]) == 0

    # Everything is read back from the files (what a restarted app sees), not from memory.
    assert (run.root / "notes.md").read_text() == "lr too high?\n\n**yes**: loss diverged\n"
    stored = json.loads((run.root / "journal.json").read_text())
    assert stored["tags"] == ["baseline", "lr-sweep"] and stored["starred"] is True and stored["name"] == "first try"
    assert journal.read_notes(runs.RunFolder(run.root)) == "lr too high?\n\n**yes**: loss diverged\n"

    assert main(["jobs", "tag", "r1", "--remove", "baseline"]) == 0
    assert main(["jobs", "star", "r1", "--off"]) == 0
    again = journal.read_journal(runs.RunFolder(run.root))
    assert again["tags"] == ["lr-sweep"] and again["starred"] is False

    journal.set_starred(run)
    frame = journal.annotate(jobs.list_runs())
    row = frame.set_index("id").loc["r1"]
    assert row["name"] == "first try" and row["tags"] == ["lr-sweep"] and bool(row["starred"])
    assert list(journal.annotate(jobs.list_runs(), tag="lr-sweep")["id"]) == ["r1"]
    assert list(journal.annotate(jobs.list_runs(), starred=True)["id"]) == ["r1"]
    assert journal.all_tags(frame) == ["lr-sweep"]
    out = listed(capsys, "--tag", "lr-sweep")
    assert "first try" in out and "r2" not in out


def test_bad_tag_and_missing_run_are_one_line_errors(env, capsys):
    make_run(env, "r1")
    assert main(["jobs", "tag", "r1", "two words"]) == 2
    assert "tag 'two words' is not allowed" in capsys.readouterr().err
    assert main(["jobs", "note", "nope", "text"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: run nope not found") and len(err.strip().splitlines()) == 1


def test_damaged_journal_reads_as_defaults_and_is_repaired_by_the_next_edit(env):
    run = make_run(env, "r1")
    (run.root / "journal.json").write_text("{not json")
    assert journal.read_journal(run) == {**journal.DEFAULTS, "tags": []}
    assert journal.add_tags(run, ["kept"])["tags"] == ["kept"]
    assert journal.read_journal(run)["tags"] == ["kept"]


def test_archive_hides_a_run_and_restore_shows_it(env, capsys):
    make_run(env, "r1")
    make_run(env, "r2")
    assert main(["jobs", "archive", "r1"]) == 0
    assert list(journal.annotate(jobs.list_runs())["id"]) == ["r2"]
    assert "r1" not in listed(capsys)
    assert "archived" in listed(capsys, "--all")
    assert (env / "models" / "r1" / "config.json").is_file()  # still on disk
    assert main(["jobs", "archive", "r1", "--restore"]) == 0
    assert sorted(journal.annotate(jobs.list_runs())["id"]) == ["r1", "r2"]


def test_annotate_keeps_an_empty_frame_well_formed():
    frame = journal.annotate(pd.DataFrame(columns=jobs.RUN_COLUMNS))
    assert frame.empty and {"tags", "starred", "archived", "sweep", "trial"} <= set(frame.columns)


# ---- delete ------------------------------------------------------------------------------------------


def test_delete_refuses_an_active_run_then_deletes_it(env, capsys):
    run = make_run(env, "held", {"kind": "hold", "model": "small_cnn", "task": "mask"})
    release = env / "release"
    jobs.launch(run, ["jobs", "hold", "--run", str(run.root), "--until", str(release)])
    wait_state(run, "running")
    with pytest.raises(RunError, match="is running .* cancel it before deleting it"):
        deletion.delete_run(run)
    assert main(["jobs", "delete", "held", "--yes"]) == 2
    assert "cancel it before deleting it" in capsys.readouterr().err
    assert run.root.is_dir()
    release.touch()
    wait_state(run, "completed")
    assert main(["jobs", "delete", "held"]) == 2  # no terminal to confirm on: --yes is required
    assert "--yes" in capsys.readouterr().err
    assert main(["jobs", "delete", "held", "--yes"]) == 0
    assert not run.root.exists()


class Ctx:
    def heartbeat(self, **fields) -> None:
        pass

    def cancel_requested(self) -> bool:
        return False


@pytest.mark.slow
def test_delete_removes_cache_entries_no_other_run_uses(env, demo_root):
    import torch

    from core.training.loop import run_training

    torch.set_num_threads(1)
    decoded = env / "cache" / "decoded"
    a = make_run(env, "a", tiny_config(demo_root))
    run_training(a, Ctx())
    built = sorted(p.name for p in decoded.iterdir())
    assert built and all(p.split(".")[0] in deletion.run_cache_keys(a) for p in built)
    # b reads the same cache (same images, same Resize prefix, another learning rate); c another size.
    b = make_run(env, "b", tiny_config(demo_root, lr=0.01))
    c = make_run(env, "c", tiny_config(demo_root, size=(40, 32)))
    assert deletion.run_cache_keys(b) == deletion.run_cache_keys(a) != deletion.run_cache_keys(c)

    report = deletion.delete_run("a")
    assert not a.root.exists() and report["cache_removed"] == []
    assert sorted(p.name for p in decoded.iterdir()) == built  # b still needs them
    report = deletion.delete_run(b)
    assert not b.root.exists() and sorted(Path(p).name for p in report["cache_removed"]) == built
    assert list(decoded.iterdir()) == []
    assert c.root.is_dir()
