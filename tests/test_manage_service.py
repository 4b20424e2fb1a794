"""The manager's service commands: every bad input is one clear line and exit code 2;
up/down as subprocesses. (Workers killed mid-work: tests/test_chaos.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlmodel import select

from manage import cli
from store import db
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = [
    [],
    ["up"],
    ["down"],
    ["worker"],
    ["beat"],
    ["kb"],
    ["kb", "create"],
    ["kb", "list"],
    ["kb", "show"],
    ["kb", "delete"],
    ["ingest"],
    ["docs"],
    ["remove"],
    ["ask"],
    ["status"],
    ["repair"],
    ["reindex"],
    ["result"],
    ["feedback"],
    ["models", "prepare"],
    ["memory", "build"],
]


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, prog_name="manage.py")


@pytest.fixture
def env(records):
    return records


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "manage.py")
def test_every_command_explains_itself(command):
    shown = run(*command, "--help")
    assert shown.exit_code == 0 and "Usage: manage.py" in shown.output
    assert len(shown.output.split("\n\n")[1].strip()) > 20  # a real description, not just usage


def bad(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert "Traceback" not in line and line.count("\n") == 0, line
    for fragment in fragments:
        assert fragment in line, line


def test_bad_inputs_get_one_clear_line(env, monkeypatch):
    tmp = env
    (tmp / "empty.txt").write_text("")
    (tmp / "blob.bin").write_bytes(b"\x00\x01\x02" * 100)
    (tmp / "big.txt").write_text("word " * 5000)
    (tmp / "ok.txt").write_text("A short but real document about tides.")
    bad(run("ingest", "nope", str(tmp / "ok.txt")), "no knowledge base named 'nope'")
    bad(run("ask", "nope", "why?"), "no knowledge base named 'nope'")
    assert run("kb", "create", "town").exit_code == 0
    bad(run("kb", "create", "town"), "already exists")
    bad(run("kb", "create", "bad name!"), "not a valid name")
    bad(run("ingest", "town", str(tmp / "empty.txt")), "empty.txt: is empty")
    bad(run("ingest", "town", str(tmp / "blob.bin")), "looks binary")
    bad(run("ingest", "town", str(tmp / "missing.txt")), "no such file")
    monkeypatch.setenv("MEMORAG_MAX_DOCUMENT_MB", "0.01")
    bad(run("ingest", "town", str(tmp / "big.txt")), "over the 0.01 MB limit", "MEMORAG_MAX_DOCUMENT_MB")
    monkeypatch.delenv("MEMORAG_MAX_DOCUMENT_MB")
    bad(run("ask", "town", "   "), "the question is empty")
    bad(run("ask", "town", ""), "the question is empty")
    bad(run("ask", "town", "why?"), "has no ready documents", "manage.py ingest town FILE")
    bad(run("ingest", "town", str(tmp / "ok.txt")), "no worker is serving the 'memory' queue", "manage.py up")
    with db.session() as s:
        assert s.exec(select(db.Document)).all() == []  # nothing half-created
    for command in (["status", "x1"], ["result", "banana"], ["feedback", "7", "--good"]):
        bad(run(*command), "is not an id")
    bad(run("status", "q99"), "no query q99")
    bad(run("result", "q99"), "no query q99")
    bad(run("feedback", "q99", "--good"), "no query q99")
    bad(run("remove", "d5"), "no document d5")
    bad(run("feedback", "q1"), "say --good or --bad")
    bad(run("worker", "-Q", "memory,bogus"), "unknown queue(s) bogus")


def test_unreachable_redis_and_database_are_named(env, monkeypatch):
    monkeypatch.setenv("MEMORAG_DATABASE_URL", "postgresql://memorag@127.0.0.1:1/memorag")
    bad(run("kb", "list"), "database postgresql+psycopg://memorag@127.0.0.1:1/memorag is not reachable")
    db.reset_engines()
    monkeypatch.setenv("MEMORAG_DATABASE_URL", f"sqlite:///{env / 'records.db'}")
    monkeypatch.setenv("MEMORAG_REDIS_URL", "redis://127.0.0.1:1/0")
    assert run("kb", "create", "town").exit_code == 0
    (env / "ok.txt").write_text("A short document.")
    bad(run("ingest", "town", str(env / "ok.txt")), "cannot reach Redis at redis://127.0.0.1:1/0")


def test_a_worker_takes_work_only_from_the_deployment_s_stores(clean_home, monkeypatch):
    from store.redis import embedded_url

    monkeypatch.delenv("MEMORAG_REDIS_URL", raising=False)
    monkeypatch.delenv("MEMORAG_DATABASE_URL", raising=False)
    bad(run("worker"), "no Redis to take work from", "MEMORAG_REDIS_URL", "manage.py up")
    bad(run("beat"), "no Redis to take work from")
    assert embedded_url() is None  # no private server was started for it
    monkeypatch.setenv("MEMORAG_REDIS_URL", "redis://10.9.8.7:6379/0")  # a broker other hosts share
    for command in (["worker"], ["beat"], ["kb", "list"]):
        bad(run(*command), "MEMORAG_REDIS_URL is on another host (10.9.8.7)", "set MEMORAG_DATABASE_URL")
    for here in ("redis://localhost:6379/0", "redis://127.0.0.2:6379/0", "redis://[::1]:6379/0"):
        monkeypatch.setenv("MEMORAG_REDIS_URL", here)
        assert db.database_url().startswith("sqlite:///")  # one machine: its SQLite file is everyone's


def manage(*args: str, env: dict, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_up_and_down_twice_in_a_row_as_subprocesses(clean_home, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MEMORAG_REDIS_URL"}
    env["MEMORAG_DATABASE_URL"] = f"sqlite:///{tmp_path / 'records.db'}"
    env["MEMORAG_API_PORT"] = str(port := free_port())
    try:
        first = manage("up", env=env)
        assert first.returncode == 0, first.stderr
        assert "embedded Valkey started" in first.stdout and "worker started" in first.stdout
        assert f"API started at http://127.0.0.1:{port}" in first.stdout
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as ready:
            assert json.load(ready)["ready"] is True  # the database, Redis and the worker's three queues
        second = manage("up", env=env)
        assert second.returncode == 0 and "already running" in second.stdout, second.stdout
        pid = int((clean_home / "run" / "worker.pid").read_text())
    finally:
        stopped = manage("down", env=env)
    assert stopped.returncode == 0 and "worker stopped" in stopped.stdout and "Valkey stopped" in stopped.stdout
    assert "API stopped" in stopped.stdout
    assert _group(pid) == []  # the worker and its beat are gone (at most zombies waiting for their reaper)
    again = manage("down", env=env)
    assert again.returncode == 0 and "no background worker was running" in again.stdout
    assert "was not running" in again.stdout
    failing = manage("ask", "nope", "why?", env=env)
    assert failing.returncode == 2 and failing.stderr.startswith("error: ") and "Traceback" not in failing.stderr


def wait_until(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # the row may not exist yet
            pass
        time.sleep(0.5)
    raise AssertionError("timed out")


def _group(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group."""
    import psutil

    found = []
    for process in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(process.pid)
        except (ProcessLookupError, PermissionError):
            continue
    return found


