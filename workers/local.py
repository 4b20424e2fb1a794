"""The background processes ``manage.py up`` starts on this machine: the worker and the API.

Each is one process with its pid and log under ``MEMORAG_HOME``: the worker
serves every queue with the solo pool (the model is loaded once and shared
by all tasks); the API (``manage.py serve``) answers HTTP.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.settings import Settings

MANAGE = Path(__file__).resolve().parent.parent / "manage.py"


COMMANDS = {"worker": ["worker", "--beat"], "api": ["serve"]}


def pid_file(settings: Settings, name: str = "worker") -> Path:
    return settings.run_dir / f"{name}.pid"


def log_file(settings: Settings, name: str = "worker") -> Path:
    return settings.log_dir / f"{name}.log"


def running_pid(settings: Settings, name: str = "worker") -> int | None:
    """The background process's pid if it is alive."""
    path = pid_file(settings, name)
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        path.unlink(missing_ok=True)
        return None
    except PermissionError:
        return None
    return pid


def start(settings: Settings, name: str = "worker") -> tuple[int, bool]:
    """Start the process unless it runs; returns (pid, started)."""
    pid = running_pid(settings, name)
    if pid is not None:
        return pid, False
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    with log_file(settings, name).open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, str(MANAGE), *COMMANDS[name]],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(MANAGE.parent),
        )
    pid_file(settings, name).write_text(str(process.pid))
    return process.pid, True


def stop(settings: Settings, name: str = "worker", grace_s: float = 20.0) -> bool:
    """Warm shutdown (the worker's current task finishes or goes back to the queue); False if none ran."""
    pid = running_pid(settings, name)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)  # its unacknowledged task is redelivered later
    pid_file(settings, name).unlink(missing_ok=True)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
