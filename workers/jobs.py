"""The work behind each task, as plain functions: records in, pipeline, records out.

Every job is idempotent: run twice (a redelivered message after a worker
died), it leaves the same rows, chunks and memory as running once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlmodel import select

from agent import pipeline
from agent.retrieval import FUSIONS
from core.redact import redact
from store import db
from store.db import Answer, Document, KnowledgeBase, Query, Status
from store.errors import MemoryProblem
from store.memories import MemoryNotFound
from store.redis import TRANSIENT
from workers.runtime import runtime

Progress = Callable[[str, int, int], None]  # stage, done, total
log = logging.getLogger(__name__)


def doc_key(document_id: int) -> str:
    """The document's name in the vector index and the memory store."""
    return f"d{document_id}"


def doc_id_of(key: str) -> int:
    return int(key.removeprefix("d"))


def ingest_document(document_id: int, on_progress: Progress | None = None) -> dict[str, Any]:
    """Make the stores hold the document's chunks and memory, building only what is missing, and mark it ready.

    A new document gets both; a repaired one (or one whose worker died after writing part) keeps what is
    intact: a memory that passes its checksum is not formed again.
    """
    report = on_progress or (lambda *_: None)
    rt = runtime()
    key = doc_key(document_id)
    with db.session() as s:
        doc = s.get(Document, document_id)
        if doc is None:
            return {"document": key, "status": "deleted"}
        scope, text, expected, name = s.get(KnowledgeBase, doc.kb_id).name, doc.text, doc.chunk_count, doc.name
        if doc.status == Status.ready and _chunks_intact(rt, scope, key, expected) and _memory_kept(rt, scope, key):
            return _summary(doc)
        if doc.attempts >= rt.settings.max_deliveries:  # every delivery so far killed its worker: never loop
            doc.status, doc.error, doc.updated_at = Status.failed, poisoned(doc, rt.settings), db.utcnow()
            doc.attempts = 0
            s.add(doc)
            return _summary(doc)
        if doc.status != Status.repairing:  # a repairing document stays answerable while it is rebuilt
            doc.status = Status.processing
        doc.error, doc.attempts, doc.updated_at = None, doc.attempts + 1, db.utcnow()
        s.add(doc)
    report("loading the model", 0, 0)
    started = time.perf_counter()
    with _failures_recorded(Document, document_id):  # a model that cannot load is the row's reason too
        lm, embedder = rt.lm, rt.embedder
        n_chunks = expected
        if not _chunks_intact(rt, scope, key, expected):
            report("indexing", 0, 0)
            n_chunks = pipeline.index_document(lm, embedder, rt.index, scope, key, text, name)
        meta = _stored_meta(rt, scope, key, lm.fingerprint)
        if meta is None:
            memory = pipeline.memorize(lm, text, settings=rt.settings, on_progress=lambda d, t: report("reading", d, t))
            meta = pipeline.save_memory(rt.memories, scope, key, memory).meta
    elapsed = time.perf_counter() - started
    with db.session() as s:
        doc = s.get(Document, document_id)
        if doc is None:  # deleted while we worked: leave nothing behind
            rt.memories.delete(scope, key)
            rt.index.delete_document(scope, key)
            return {"document": key, "status": "deleted"}
        repaired = doc.status == Status.repairing
        doc.status, doc.error, doc.updated_at, doc.attempts = Status.ready, None, db.utcnow(), 0
        doc.token_count, doc.memory_tokens = meta["doc_tokens"], meta["memory_tokens"]
        doc.chunk_count, doc.memory_key = n_chunks, f"{scope}/{key}"
        if repaired:
            doc.timings = doc.timings | {"repair_s": round(elapsed, 3)}
        else:
            doc.timings = {"ingest_s": round(elapsed, 3), "tokens_per_s": round(meta["doc_tokens"] / elapsed, 1)}
        s.add(doc)
        report("ready", meta["doc_tokens"], meta["doc_tokens"])
        return _summary(doc)


def _chunks_intact(rt, scope: str, key: str, expected: int | None) -> bool:
    """The index holds every chunk the row counts, each passing its checksum."""
    if expected is None or key in rt.index.damaged(scope):
        return False
    return rt.index.verify(scope, [key])[key] == expected


