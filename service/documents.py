"""Documents: add (each text once per knowledge base), list, follow, remove."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlmodel import select

from agent.choices import DEFAULT_MODEL_DIRNAME
from core.settings import Settings, get_settings
from service.bases import get_kb
from service.errors import NotFound
from service.ids import document_number
from service.stores import Stores, require_worker, send, task_progress
from store import db


def content_hash(text: str) -> str:
    """What makes two documents of a knowledge base the same document."""
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Added:
    """One submitted text: the document that holds it and whether it was new."""

    id: int
    name: str  # as submitted
    status: str
    existing: str | None = None  # the name it already had in the knowledge base, when not new

    @property
    def public_id(self) -> str:
        return f"d{self.id}"

    @property
    def pending(self) -> bool:
        return self.status in (db.Status.queued, db.Status.processing)


def read_files(paths: Sequence[Path]) -> list[tuple[str, str]]:
    """(name, text) of each file, all read and checked before anything is queued."""
    from agent.documents import read_document

    settings = get_settings()
    return [(path.name, read_document(path, settings.max_document_mb, settings.max_pdf_pages)) for path in paths]


def tokenizer_file(settings: Settings) -> Path | None:
    """The memory model's tokenizer on this machine, for counting a document's tokens before it is queued."""
    if settings.model in ("", "default"):
        return settings.models_dir / DEFAULT_MODEL_DIRNAME / "tokenizer.json"
    path = Path(settings.model).expanduser()
    return path / "tokenizer.json" if path.is_dir() else None


def check_lengths(texts: Sequence[tuple[str, str]]) -> None:
    """Refuse the whole submission if one document is over MEMORAG_MAX_DOCUMENT_TOKENS."""
    from agent.documents import check_length

    settings = get_settings()
    for name, text in texts:
        check_length(name, text, settings.max_document_tokens, tokenizer_file(settings))


def add_documents(kb_name: str, texts: Sequence[tuple[str, str]]) -> list[Added]:
    """Add (name, text) documents to a knowledge base and send their ingestion.

    A text the knowledge base already holds is not added twice (one still
    queued is sent again: the job is idempotent, a lost message is not); a
    failed one is queued again.
    """
    with db.session() as s:
        kb_id = get_kb(s, kb_name).id
    check_lengths(texts)
    require_worker("memory")
    added: list[Added] = []
    send: list[tuple[int, str]] = []
    for name, text in texts:
        digest = content_hash(text)
        with db.session() as s:
            doc = s.exec(
                select(db.Document).where(db.Document.kb_id == kb_id, db.Document.content_hash == digest)
            ).first()
            if doc is not None and doc.status != db.Status.failed:
                if doc.status == db.Status.queued:
                    doc.task_id = uuid.uuid4().hex
                    send.append((doc.id, doc.task_id))
                added.append(Added(doc.id, name, doc.status, existing=doc.name))
                continue
            doc = doc or db.Document(kb_id=kb_id, name=name, text=text, content_hash=digest)
            doc.status, doc.error, doc.task_id = db.Status.queued, None, uuid.uuid4().hex
            s.add(doc)
            s.flush()
            send.append((doc.id, doc.task_id))
            added.append(Added(doc.id, name, db.Status.queued))
    _send_ingestion(send)
    return added


def _send_ingestion(docs: list[tuple[int, str]]) -> None:
    """Only after the rows are committed, or a fast worker finds none."""
    from workers.tasks import ingest

    for doc_id, task_id in docs:
        send(ingest, f"d{doc_id}", args=[doc_id], task_id=task_id)


@dataclass(frozen=True)
class DocumentInfo:
    id: int
    name: str
    status: str
    token_count: int | None
    memory_tokens: int | None
    chunk_count: int | None
    error: str | None

    @property
    def public_id(self) -> str:
        return f"d{self.id}"

    @property
    def finished(self) -> bool:
        return self.status in (db.Status.ready, db.Status.failed)


def _info(doc: db.Document) -> DocumentInfo:
    return DocumentInfo(doc.id, doc.name, doc.status, doc.token_count, doc.memory_tokens, doc.chunk_count, doc.error)


def document_text(doc_id: int) -> str:
    """The stored text citations index into."""
    with db.session() as s:
        row = s.get(db.Document, doc_id)
        if row is None:
            raise NotFound(f"no document d{doc_id}")
        return row.text


def read_upload(filename: str | None, stream, settings: Settings | None = None) -> str:
    """An uploaded file's text, checked as a file given to ``ingest`` is (size, type, PDF text); errors name
    the upload. An oversized upload is never read whole: one byte past the limit is enough to refuse it."""
    import tempfile

    from agent.documents import read_document

    settings = settings or get_settings()
    name = filename or "upload.txt"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"upload{Path(name).suffix or '.txt'}"
        path.write_bytes(stream.read(int(settings.max_document_mb * 2**20) + 1))
        try:
            return read_document(path, settings.max_document_mb, settings.max_pdf_pages)
        except ValueError as exc:
            raise type(exc)(str(exc).replace(str(path), name)) from None


def list_documents(kb_name: str) -> list[DocumentInfo]:
    with db.session() as s:
        base = get_kb(s, kb_name)
        rows = s.exec(select(db.Document).where(db.Document.kb_id == base.id).order_by(db.Document.id)).all()
        return [_info(d) for d in rows]


def document(doc_id: int) -> DocumentInfo | None:
    with db.session() as s:
        doc = s.get(db.Document, doc_id)
        return None if doc is None else _info(doc)


def document_progress(doc_id: int) -> tuple[DocumentInfo | None, dict | None]:
    """The document (None once deleted) and, while it is being read, its task's last progress."""
    with db.session() as s:
        doc = s.get(db.Document, doc_id)
        if doc is None:
            return None, None
        info, task_id = _info(doc), doc.task_id
    return info, None if info.finished else task_progress(task_id)


@dataclass(frozen=True)
class Removed:
    public_id: str
    name: str
    kb: str
    chunks: int


def remove_document(ident: str, stores: Stores | None = None) -> Removed:
    """Remove a document from its knowledge base: its row, chunks and memory."""
    number = document_number(ident)
    with db.session() as s:
        doc = s.get(db.Document, number)
        if doc is None:
            raise NotFound(f"no document {ident}")
        kb, name, public = s.get(db.KnowledgeBase, doc.kb_id).name, doc.name, doc.public_id
    stores = stores or Stores()
    stores.memories.delete(kb, public)
    chunks = stores.index.delete_document(kb, public)
    with db.session() as s:
        s.delete(s.get(db.Document, number))
    return Removed(public, name, kb, chunks)
