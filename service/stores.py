"""The stores and workers a request touches, opened on first use in this process."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from core.settings import get_settings
from service.errors import NoWorker


@dataclass
class Stores:
    """The Redis memory store and the vector index (embedded or Weaviate)."""

    @cached_property
    def _client(self):
        from store.redis import connect

        return connect(settings=get_settings())

    @cached_property
    def memories(self):
        from store.memories import open_memories

        return open_memories(self._client, get_settings())

    @cached_property
    def index(self):
        from store.indexes import open_index

        return open_index(self._client, get_settings())


def memory_tiers() -> dict:
    """Redis's use against its budget (from INFO: managed Redis may forbid CONFIG) and the disk tier's size."""
    from store.disk import DiskTier
    from store.redis import shared

    settings = get_settings()
    client = shared(settings=settings)
    memory, stats = client.info("memory"), client.info("stats")
    folder = settings.memory_tier_dir
    return {
        "redis_used_bytes": int(memory["used_memory"]),
        "redis_maxmemory": int(memory.get("maxmemory", 0)),
        "policy": memory.get("maxmemory_policy", "unknown"),
        "evicted_keys": int(stats.get("evicted_keys", 0)),
        "disk_dir": str(folder) if folder else None,
        "disk_bytes": DiskTier(folder).nbytes() if folder else None,
    }


def live_queues() -> dict[str, list[str]]:
    """Queue name -> the live workers serving it."""
    from store.redis import shared
    from workers.liveness import live_queues as read

    return read(shared(settings=get_settings()))


def live_workers() -> list[dict]:
    """Each live worker: name, host, queues and running task ids."""
    from store.redis import shared
    from workers.liveness import live_workers as read

    return sorted(read(shared(settings=get_settings())), key=lambda w: w["name"])


def unshared_tiers(workers: list[dict]) -> dict[str, list[str]]:
    """Disk tier id -> the memory and query workers on it, when the live workers are on more than one."""
    from workers.liveness import unshared_tiers as split

    return split(workers)


SEEN_LIVE_S = 1.0  # a queue seen served this recently is taken as served (heartbeats live for seconds anyway)
_seen_live: dict[tuple, float] = {}


def require_worker(queue: str) -> None:
    """Refuse work no worker would take; a worker's heartbeat missing for less than a beat (a wiped or
    restarted store) is waited for, so a question asked right after a store wipe is still taken.

    A queue seen served in the last ``SEEN_LIVE_S`` is not read again: under load that read was a third of
    a submission's time, and a heartbeat already outlives its worker by seconds."""
    import time

    from workers.liveness import BEAT_S

    settings = get_settings()
    where = (settings.redis_url, str(settings.home), queue)
    if time.monotonic() - _seen_live.get(where, -SEEN_LIVE_S) < SEEN_LIVE_S:
        return
    deadline = time.monotonic() + BEAT_S + 1
    while not live_queues().get(queue) and time.monotonic() < deadline:
        time.sleep(0.25)
    if live_queues().get(queue):
        _seen_live[where] = time.monotonic()
    else:
        raise NoWorker(
            f"no worker is serving the {queue!r} queue; start one in the background with 'python manage.py up' "
            "or in the foreground with 'python manage.py worker'"
        )


def send(task, saved: str, **options):
    """``task.apply_async(**options)``, with a store that stopped answering after the row was saved turned into
    a refusal that says the work is kept (the reconciler sends a stale queued row again)."""
    from kombu.exceptions import OperationalError

    from service.errors import NotSent

    try:
        return task.apply_async(**options)
    except OperationalError as exc:
        raise NotSent(
            f"{saved} is saved, but the queue did not answer ({exc}); it is sent again once the store is back"
        ) from exc


def task_progress(task_id: str | None) -> dict | None:
    """What a running task last reported: ``{"stage", "done", "total"}``, or None."""
    if not task_id:
        return None
    from celery.result import AsyncResult

    from workers.app import configure

    info = AsyncResult(task_id, app=configure()).info
    return info if isinstance(info, dict) and "stage" in info else None
