"""Records: knowledge bases, documents, queries, answers, feedback, training runs.

SQLite under ``MEMORAG_HOME`` by default (WAL, busy timeout), PostgreSQL via
``MEMORAG_DATABASE_URL``. The schema is created on first use by running the
Alembic migrations in ``store/migrations``; later schema changes are new
revisions there. Engines never cross a fork: a forked worker child builds
its own.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import JSON, Column, Text, UniqueConstraint, bindparam, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlmodel import Field, Session, SQLModel, create_engine, select

from core.settings import Settings, get_settings
from store.redis import StoreUnavailable

MIGRATIONS = Path(__file__).with_name("migrations")


class DatabaseUnavailable(StoreUnavailable):
    """The records database cannot be reached; the message names the URL."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(when: datetime) -> datetime:
    """SQLite hands datetimes back without their zone; they were written in UTC."""
    return when if when.tzinfo else when.replace(tzinfo=UTC)


class Status(StrEnum):
    queued = "queued"
    processing = "processing"
    ready = "ready"  # documents
    repairing = "repairing"  # a ready document whose chunks or memory are being rebuilt; still answerable
    done = "done"  # queries
    waiting = "waiting for repair"  # a query whose knowledge base is being rebuilt: it is answered after the repair
    failed = "failed"


ANSWERABLE = (Status.ready, Status.repairing)
MAX_ROW_ID = 2**31 - 1  # ids are PostgreSQL integers: a larger number names no row (and must not reach a query)


class KnowledgeBase(SQLModel, table=True):
    __tablename__ = "knowledge_base"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=64)
    description: str = ""
    created_at: datetime = Field(default_factory=utcnow)


class Document(SQLModel, table=True):
    __tablename__ = "document"
    __table_args__ = (UniqueConstraint("kb_id", "content_hash"),)
    id: int | None = Field(default=None, primary_key=True)
    kb_id: int = Field(foreign_key="knowledge_base.id", index=True)
    name: str
    text: str = Field(sa_column=Column(Text, nullable=False))
    content_hash: str = Field(max_length=64)
    status: str = Field(default=Status.queued, index=True)
    error: str | None = None
    token_count: int | None = None
    memory_tokens: int | None = None
    chunk_count: int | None = None
    memory_key: str | None = None
    task_id: str | None = None
    attempts: int = 0  # deliveries begun and never ended since the last success: its worker died holding them
    timings: dict[str, float] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    @property
    def public_id(self) -> str:
        return f"d{self.id}"


class Query(SQLModel, table=True):
    __tablename__ = "query"
    id: int | None = Field(default=None, primary_key=True)
    kb_id: int = Field(foreign_key="knowledge_base.id", index=True)
    text: str = Field(sa_column=Column(Text, nullable=False))
    task: str = "memorag"
    status: str = Field(default=Status.queued, index=True)
    error: str | None = None
    task_id: str | None = None
    attempts: int = 0  # as Document.attempts
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # Where the result is POSTed once the query is done or failed, signed with the asking key's secret.
    callback_url: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    key_id: int | None = None  # the API key that asked (None: the command line)

    @property
    def public_id(self) -> str:
        return f"q{self.id}"


class WebhookDelivery(SQLModel, table=True):
    """One attempt to POST a query's result to its callback: kept whether it landed or not."""

    __tablename__ = "webhook_delivery"
    id: int | None = Field(default=None, primary_key=True)
    query_id: int = Field(foreign_key="query.id", index=True)
    url: str = Field(sa_column=Column(Text, nullable=False))
    attempt: int
    status_code: int | None = None  # the receiver's reply; None when there was none
    error: str | None = Field(default=None, sa_column=Column(Text))
    delivered: bool = False
    created_at: datetime = Field(default_factory=utcnow)