def _memory_kept(rt, scope: str, key: str) -> bool:
    """Nothing to rebuild: the memory is whole, or memories expire by design and are rebuilt when asked for."""
    return not rt.memories.durable or _stored_meta(rt, scope, key) is not None


def _stored_meta(rt, scope: str, key: str, fingerprint: str | None = None) -> dict | None:
    """The stored memory's metadata when it is whole (checksum) and, given a fingerprint, this model's."""
    try:
        return rt.memories.get(scope, key, fingerprint=fingerprint)[1].meta
    except (MemoryNotFound, MemoryProblem):
        return None


def reindex_knowledge_base(kb_id: int, on_progress: Progress | None = None, batch: int = 16) -> dict[str, Any]:
    """Rebuild the knowledge base's chunks in the vector index from the database's text, a batch of documents
    (embedded together) at a time; memories are untouched and other knowledge bases never wait on it.
    Chunks stored before they carried their title and headings gain them here."""
    from agent.retrieval import chunk_document

    report = on_progress or (lambda *_: None)
    rt = runtime()
    with db.session() as s:
        kb = s.get(KnowledgeBase, kb_id)
        if kb is None:
            return {"kb_id": kb_id, "status": "deleted"}
        scope, ids = kb.name, db.ready_documents(s, kb_id)
    report("indexing", 0, len(ids))
    lm, embedder, chunks_total = rt.lm, rt.embedder, 0
    for start in range(0, len(ids), batch):
        with db.session() as s:
            texts = {
                i: (doc.text, doc.name) for i in ids[start : start + batch] if (doc := s.get(Document, i)) is not None
            }
        chunked = {i: chunk_document(doc_key(i), text, lm.tokenizer, name=name) for i, (text, name) in texts.items()}
        vectors = embedder.encode([c.searchable for chunks in chunked.values() for c in chunks])
        offset = 0
        for i, chunks in chunked.items():
            rt.index.delete_document(scope, doc_key(i))
            rt.index.upsert(scope, chunks, vectors[offset : offset + len(chunks)])
            offset += len(chunks)
        with db.session() as s:
            for i, chunks in chunked.items():
                if (doc := s.get(Document, i)) is not None:
                    doc.chunk_count = len(chunks)
                    s.add(doc)
        chunks_total += offset
        report("indexing", min(start + batch, len(ids)), len(ids))
    return {"kb": scope, "documents": len(ids), "chunks": chunks_total}


def sync_adapter(rt=None) -> str | None:
    """Load the promoted clue adapter if it is not the one in the slot (the hot swap between tasks)."""
    from agent import adapters
    from store.adapters import AdapterRegistry

    rt = rt or runtime()
    wanted = AdapterRegistry(rt.memories.client).promoted()
    lm = rt.lm
    if wanted == adapters.loaded_version(lm):
        return wanted
    if wanted is None:
        adapters.clear(lm)
        return None
    try:
        weights, spec, info = adapters.from_bytes(
            AdapterRegistry(rt.memories.client).weights(wanted), base_fingerprint=lm.fingerprint
        )
        fusion = info.get("fusion")
        if fusion is not None and fusion not in FUSIONS:
            raise adapters.AdapterMismatch(f"gated with fusion {fusion!r}, which this version does not know")
        adapters.load(lm, weights, wanted, spec, fusion=fusion)
    except adapters.AdapterMismatch as exc:  # another model's adapter: answer with the base model
        log.warning("not using adapter %s: %s", wanted, exc)
        adapters.clear(lm)
        return None
    log.info("clue adapter %s loaded (fusion %s)", wanted, fusion or "default")
    return wanted


