"""``python -m core check-spec TRAIN.json EVAL.json``: findings one per line, exit 0 / 1 / 2."""

from __future__ import annotations

import json
import subprocess
import sys

from core import specs as T
from core.__main__ import main
from tests.conftest import REPO_ROOT

RESIZE = {"op": "Resize", "size": [128, 96]}


def write(path, obj) -> str:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(path)


def test_matching_pair_exits_0_and_prints_nothing(tmp_path, capsys):
    train, eval_ = T.PRESETS["light"]
    code = main(["check-spec", write(tmp_path / "t.json", train), write(tmp_path / "e.json", eval_)])
    out = capsys.readouterr()
    assert code == 0 and out.out == "" and out.err == ""


def test_the_competition_mistake_exits_1_with_one_line_per_finding(tmp_path, capsys):
    train = [{"op": "CenterCrop", "size": [320, 256]}, RESIZE, {"op": "Grayscale"}]
    code = main(["check-spec", write(tmp_path / "t.json", train), write(tmp_path / "e.json", [RESIZE])])
    lines = capsys.readouterr().out.splitlines()
    assert code == 1
    assert lines == [
        "training crops to 320×256 before resizing; evaluation does not crop",
        "training always turns the image grey (Grayscale); evaluation does not",
    ]


def test_input_size_option_changes_the_simulated_photo(tmp_path, capsys):
    # On a 320x256 input the centre crop keeps the whole picture: nothing differs.
    train = [{"op": "CenterCrop", "size": [320, 256]}, RESIZE]
    args = ["check-spec", write(tmp_path / "t.json", train), write(tmp_path / "e.json", [RESIZE])]
    assert main([*args, "--input-size", "320", "256"]) == 0
    assert main(args) == 1


def test_bad_json_and_bad_specs_exit_2_with_one_line_naming_the_file(tmp_path, capsys):
    good = write(tmp_path / "good.json", [RESIZE])
    cases = {
        "broken.json": '[{"op": "Resize"',
        "unknown.json": [{"op": "Resise", "size": [1, 1]}],
        "range.json": [{"op": "RandomHorizontalFlip", "p": 2}],
        "object.json": {"op": "Resize"},
    }
    for name, content in cases.items():
        path = write(tmp_path / name, content)
        assert main(["check-spec", good, path]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("error: ") and name in err and len(err.strip().splitlines()) == 1, err
    assert main(["check-spec", str(tmp_path / "missing.json"), good]) == 2
    assert "missing.json" in capsys.readouterr().err


def test_real_process_exit_codes(tmp_path):
    train = write(tmp_path / "t.json", [{"op": "CenterCrop", "size": [320, 256]}, RESIZE])
    eval_ = write(tmp_path / "e.json", [RESIZE])
    bad = write(tmp_path / "bad.json", "not json")

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "core", "check-spec", *args], cwd=REPO_ROOT, capture_output=True, text=True
        )

    mismatch = run(train, eval_)
    assert mismatch.returncode == 1 and "evaluation does not crop" in mismatch.stdout
    assert run(eval_, eval_).returncode == 0
    invalid = run(train, bad)
    assert invalid.returncode == 2 and "Traceback" not in invalid.stderr and "bad.json" in invalid.stderr


def test_a_saved_pair_file_alone(tmp_path, capsys):
    crop = [{"op": "CenterCrop", "size": [320, 256]}, RESIZE]
    path = T.save_named_pair("mixed", crop, [RESIZE], folder=tmp_path)
    assert main(["check-spec", str(path)]) == 1
    assert capsys.readouterr().out == "training crops to 320×256 before resizing; evaluation does not crop\n"
    assert main(["check-spec", str(T.save_named_pair("same", crop, crop, folder=tmp_path))]) == 0
    assert main(["check-spec", write(tmp_path / "one.json", crop)]) == 2
    assert "second file" in capsys.readouterr().err
