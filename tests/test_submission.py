"""submission.csv writing and the validator: each kind of broken file is caught and named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from core.errors import SubmissionError
from core.evaluation import submission

REPO_ROOT = Path(__file__).resolve().parent.parent
IDS = [f"{i:040x}.jpg" for i in (7, 3, 11, 5, 2)]  # deliberately not sorted: order must be info.csv's


@pytest.fixture
def info_csv(tmp_path) -> Path:
    path = tmp_path / "info.csv"
    pd.DataFrame({"ImageID": IDS, "ans": 0}).to_csv(path, index=False)
    return path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "submission.csv"
    path.write_text(text)
    return path


def good_text(values=(0, 17, 4, 9, 12)) -> str:
    return "ImageID,ans\n" + "".join(f"{i},{v}\n" for i, v in zip(IDS, values, strict=True))


def test_build_and_write_follow_info_order(info_csv, tmp_path):
    predicted = {i: k for k, i in enumerate(reversed(IDS))}
    frame = submission.build_submission(info_csv, predicted)
    out = tmp_path / "out" / "submission.csv"
    submission.write_submission(frame, out)
    text = out.read_text().splitlines()
    assert text[0] == "ImageID,ans"  # no index column
    assert [line.split(",")[0] for line in text[1:]] == IDS
    assert [int(line.split(",")[1]) for line in text[1:]] == [predicted[i] for i in IDS]
    assert submission.validate_submission(out, info_csv) == []
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]  # atomic write left no temp file


def test_build_refuses_a_hole(info_csv):
    with pytest.raises(SubmissionError, match="no prediction for 1"):
        submission.build_submission(info_csv, {i: 0 for i in IDS[:-1]})


def test_valid_file_passes(info_csv, tmp_path):
    assert submission.validate_submission(write(tmp_path, good_text()), info_csv) == []
    submission.check_submission(tmp_path / "submission.csv", info_csv)  # no exception


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "ImageID,ans\n" + "".join(f"{i},1\n" for i in IDS[:-1]),
            ["has 4 rows but info.csv has 5", "1 ImageID(s) of info.csv are missing"],
            id="missing-row",
        ),
        pytest.param(
            "ImageID,ans\n" + "".join(f"{i},1\n" for i in [IDS[1], IDS[0], *IDS[2:]]),
            ["not in info.csv's order", "row 1"],
            id="reordered",
        ),
        pytest.param(
            ",ImageID,ans\n" + "".join(f"{k},{i},1\n" for k, i in enumerate(IDS)),
            ["extra column", "index=False"],
            id="index-column",
        ),
        pytest.param(
            "ImageID,ans,prob\n" + "".join(f"{i},1,0.5\n" for i in IDS), ["extra column(s) 'prob'"], id="extra-column"
        ),
        pytest.param(good_text((0, 18, 4, 9, 12)), ["outside 0..17", "row 2", "18"], id="value-18"),
        pytest.param(good_text((0, 1.5, 4, "x", 12)), ["2 ans value(s) are not integers"], id="not-integer"),
        pytest.param(good_text((0, -1, 4, 9, 12)), ["not integers"], id="negative"),
        pytest.param(
            good_text().replace("ImageID", "ImageId", 1),
            ["header is 'ImageId,ans'", "missing column(s): ImageID"],
            id="header-typo",
        ),
        pytest.param(
            "ans,ImageID\n" + "".join(f"1,{i}\n" for i in IDS),
            ["columns are in the order 'ans,ImageID'"],
            id="swapped-columns",
        ),
        pytest.param(
            "ImageID,ans\n" + "".join(f"{i},1\n" for i in [*IDS[:-1], IDS[0]]),
            ["appear more than once", "missing"],
            id="duplicate",
        ),
        pytest.param(
            "ImageID,ans\n" + "".join(f"{i},1\n" for i in [*IDS[:-1], "f" * 40 + ".jpg"]),
            ["not in info.csv"],
            id="unknown-id",
        ),
    ],
)
def test_validator_names_each_broken_file(info_csv, tmp_path, text, expected):
    problems = submission.validate_submission(write(tmp_path, text), info_csv)
    joined = " | ".join(problems)
    assert problems, "a broken file passed the validator"
    for fragment in expected:
        assert fragment in joined, joined
    with pytest.raises(SubmissionError, match="not a valid submission"):
        submission.check_submission(tmp_path / "submission.csv", info_csv)


def test_validator_on_unreadable_files(info_csv, tmp_path):
    assert "file not found" in submission.validate_submission(tmp_path / "nope.csv", info_csv)[0]
    assert "not a readable CSV" in submission.validate_submission(write(tmp_path, ""), info_csv)[0]
    with pytest.raises(SubmissionError, match="info.csv not found"):
        submission.validate_submission(write(tmp_path, good_text()), tmp_path / "missing-info.csv")


def test_class_counts(info_csv, tmp_path):
    counts = submission.class_counts(write(tmp_path, good_text((0, 0, 4, 17, 12))))
    assert len(counts) == 18 and counts[0] == 2 and counts[4] == 1 and counts[17] == 1 and sum(counts) == 5


def test_cli_validate_exit_codes(info_csv, tmp_path):
    good = write(tmp_path, good_text())
    cmd = [sys.executable, "-m", "core", "validate-submission"]
    ok = subprocess.run([*cmd, str(good), "--info", str(info_csv)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "valid" in ok.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text(good_text((0, 18, 4, 9, 12)))
    res = subprocess.run([*cmd, str(bad), "--info", str(info_csv)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert res.returncode == 1
    assert "outside 0..17" in res.stdout
