"""Whether the service can take work: the database, Redis, a live worker per queue, and what awaits repair."""

from __future__ import annotations

from typing import Any

from sqlmodel import select

from core.redact import redact
from store import db


def readiness() -> tuple[bool, dict[str, Any]]:
    """(ready, the report): each check "ok" or why not, and repair counts (never names: no key is needed)."""
    checks: dict[str, str] = {}
    try:
        with db.session() as s:
            s.exec(select(db.KnowledgeBase.id).limit(1)).all()
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = redact(str(exc).splitlines()[0])
    try:
        from service.stores import live_queues
        from workers.app import QUEUES

        live = live_queues()
        checks["redis"] = "ok"
        for queue in QUEUES:
            checks[f"worker:{queue}"] = "ok" if live.get(queue) else "no live worker"
    except Exception as exc:
        checks["redis"] = redact(str(exc).splitlines()[0])
    ready = all(v == "ok" for v in checks.values())
    body: dict[str, Any] = {"ready": ready, "checks": checks}
    if checks.get("database") == "ok" and checks.get("redis") == "ok":
        from service import repair

        found = repair.findings()
        stale = len(found.stale_documents) + len(found.stale_queries)
        body["repair"] = {"stale": stale, "damaged": len(found.damaged), "repairing": len(found.repairing)}
    return ready, body
