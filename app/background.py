"""Long passes (embeddings, the quality pass, duplicates) as detached ``python -m core …`` children.

A job lives in a folder of its own (under ``settings.cache_dir / "explain"`` or wherever the caller
keeps its results)::

    job.json    the command and the child's pid, written at launch
    log.txt     the child's stdout and stderr: the CLI prints "what done/total" lines as it goes
    rc          the child's exit status, written by the wrapper when the command ends

The child is this module run as ``python -m app.background FOLDER ARGV…``: it runs ``python -m core
ARGV…`` and writes ``rc`` after, so a page can tell a finished job from a dead one without being its
parent. No streamlit and no torch here: the wrapper must start quickly and the page stays light.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
JOB_FILE, LOG_FILE, RC_FILE = "job.json", "log.txt", "rc"
_PROGRESS = re.compile(r"(\d+)/(\d+)\s*$")
_children: dict[int, subprocess.Popen] = {}  # reaped by ``state`` so finished children leave no zombies


@dataclass(frozen=True)
class JobState:
    """What a job folder says: ``status`` is "none", "running", "done" or "failed"."""

    status: str
    done: int = 0
    total: int = 0
    log_tail: str = ""

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0


def launch(folder: str | os.PathLike, argv: list[str]) -> int:
    """Start ``python -m core ARGV…`` detached, its output in ``folder/log.txt``; return its pid at once.

    A previous job's files in ``folder`` are removed first (a relaunch starts clean)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in (RC_FILE, LOG_FILE):
        (folder / name).unlink(missing_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO_ROOT)}
    with open(folder / LOG_FILE, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.background", str(folder), *argv],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a page rerun or a closed tab must not stop the pass
        )
    _children[proc.pid] = proc
    (folder / JOB_FILE).write_text(json.dumps({"pid": proc.pid, "argv": argv, "started": time.time()}))
    return proc.pid


def state(folder: str | os.PathLike) -> JobState:
    """The job's status and its last progress line ``done/total`` from the log."""
    folder = Path(folder)
    job = folder / JOB_FILE
    if not job.is_file():
        return JobState("none")
    tail = _tail(folder / LOG_FILE)
    done, total = _last_progress(tail)
    rc = _read_rc(folder / RC_FILE)
    if rc is not None:
        return JobState("done" if rc == 0 else "failed", done, total, tail)
    try:
        pid = int(json.loads(job.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return JobState("failed", done, total, tail)
    if _alive(pid):
        return JobState("running", done, total, tail)
    # The wrapper writes rc as its last act; it may have finished between the two reads above.
    rc = _read_rc(folder / RC_FILE)
    return JobState("done" if rc == 0 else "failed", done, total, tail)


def _read_rc(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    proc = _children.get(pid)
    if proc is not None:  # our own child: poll() also reaps it
        return proc.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # another process's finished child lingers as a zombie until reaped
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _tail(path: Path, size: int = 4000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - size))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _last_progress(text: str) -> tuple[int, int]:
    for line in reversed(re.split(r"[\r\n]+", text)):
        found = _PROGRESS.search(line)
        if found:
            return int(found.group(1)), int(found.group(2))
    return 0, 0


def main(args: list[str]) -> int:
    folder, argv = Path(args[0]), args[1:]
    rc = subprocess.call([sys.executable, "-m", "core", *argv], cwd=REPO_ROOT)
    tmp = folder / (RC_FILE + ".tmp")
    tmp.write_text(str(rc))
    os.replace(tmp, folder / RC_FILE)  # whole or absent: a reader never sees half a number
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
