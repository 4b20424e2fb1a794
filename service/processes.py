"""The processes of a set-up, as `up`, `down`, `worker` and `beat` run them: the embedded Valkey, the background
worker and API (each its own process group, with pid and log files under MEMORAG_HOME), and the Celery app a
foreground worker or beat runs. The faces start, stop and inspect them only through here.

Imports are inside the functions: every command line start passes through this module, and only the
commands that run a process should pay for Celery.
"""

from __future__ import annotations

from pathlib import Path

from core.settings import Settings
from service.errors import Invalid, ServiceError


class NoBroker(ServiceError):
    """A worker or beat would take work from a private store no one else sends to."""


def queues() -> tuple[str, ...]:
    """The work queues a worker may serve (beside the control queue every worker serves)."""
    from workers.app import QUEUES

    return QUEUES


def start_store(settings: Settings) -> tuple[str, bool]:
    """Start the embedded Valkey and keep it running; (its URL, whether it already ran)."""
    from store.redis import embedded_url, start_embedded

    running = embedded_url(settings) is not None
    return start_embedded(settings, keep=True), running


def stop_store(settings: Settings | None = None) -> bool:
    """Stop the embedded Valkey (its data is kept); False when it was not running."""
    from store.redis import stop_embedded

    return stop_embedded(settings)


def stop_store_if_started_here() -> bool:
    """A one-off command that had to start the embedded Valkey stops it again; True when it did."""
    from store.redis import started_here, stop_embedded

    return started_here() and stop_embedded()


def start(settings: Settings, name: str = "worker") -> tuple[int, bool]:
    """Start the background ``name`` ("worker" or "api") unless it runs; (its pid, whether it was started)."""
    from workers import local

    return local.start(settings, name)


def stop(settings: Settings, name: str = "worker", grace_s: float = 20.0) -> str | None:
    """Stop the background ``name``: "stopped" (its task finished), "ended" (after ``grace_s``), None (none ran)."""
    from workers import local

    return local.stop(settings, name, grace_s=grace_s)


def running_pid(settings: Settings, name: str = "worker") -> int | None:
    from workers import local

    return local.running_pid(settings, name)


def log_file(settings: Settings, name: str = "worker") -> Path:
    from workers import local

    return local.log_file(settings, name)


def check_broker(settings: Settings) -> None:
    """A worker or beat takes work from the deployment's Redis: never from a private server it would start."""
    from store.db import database_url
    from store.redis import embedded_url

    if not settings.redis_url and embedded_url(settings) is None:
        raise NoBroker(
            "no Redis to take work from: set MEMORAG_REDIS_URL to the deployment's Redis, "
            "or start the embedded one on this machine with 'python manage.py up'"
        )
    database_url(settings)  # a shared broker with a database of this host's own is refused, with why


def run_worker(settings: Settings, *, queues: str, pool: str, concurrency: int, loglevel: str, hostname: str,
               beat: bool) -> None:  # fmt: skip
    """Run a Celery worker in this process until it is stopped; it also serves the control queue."""
    from workers.app import CONTROL, QUEUES, configure

    unknown = sorted(set(queues.split(",")) - set(QUEUES))
    if unknown:
        raise Invalid(f"unknown queue(s) {', '.join(unknown)}; choose from {', '.join(QUEUES)}")
    check_broker(settings)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    schedule = ["--beat", f"--schedule={settings.run_dir / 'beat-schedule'}"] if beat else []
    configure().worker_main(
        [
            "worker",
            f"--pool={pool}",
            f"--concurrency={concurrency}",
            f"--queues={queues},{CONTROL}",
            f"--loglevel={loglevel}",
            f"--hostname={hostname}",
            "--without-gossip",
            "--without-mingle",
            *schedule,
        ]
    )


def run_beat(settings: Settings, loglevel: str) -> None:
    """Run Celery beat in this process: the periodic reconcile and retraining."""
    from workers.app import configure

    check_broker(settings)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    configure().Beat(loglevel=loglevel, schedule=str(settings.run_dir / "beat-schedule")).run()
