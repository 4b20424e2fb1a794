"""The background processes ``manage.py up`` starts on this machine: the worker and the API.

Each is one process with its pid and log under ``MEMORAG_HOME``: the worker
serves every queue with the solo pool (the model is loaded once and shared
by all tasks); the API (``manage.py serve``) answers HTTP.
"""

from __future__ import annotations

import contextlib
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
    """The background process's pid if it is alive and is the command started (not a zombie, not another
    program that took the pid); otherwise what is left of its process group is stopped and None returned."""
    path = pid_file(settings, name)
    try:
        pid = int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        path.unlink(missing_ok=True)
        return None
    if _is_ours(path, pid):
        return pid
    _end_group(pid)  # a worker killed by the kernel leaves its beat (and pool) children running
    path.unlink(missing_ok=True)
    return None


def _is_ours(path: Path, pid: int) -> bool:
    """Alive, not a zombie, and the process the pid file was written for: started just before the file (a pid
    the system gave to another program since was started after it). The command line is no proof: Celery
    retitles its processes."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return False
        return process.create_time() <= path.stat().st_mtime + 5.0  # the boot time psutil adds is rounded
    except (psutil.NoSuchProcess, psutil.AccessDenied, FileNotFoundError):
        return False


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
            start_new_session=True,  # its own process group: `stop` ends the children (beat) with it
            cwd=str(MANAGE.parent),
        )
    pid_file(settings, name).write_text(str(process.pid))
    return process.pid, True


def stop(settings: Settings, name: str = "worker", grace_s: float = 20.0) -> str | None:
    """Warm shutdown: the process finishes its current task within ``grace_s``, then its whole process group
    (beat, pool children) is ended. Returns "stopped" (it exited in time), "ended" (it was killed after the
    grace; its unfinished task is sent again) or None (none ran)."""
    pid = running_pid(settings, name)
    if pid is None:
        return None
    _signal_group(pid, signal.SIGTERM, leader_only=True)  # the leader stops its own children in order
    how = "stopped" if _wait_gone(pid, grace_s) else "ended"
    _end_group(pid)
    pid_file(settings, name).unlink(missing_ok=True)
    return how


def _end_group(pgid: int, grace_s: float = 5.0) -> None:
    """TERM what is left of the group, then KILL what outlives ``grace_s``."""
    if not _group_alive(pgid):
        return
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _group_alive(pgid):
        time.sleep(0.1)
    if _group_alive(pgid):
        _signal_group(pgid, signal.SIGKILL)
        _wait_gone(pgid, 5.0, group=True)


def _signal_group(pgid: int, sig: int, leader_only: bool = False) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pgid, sig) if leader_only else os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    """A live (not zombie) process is in the group."""
    import psutil

    for process in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, PermissionError):
            continue
    return False


def _wait_gone(pid: int, timeout: float, group: bool = False) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not (_group_alive(pid) if group else _alive(pid)):
            return True
        time.sleep(0.1)
    return not (_group_alive(pid) if group else _alive(pid))


def _alive(pid: int) -> bool:
    """Alive and not a zombie (a killed child whose parent has not reaped it)."""
    import psutil

    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return False
