"""The Docker image, checked statically (Docker cannot build here) and its entry point run for real.

The Dockerfile is parsed into instructions; each fact the image promises is asserted: a pinned base
image, the same requirements.txt, a non-root user, volumes for state, a health check on Streamlit's
health endpoint, the file watcher off, and the same app file the README and Makefile run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO_ROOT / "Dockerfile"
ENTRYPOINT = REPO_ROOT / "docker" / "entrypoint.sh"
APP_FILE = "app/main.py"


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with comments dropped and line continuations joined."""
    result, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, args = current.strip().partition(" ")
        result.append((keyword.upper(), args.strip()))
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return result


def args_of(keyword: str) -> list[str]:
    return [args for kw, args in instructions() if kw == keyword]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"use the exec (JSON) form: {args}"
    return value


def test_base_image_is_python_311_slim_and_pinned():
    froms = args_of("FROM")
    assert len(froms) == 1
    image = froms[0].split()[0]
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", image), image
    assert "latest" not in image


def test_requirements_come_from_the_same_requirements_txt():
    copies = [a.split() for a in args_of("COPY")]
    assert ["requirements.txt", "./"] in copies
    installs = [a for a in args_of("RUN") if "pip install" in a]
    assert installs, "requirements are installed"
    for command in installs:
        words = shlex.split(command)
        start = words.index("install") + 1
        rest = words[start:]
        assert "-r" in rest and rest[rest.index("-r") + 1] == "requirements.txt"
        # Nothing installed beside the pinned file: every other word is an option or its value.
        allowed_values = {"requirements.txt", "https://download.pytorch.org/whl/cpu"}
        stray = [w for w in rest if not w.startswith("-") and w not in allowed_values]
        assert not stray, f"unpinned packages installed outside requirements.txt: {stray}"
    torch = [line for line in (REPO_ROOT / "requirements.txt").read_text().splitlines() if line.startswith("torch")]
    assert torch and all("==" in line for line in torch)


def test_the_app_runs_as_a_non_root_user():
    users = args_of("USER")
    assert users, "a USER instruction"
    assert users[-1] not in ("root", "0") and not users[-1].startswith("0:")
    assert any("useradd" in a and users[-1] in a for a in args_of("RUN"))
    # The user comes after the installs and the state folders are theirs.
    kinds = [kw for kw, _ in instructions()]
    assert kinds.index("USER") > max(i for i, kw in enumerate(kinds) if kw == "RUN")
    assert any("chown" in a and "data" in a and "models" in a for a in args_of("RUN"))


def test_state_folders_are_volumes_and_the_code_is_copied():
    volumes = {v for a in args_of("VOLUME") for v in exec_form(a)}
    assert {"/app/data", "/app/models", "/app/submissions", "/app/specs"} <= volumes
    sources = {a.split()[0] for a in args_of("COPY")}
    assert {"app/", "core/"} <= sources
    for src in sources:
        assert (REPO_ROOT / src).exists(), f"COPY source {src} missing from the repository"
    env = " ".join(args_of("ENV"))
    for name, value in [("WORKBENCH_DATA_ROOTS", "/app/data"), ("WORKBENCH_MODELS_DIR", "/app/models")]:
        assert f"{name}={value}" in env


def test_dockerignore_keeps_state_and_secrets_out_of_the_build_context():
    ignored = {line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "data", "models", "submissions"} <= ignored
    copied = {a.split()[0].rstrip("/") for a in args_of("COPY")}
    assert not copied & ignored, "a COPY source is excluded by .dockerignore"


def test_port_and_health_check():
    assert "8501" in args_of("EXPOSE")[0].split()
    (health,) = args_of("HEALTHCHECK")
    assert "CMD" in health
    assert "http://127.0.0.1:8501/_stcore/health" in health
    assert "python" in health  # no curl needed in the slim image


def test_entry_point_serves_the_same_app_file_as_the_makefile_and_readme():
    (entry,) = args_of("ENTRYPOINT")
    assert exec_form(entry) == ["/app/docker/entrypoint.sh"]
    assert os.stat(ENTRYPOINT).st_mode & stat.S_IXUSR, "entrypoint.sh must be executable"
    script = ENTRYPOINT.read_text()
    command = re.search(r"^exec streamlit run (\S+)(.*?)\"\$@\"", script, re.S | re.M)
    assert command, "the script ends by exec-ing streamlit run"
    assert command.group(1) == APP_FILE
    flags = command.group(2)
    for flag in (
        "--server.address 0.0.0.0",
        "--server.port 8501",
        "--server.fileWatcherType none",
        "--server.headless true",
    ):
        assert flag in flags
    assert f"streamlit run {APP_FILE}" in (REPO_ROOT / "Makefile").read_text()
    readme = REPO_ROOT / "README.md"
    assert (REPO_ROOT / APP_FILE).is_file()
    assert "make run" in readme.read_text()  # and `make run` is what the README tells people to run
    subprocess.run(["sh", "-n", str(ENTRYPOINT)], check=True)


def fake_streamlit(bin_dir: Path, log: Path) -> None:
    """A `streamlit` on PATH that records its arguments instead of serving."""
    bin_dir.mkdir()
    exe = bin_dir / "streamlit"
    exe.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{log}"\n')
    exe.chmod(0o755)
    python = bin_dir / "python"  # the test's interpreter (a symlink would lose the virtualenv)
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)


@pytest.mark.timeout(180)
def test_entrypoint_makes_demo_data_once_then_serves(tmp_path):
    workdir = tmp_path / "app"
    workdir.mkdir()
    log = tmp_path / "streamlit-args.txt"
    fake_streamlit(tmp_path / "bin", log)
    env = {
        **os.environ,
        "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO_ROOT),
        "WORKBENCH_DEMO_PEOPLE": "2",
        "WORKBENCH_DEMO_EVAL_PEOPLE": "1",
    }
    run = subprocess.run(
        [str(ENTRYPOINT), "--server.baseUrlPath", "wb"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert run.returncode == 0, run.stderr
    train_csv = workdir / "data" / "demo" / "train" / "train.csv"
    assert len(train_csv.read_text().splitlines()) == 3  # header + 2 people
    args = log.read_text().split()
    assert args[:2] == ["run", APP_FILE]
    assert args[-2:] == ["--server.baseUrlPath", "wb"]
    # Second start: the demo data is kept as it is.
    stamp = train_csv.stat().st_mtime_ns
    again = subprocess.run([str(ENTRYPOINT)], cwd=workdir, env=env, capture_output=True, text=True, timeout=150)
    assert again.returncode == 0, again.stderr
    assert "generating" not in again.stderr
    assert train_csv.stat().st_mtime_ns == stamp