def answer_query(query_id: int) -> dict[str, Any]:
    """Answer the query from its knowledge base's ready documents and store the Answer row."""
    rt = runtime()
    with db.session() as s:
        query = s.get(Query, query_id)
        if query is None:
            return {"query": f"q{query_id}", "status": "deleted"}
        existing = s.exec(select(Answer).where(Answer.query_id == query_id)).first()
        if query.status == Status.done and existing is not None:
            return {"query": query.public_id, "status": "done", "answer": existing.text}
        kb = s.get(KnowledgeBase, query.kb_id)
        ready = db.ready_documents(s, kb.id)
        if not ready:
            query.status, query.error = Status.failed, db.no_ready_documents(kb.name)
            s.add(query)
            return {"query": query.public_id, "status": "failed", "error": query.error}
        if query.attempts >= rt.settings.max_deliveries:
            query.status, query.error, query.attempts = Status.failed, poisoned(query, rt.settings), 0
            query.finished_at = db.utcnow()
            s.add(query)
            return {"query": query.public_id, "status": "failed", "error": query.error}
        damaged = _under_repair(rt, s, kb, ready)
        if damaged:
            return _wait_for_repair(s, query, kb, damaged, rt.settings)
        query.status, query.started_at, query.error = Status.processing, db.utcnow(), None
        query.attempts += 1
        s.add(query)
        question, task, scope = query.text, query.task, kb.name
    with _failures_recorded(Query, query_id):
        sync_adapter(rt)
        stores, docs = (rt.memories, rt.index), [doc_key(i) for i in ready]
        result = pipeline.answer(
            rt.lm, rt.embedder, *stores, scope, docs, question, task=task, k=rt.settings.top_k,
            settings=rt.settings, text_of=document_text,
        )  # fmt: skip
    with db.session() as s:
        query = s.exec(select(Query).where(Query.id == query_id).with_for_update()).first()  # one writer at a time
        if query is None:
            return {"query": f"q{query_id}", "status": "deleted"}
        written = s.exec(select(Answer).where(Answer.query_id == query_id)).first() is not None
        if not written:
            s.add(_answer_row(s, query_id, result, rt))
        query.status, query.error, query.attempts = Status.done, None, 0
        query.finished_at = query.finished_at if written else db.utcnow()
        s.add(query)
    if written:  # a late attempt (its worker was cut off while another answered): the first answer stands
        return {"query": f"q{query_id}", "status": "already answered"}
    return {"query": f"q{query_id}", "status": "done", "answer": result.text, "rebuilt": result.rebuilt}


class WaitForRepair(Exception):
    """The question's knowledge base is being rebuilt: the task asks again in ``countdown`` seconds."""

    def __init__(self, query: str, countdown: float) -> None:
        super().__init__(f"{query} waits for its knowledge base's repair")
        self.countdown = countdown


REPAIR_POLL_S = 5.0


def _under_repair(rt, s, kb: KnowledgeBase, ready: list[int]) -> list[str]:
    """The knowledge base's answerable documents that are being rebuilt or whose chunks the index lacks."""
    docs = s.exec(select(Document).where(Document.id.in_(ready))).all()  # one query on every question's path
    held = rt.index.document_counts(kb.name, [doc_key(i) for i in ready])
    return [d.public_id for d in docs if d.status == Status.repairing or held[d.public_id] < (d.chunk_count or 0)]


def _wait_for_repair(s, query: Query, kb: KnowledgeBase, damaged: list[str], settings) -> dict[str, Any]:
    """Wait (the task is sent again) while the knowledge base is repaired, and ask for the repair; past
    ``repair_wait_s`` end with an error that says so: never a decline about documents that are being rebuilt."""
    waited = (db.utcnow() - db.aware(query.created_at)).total_seconds()
    names = ", ".join(damaged[:5]) + (f" and {len(damaged) - 5} more" if len(damaged) > 5 else "")
    if waited > settings.repair_wait_s:
        query.status, query.finished_at = Status.failed, db.utcnow()
        query.error = (
            f"knowledge base {kb.name!r} is being repaired ({names}) and was not ready after "
            f"{settings.repair_wait_s:.0f} s (MEMORAG_REPAIR_WAIT_S); ask again in a few minutes"
        )
        s.add(query)
        return {"query": query.public_id, "status": "failed", "error": query.error}
    if query.status != Status.waiting:  # first sight of the damage: ask the reconciler to rebuild it now
        from workers.app import app

        app.send_task("memorag.reconcile", kwargs={"kb_id": kb.id})
    query.status, query.error = Status.waiting, f"waiting for the repair of {names}"
    s.add(query)
    s.commit()
    raise WaitForRepair(query.public_id, REPAIR_POLL_S)


