"""The database is the truth: find work whose message was lost and stores that lost what the rows say they
hold, and put both right.

A row is *stale* when it is queued, processing or repairing, has been untouched
for the grace period, and its task id is nowhere: not in a broker queue, not
held by a live worker, not delivered recently. A delivery that no live worker
holds for longer than the grace is *lost* (its worker died holding it): the
broker would hand it back only after the visibility timeout (hours), so the
reconciler sends the work again at once and removes the stale delivery. Jobs are
idempotent, so sending such a row again is safe even when the reconciler is
wrong. A ready document is *damaged* when its chunks or its memory are
missing (or, with ``verify``, fail their checksums); it is marked repairing,
stays answerable, and an ingestion task rebuilds only what is missing.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import redis
from sqlmodel import select

from core.settings import Settings, get_settings
from store import db
from store.db import Document, KnowledgeBase, Query, Status
from workers.app import CONTROL, QUEUES, app
from workers.liveness import BEAT_S, live_workers

IN_FLIGHT = (Status.queued, Status.processing, Status.repairing, Status.waiting)
LOCK = "memorag:reconcile:lock"
PRIORITY_SEP = "\x06\x16"  # kombu's Redis transport keeps each priority level in "<queue>\x06\x16<n>"
UNACKED, UNACKED_INDEX = "unacked", "unacked_index"  # kombu's deliveries: tag -> message, tag -> when delivered


@dataclass
class Findings:
    """What one pass found, by public id; ``fixed`` says whether it also sent the work again."""

    stale_documents: list[str] = field(default_factory=list)
    stale_queries: list[str] = field(default_factory=list)
    lost_deliveries: dict[str, str] = field(default_factory=dict)  # delivery tag -> task id (no live worker has it)
    damaged: dict[str, str] = field(default_factory=dict)  # document -> what is missing
    repairing: list[str] = field(default_factory=list)  # documents being rebuilt now (before this pass)
    fixed: bool = False

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def clean(self) -> bool:
        return not (self.stale_documents or self.stale_queries or self.damaged)


def live_task_ids(client: redis.Redis, grace_s: float, lost: dict[str, str] | None = None) -> set[str]:
    """Every task id the broker or a live worker still holds: queued, held by a live worker, or delivered less
    than ``grace_s`` ago (its worker may not have said so yet). Older deliveries no live worker holds go in
    ``lost`` (delivery tag -> task id)."""
    ids: set[str] = set()
    for queue in (*QUEUES, CONTROL):
        for key in [queue.encode(), *client.scan_iter(f"{queue}{PRIORITY_SEP}*")]:
            ids.update(_task_id(raw) for raw in client.lrange(key, 0, -1))
    held = {task for worker in live_workers(client) for task in worker.get("running", [])}
    ids |= held
    # A worker names what it holds within a beat of receiving it, and a dead worker's key outlives it by TTL_S.
    cutoff = time.time() - max(grace_s, 2 * BEAT_S)
    delivered = dict(client.zrange(UNACKED_INDEX, 0, -1, withscores=True))
    for tag, raw in client.hgetall(UNACKED).items():
        task = _task_id(raw, delivered=True)
        if task in held or delivered.get(tag, 0.0) > cutoff or not task:
            ids.add(task)
        elif lost is not None:
            lost[tag.decode()] = task
    ids.discard("")
    return ids


def _task_id(raw: bytes, delivered: bool = False) -> str:
    try:
        message = json.loads(raw)
        return (message[0] if delivered else message)["headers"]["id"]
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


def reconcile(
    stores, *, kb_id: int | None = None, fix: bool = True, verify: bool = False, settings: Settings | None = None
) -> Findings:
    """One pass over the knowledge base ``kb_id`` (all when None); with ``fix``, send what is stale or damaged."""
    from store.redis import connect

    settings = settings or get_settings()
    client = connect(settings=settings)
    lock = client.lock(LOCK, timeout=300, blocking_timeout=30) if fix else None
    if lock is not None and not lock.acquire():
        raise TimeoutError("another reconcile pass is running; try again in a minute")
    try:
        findings = Findings(fixed=fix)
        live = live_task_ids(client, settings.reconcile_grace_s, findings.lost_deliveries)
        _find_stale(findings, live, kb_id, settings.reconcile_grace_s)
        _find_damaged(findings, stores, kb_id, verify=verify, memories=stores.memories.durable)
        if fix:
            _send_again(findings, settings)
            _forget(client, findings.lost_deliveries)
        return findings
    finally:
        if lock is not None and lock.owned():
            lock.release()


def _find_stale(findings: Findings, live: set[str], kb_id: int | None, grace_s: int) -> None:
    cutoff = datetime.now(UTC) - timedelta(seconds=grace_s)
    with db.session() as s:
        docs = s.exec(_scoped(select(Document).where(Document.status.in_(IN_FLIGHT)), Document, kb_id)).all()
        queries = s.exec(_scoped(select(Query).where(Query.status.in_(IN_FLIGHT)), Query, kb_id)).all()
    for doc in docs:
        if doc.status == Status.repairing and doc.task_id in live:
            findings.repairing.append(doc.public_id)
        elif doc.task_id not in live and db.aware(doc.updated_at) < cutoff:
            findings.stale_documents.append(doc.public_id)
    for query in queries:
        touched = db.aware(query.started_at or query.created_at)
        if query.task_id not in live and touched < cutoff:
            findings.stale_queries.append(query.public_id)


def _find_damaged(findings: Findings, stores, kb_id: int | None, *, verify: bool, memories: bool) -> None:
    """Ready documents whose chunks (always) or memories (unless memories expire by design) are not all there."""
    with db.session() as s:
        query = select(Document.id, Document.chunk_count, KnowledgeBase.name).join(KnowledgeBase)
        rows = s.exec(_scoped(query.where(Document.status == Status.ready), Document, kb_id)).all()
    by_kb: dict[str, dict[str, int]] = {}
    for doc_id, chunks, kb in rows:
        by_kb.setdefault(kb, {})[f"d{doc_id}"] = chunks or 0
    for kb, expected in by_kb.items():
        docs = list(expected)
        held = stores.index.verify(kb, docs) if verify else stores.index.document_counts(kb, docs)
        flagged = stores.index.damaged(kb)
        for doc in docs:
            if doc in flagged or held[doc] != expected[doc]:
                findings.damaged[doc] = f"chunks: {held[doc]} of {expected[doc]} intact"
        if memories:
            for doc in docs:
                problem = _memory_problem(stores.memories, kb, doc, verify)
                if problem:
                    findings.damaged[doc] = "; ".join(filter(None, [findings.damaged.get(doc), problem]))


def _memory_problem(store, kb: str, doc: str, verify: bool) -> str | None:
    if not verify:
        return None if store.exists(kb, doc) else "memory: missing"
    return store.verify(kb, doc)


def _forget(client: redis.Redis, lost: dict[str, str]) -> None:
    """Drop lost deliveries, so the broker does not hand them back after the visibility timeout as well (the
    work was sent again; were both to run, the first answer stands)."""
    if lost:
        client.pipeline().zrem(UNACKED_INDEX, *lost).hdel(UNACKED, *lost).execute()


def _send_again(findings: Findings, settings: Settings) -> None:
    """New task ids on the rows, committed before the messages go (a fast worker must find the row).

    Sent by name (the app routes them), so this module and ``workers.tasks`` do not import each other."""
    ingest, answer = "memorag.ingest", "memorag.answer"
    docs = [*findings.stale_documents, *(d for d in findings.damaged if d not in findings.stale_documents)]
    sends = []
    with db.session() as s:
        for public in docs:
            doc = s.get(Document, int(public[1:]))
            if doc is None:
                continue
            if doc.status == Status.ready:
                doc.status = Status.repairing
            elif doc.status == Status.processing:
                doc.status = Status.queued
            doc.task_id, doc.updated_at = uuid.uuid4().hex, db.utcnow()
            doc.error = findings.damaged.get(public) or "sent again: its task was lost"
            s.add(doc)
            sends.append((ingest, doc.id, doc.task_id))
        for public in findings.stale_queries:
            query = s.get(Query, int(public[1:]))
            if query is None:
                continue
            query.status, query.task_id, query.error = Status.queued, uuid.uuid4().hex, None
            query.started_at = db.utcnow()  # the grace period starts again
            s.add(query)
            sends.append((answer, query.id, query.task_id))
    for task, row_id, task_id in sends:
        app.send_task(task, args=[row_id], task_id=task_id)


def _scoped(query, table, kb_id: int | None):
    return query if kb_id is None else query.where(table.kb_id == kb_id)
