"""Which job processes are alive: a pid plus its start time names one process for good (Linux /proc).

Children this process launched are remembered so that polling them reaps their zombies, which would
otherwise look alive.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

_CHILDREN: dict[int, subprocess.Popen] = {}


def remember_child(child: subprocess.Popen) -> None:
    _CHILDREN[child.pid] = child


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (Linux), or None when unreadable."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def process_start_token(pid: int) -> str | None:
    """The process's start time in clock ticks since boot: with the pid it names one process for good."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def reap_children() -> None:
    """Collect the exit status of finished jobs this process launched (no zombies left behind)."""
    for pid, child in list(_CHILDREN.items()):
        if child.poll() is not None:
            _CHILDREN.pop(pid, None)


def pid_alive(pid: int | None, start_token: str | None = None) -> bool:
    """True when ``pid`` runs (not a zombie) and, if ``start_token`` is given, is the same process."""
    if not pid:
        return False
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(pid, None)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else
    fields = _proc_stat(pid)
    if fields is None:
        return True  # no /proc: trust kill(0)
    if fields[0] in ("Z", "X"):
        return False
    return start_token is None or process_start_token(pid) in (None, start_token)