def poisoned(row: Document | Query, settings) -> str:
    """Why a row whose worker died on every delivery ends failed, in words a person can act on."""
    n = row.attempts
    if isinstance(row, Document):
        return (
            f"the worker died {n} times while ingesting this document (forming its memory): it may need more memory "
            f"than the worker has; give the worker more memory, or lower MEMORAG_MAX_DOCUMENT_TOKENS "
            f"({settings.max_document_tokens}) or MEMORAG_BETA so that such a document is refused or compressed more, "
            "then upload it again"
        )
    return (
        f"the worker died {n} times while answering this question: check the worker's log "
        "(MEMORAG_HOME/logs/worker.log) and its memory, then ask again"
    )


def _answer_row(s, query_id: int, result: pipeline.Answer, rt) -> Answer:
    """The query's Answer row with its citation and evidence."""
    names = _document_names([doc_id_of(e.chunk.doc_id) for e in result.evidence])  # the citation's is among them
    row = Answer(query_id=query_id, text="")
    row.text, row.clues, row.documents, row.timings = result.text, result.clues, result.documents, result.timings
    row.evidence = [
        {
            "chunk_id": e.chunk.id,
            "doc_id": e.chunk.doc_id,
            "document": names.get(e.chunk.doc_id, ""),
            "ordinal": e.chunk.ordinal,
            "char_start": e.chunk.char_start,
            "char_end": e.chunk.char_end,
            "score": round(e.score, 6),
            "text": e.chunk.text,
            "context": e.chunk.context,
        }
        for e in result.evidence
    ]
    row.model, row.model_fingerprint = rt.lm.name, rt.lm.fingerprint
    row.generator = rt.settings.generator_url or f"local:{rt.lm.name}"
    row.adapter_version = result.adapter_version
    reading = result.reading
    row.reader = reading.path if reading else "memory"
    row.supported = reading.supported if reading else None
    row.citation = None
    if reading and reading.citation:
        named = [c.as_dict() | {"document": names.get(c.doc_id, "")} for c in reading.citations or (reading.citation,)]
        row.citation = reading.citation.as_dict() | {"document": names.get(reading.citation.doc_id, "")}
        row.citation["citations"] = named  # every sentence shown: a long answer cites each
    row.reason, row.proposed = (reading.reason, reading.proposed) if reading else (None, None)
    return row


def document_text(key: str) -> str:
    """A stored document's text by its memory key; raises LookupError once deleted."""
    with db.session() as s:
        doc = s.get(Document, doc_id_of(key))
        if doc is None:
            raise LookupError(f"document {key} was deleted")
        return doc.text


def _document_names(ids: list[int]) -> dict[str, str]:
    if not ids:
        return {}
    with db.session() as s:
        return {doc_key(i): name for i, name in s.exec(select(Document.id, Document.name).where(Document.id.in_(ids)))}


@contextmanager
def _failures_recorded(table: type[Document] | type[Query], row_id: int) -> Iterator[None]:
    """Store errors leave the row queued for the retry; anything else marks it failed with the reason."""
    try:
        yield
    except TRANSIENT as exc:
        _set_status(table, row_id, Status.queued, f"will retry: {exc}")
        raise
    except Exception as exc:
        _set_status(table, row_id, Status.failed, f"{type(exc).__name__}: {exc}")
        raise


def _set_status(table: type[Document] | type[Query], row_id: int, status: Status, error: str | None) -> None:
    with db.session() as s:
        row = s.get(table, row_id)
        if row is not None:
            if not (row.status == Status.repairing and status == Status.queued):  # still answerable meanwhile
                row.status = status
            row.error = redact(error) if error else None
            if isinstance(row, Document):
                row.updated_at = db.utcnow()
            s.add(row)


def _summary(doc: Document) -> dict[str, Any]:
    return {
        "document": doc.public_id,
        "status": doc.status,
        "tokens": doc.token_count,
        "memory_tokens": doc.memory_tokens,
        "chunks": doc.chunk_count,
    }
