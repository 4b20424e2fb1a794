"""Which queues have a live worker, and which tasks they run, answered from Redis in one round trip.

Each worker refreshes a short-lived key naming its queues and the tasks it is
running; the manager reads them to refuse work that no one would pick up, and
the reconciler to tell a lost task from a running one, instead of a
control-plane broadcast that costs a full timeout on every command.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading

import redis

PREFIX = "memorag:worker:"
TTL_S = 15
BEAT_S = 5
RUNNING: set[str] = set()  # ids of the tasks this process is running (task_prerun/task_postrun keep it)


def held_task_ids() -> set[str]:
    """Every task this worker holds: running, and received but waiting (prefetched, or a retry's countdown).

    A message delivered to this worker and not yet acknowledged is one of these; the reconciler takes any
    other unacknowledged delivery for a worker that died holding it.
    """
    from celery.worker import state

    held = set(RUNNING)
    for _ in range(3):  # the consumer thread may change the sets while this one reads them
        try:
            held.update(r.id for r in (*state.reserved_requests, *state.active_requests, *state.scheduled_requests))
            break
        except RuntimeError:
            continue
    return held


class Heartbeat:
    def __init__(self, client: redis.Redis, name: str, queues: list[str], memory_tier: str | None = None) -> None:
        self.client, self.key = client, PREFIX + name
        self.about = {"name": name, "queues": sorted(queues), "host": socket.gethostname(), "memory_tier": memory_tier}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memorag-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def beat(self) -> None:
        self.client.set(self.key, json.dumps(self.about | {"running": sorted(held_task_ids())}), ex=TTL_S)

    def _run(self) -> None:
        while not self._stop.wait(BEAT_S):
            try:
                self.beat()
            except redis.RedisError:
                continue  # the broker is away; the key expires and the manager says so

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(redis.RedisError):
            self.client.delete(self.key)


def live_workers(client: redis.Redis) -> list[dict]:
    """Each live worker's ``{"name", "queues", "host", "running"}``."""
    keys = list(client.scan_iter(PREFIX + "*", count=100))
    return [json.loads(raw) for raw in (client.mget(keys) if keys else []) if raw]


def unshared_tiers(workers: list[dict]) -> dict[str, list[str]]:
    """Disk tier id -> the memory and query workers on it, when they are on more than one: a memory that Redis
    evicted can then be loaded only where it was written, and is formed again from text anywhere else."""
    tiers: dict[str, list[str]] = {}
    for worker in workers:
        if worker.get("memory_tier") and {"memory", "query"} & set(worker["queues"]):
            tiers.setdefault(worker["memory_tier"], []).append(worker["name"])
    return tiers if len(tiers) > 1 else {}


def live_queues(client: redis.Redis) -> dict[str, list[str]]:
    """queue -> names of the live workers consuming it."""
    found: dict[str, list[str]] = {}
    for worker in live_workers(client):
        for queue in worker["queues"]:
            found.setdefault(queue, []).append(worker["name"])
    return found