class Answer(SQLModel, table=True):
    __tablename__ = "answer"
    id: int | None = Field(default=None, primary_key=True)
    query_id: int = Field(foreign_key="query.id", unique=True)
    text: str = Field(sa_column=Column(Text, nullable=False))
    clues: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # [{"chunk_id", "doc_id", "ordinal", "char_start", "char_end", "score", "text", "context"}], in document order
    evidence: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    documents: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    timings: dict[str, float] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    model: str = ""
    model_fingerprint: str = ""
    generator: str = ""
    adapter_version: str | None = None
    # Grounding: "extract", "generate" or "memory"; whether the evidence supports what is shown; the cited
    # sentence {"chunk_id", "doc_id", "char_start", "char_end", "quote"}; why an answer was withheld, and it.
    reader: str = ""
    supported: bool | None = None
    citation: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    reason: str | None = Field(default=None, sa_column=Column(Text))
    proposed: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow)


class Feedback(SQLModel, table=True):
    __tablename__ = "feedback"
    id: int | None = Field(default=None, primary_key=True)
    query_id: int = Field(foreign_key="query.id", index=True)
    rating: int  # +1 good, -1 bad
    corrected_answer: str | None = Field(default=None, sa_column=Column(Text))
    comment: str | None = Field(default=None, sa_column=Column(Text))
    source: str = "user"  # "user", or the dataset a row was imported from
    # Gold evidence where known (imported datasets): [{"document": id, "start": char, "end": char}, ...]
    evidence: list[dict[str, int]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class TrainingRun(SQLModel, table=True):
    __tablename__ = "training_run"
    id: int | None = Field(default=None, primary_key=True)
    status: str = Field(default=Status.queued)
    feedback_rows: int = 0
    pairs: int = 0
    losses: list[float] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    decision: str | None = None  # "promoted" or "kept"
    reason: str | None = Field(default=None, sa_column=Column(Text))
    adapter_version: str | None = None
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


class AdapterVersion(SQLModel, table=True):
    __tablename__ = "adapter_version"
    id: int | None = Field(default=None, primary_key=True)
    version: str = Field(unique=True, max_length=64)
    base_fingerprint: str
    redis_key: str
    sha256: str = Field(max_length=64)
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    promoted: bool = False
    created_at: datetime = Field(default_factory=utcnow)
    promoted_at: datetime | None = None


class ApiKey(SQLModel, table=True):
    """An HTTP API key: its role in one knowledge base (none: every one), stored as a salted scrypt hash."""

    __tablename__ = "api_key"
    id: int | None = Field(default=None, primary_key=True)
    kb_id: int | None = Field(default=None, foreign_key="knowledge_base.id", index=True)
    role: str = Field(max_length=16)
    salt: str = Field(max_length=64)
    digest: str = Field(max_length=128)
    # Signs the webhooks of the queries this key asks (HMAC-SHA256); shown once, with the key. A signing
    # secret must be read back to sign, so it is stored as it is, unlike the key's own secret.
    webhook_secret: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None


def ready_documents(s: Session, kb_id: int) -> list[int]:
    """The knowledge base's documents a question can be answered from, in id order."""
    query = select(Document.id).where(Document.kb_id == kb_id, Document.status.in_(ANSWERABLE))
    return list(s.exec(query.order_by(Document.id)).all())


_KB_WITH_READY = (
    select(KnowledgeBase.id)
    .join(Document, Document.kb_id == KnowledgeBase.id)
    .where(KnowledgeBase.name == bindparam("name"), Document.status.in_(ANSWERABLE))
    .limit(1)
)


def kb_with_ready_documents(kb_name: str) -> int | None:
    """The knowledge base's id if a question could be answered from it yet, else None (none by that name, or
    no ready document): one indexed lookup on a submission's path."""
    found = read_one(_KB_WITH_READY, {"name": kb_name})
    return None if found is None else found[0]


def no_ready_documents(kb_name: str) -> str:
    """Why a question to this knowledge base cannot be answered yet (the manager and workers say the same)."""
    return f"knowledge base {kb_name!r} has no ready documents"


# engines ----------------------------------------------------------------------
_engines: dict[str, Engine] = {}
_lock = threading.Lock()
os.register_at_fork(after_in_child=_engines.clear)


def database_url(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    if not settings.database_url and (broker := remote_host(settings.redis_url)):
        raise DatabaseUnavailable(
            f"MEMORAG_REDIS_URL is on another host ({broker}), so this deployment spans hosts, but "
            "MEMORAG_DATABASE_URL is unset: a SQLite file here would hold records no other host sees; "
            "set MEMORAG_DATABASE_URL to the deployment's PostgreSQL"
        )
    url = settings.database_url or f"sqlite:///{settings.home / 'memorag.db'}"
    for scheme in ("postgresql://", "postgres://"):  # the driver this project installs
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url.removeprefix(scheme)
    return url


def remote_host(url: str) -> str | None:
    """The host of a store URL when it is not this machine (not loopback), else None."""
    host = urlsplit(url).hostname if url else None
    if not host or host == "localhost":
        return None
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:
            return None
    return host


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    return make_url(url).render_as_string(hide_password=True)


def _sqlite_pragmas(synchronous: str):
    """WAL, a writer waits for another instead of failing, and ``synchronous`` (MEMORAG_SQLITE_SYNC): "normal"
    syncs at checkpoints, not at every commit, which is what held a submission's write lock (p95 58 -> 36 ms
    in ops/bench/api.py); a commit then survives any process crash, and only an OS crash or power loss may
    undo the last few. "full" syncs each commit."""

    def on_connect(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute(f"PRAGMA synchronous={synchronous.upper()}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return on_connect


def get_engine(settings: Settings | None = None) -> Engine:
    """The process's engine for the configured database, migrated to the latest schema."""
    url = database_url(settings)
    with _lock:
        if url in _engines:
            return _engines[url]
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
            event.listen(engine, "connect", _sqlite_pragmas((settings or get_settings()).sqlite_sync))
        else:
            engine = create_engine(url, pool_pre_ping=True, connect_args=_connect_args(url))
        try:
            migrate(engine)
        except OperationalError as exc:
            engine.dispose()
            raise DatabaseUnavailable(
                f"database {safe_url(url)} is not reachable ({_first_line(exc)}); check MEMORAG_DATABASE_URL"
            ) from None
        _engines[url] = engine
        return engine


def _connect_args(url: str) -> dict:
    return {"connect_timeout": 5} if make_url(url).get_backend_name() == "postgresql" else {}


def _first_line(exc: BaseException) -> str:
    return str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def migrate(engine: Engine) -> None:
    """Bring the schema to the latest Alembic revision (creates it on an empty database)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":  # several workers may start at once
            connection.execute(text("SELECT pg_advisory_xact_lock(7140815)"))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def read_one(statement, params: dict | None = None, settings: Settings | None = None):
    """The first row of a select of columns, or None: a request's small lookups (its key, its knowledge base)
    without an ORM session, which cost as much again as the query. Hot ones pass a statement built once with
    bind parameters, and ``params``. Errors as ``session``."""
    engine = get_engine(settings)
    try:
        with engine.connect() as connection:
            return connection.execute(statement, params or {}).first()
    except OperationalError as exc:
        raise DatabaseUnavailable(f"database {safe_url(str(engine.url))} failed: {_first_line(exc)}") from None


@contextmanager
def session(settings: Settings | None = None) -> Iterator[Session]:
    """A session that commits on success; database errors become DatabaseUnavailable."""
    engine = get_engine(settings)
    try:
        with Session(engine, expire_on_commit=False) as s:
            yield s
            s.commit()
    except OperationalError as exc:
        raise DatabaseUnavailable(f"database {safe_url(str(engine.url))} failed: {_first_line(exc)}") from None


def reset_engines() -> None:
    """Forget cached engines (tests that switch databases)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