def test_a_killed_worker_is_started_again_and_down_leaves_nothing_of_a_busy_one(clean_home, tmp_path):
    """The kernel kills the worker (its beat child lives on): 'up' sees it dead, ends what is left and starts a
    new one. 'down' while the worker forms a memory ends it, beat included, and says so; a one-off command
    that had to start the embedded Valkey stops it again."""
    env = {k: v for k, v in os.environ.items() if k != "MEMORAG_REDIS_URL"}
    env["MEMORAG_DATABASE_URL"] = f"sqlite:///{tmp_path / 'records.db'}"
    try:
        assert manage("up", "--no-api", env=env).returncode == 0
        old = int((clean_home / "run" / "worker.pid").read_text())
        wait_until(lambda: len(_group(old)) >= 2)  # the worker and its embedded beat
        os.kill(old, 9)
        again = manage("up", "--no-api", env=env)
        assert again.returncode == 0 and "worker started" in again.stdout, again.stdout
        new = int((clean_home / "run" / "worker.pid").read_text())
        assert new != old and _group(old) == []  # the orphaned beat did not outlive its worker
        essay = sorted((ROOT.parent / "shared" / "data" / "needle" / "essays").glob("*.txt"))[0].read_text()
        (tmp_path / "long.txt").write_text(essay * 3)
        assert manage("kb", "create", "busy", env=env).returncode == 0
        assert manage("ingest", "busy", str(tmp_path / "long.txt"), env=env).returncode == 0

        def forming() -> bool:
            with db.session() as s:
                return s.exec(select(db.Document)).one().status == "processing"

        os.environ["MEMORAG_DATABASE_URL"] = env["MEMORAG_DATABASE_URL"]
        try:
            wait_until(forming)
        finally:
            os.environ.pop("MEMORAG_DATABASE_URL")
            db.reset_engines()
        members = _group(new)
        stopped = manage("down", "--wait", "1", env=env)
    finally:
        manage("down", env=env)
    assert stopped.returncode == 0 and "worker ended after 1 s with a task unfinished" in stopped.stdout
    assert len(members) >= 2 and _group(new) == []
    one_off = manage("status", env=env)  # starts the embedded Valkey to read, and stops it at the end
    assert one_off.returncode == 0 and "stopped the embedded Valkey this command started" in one_off.stderr
    assert not (clean_home / "valkey" / "port").exists()
