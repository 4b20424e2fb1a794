"""What the HTTP API accepts and returns (the OpenAPI schema is built from these)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from service.queries import TASKS


class ErrorOut(BaseModel):
    error: str = Field(examples=["no knowledge base named 'papers'"])


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, str] = Field(examples=[{"database": "ok", "redis": "ok", "worker:query": "no live worker"}])
    repair: dict[str, int] | None = Field(
        default=None,
        description="work whose task was lost, ready documents missing chunks or memory, and those being rebuilt",
        examples=[{"stale": 0, "damaged": 0, "repairing": 1}],
    )


class KbIn(BaseModel):
    name: str = Field(
        examples=["meetings"], pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="letters, digits, '.', '_' or '-'; 64 at most",
    )  # fmt: skip
    description: str = Field(default="", examples=["weekly product meetings"])


class KbOut(BaseModel):
    name: str
    description: str
    documents: dict[str, int] = Field(description="document count by status", examples=[{"ready": 3}])


class Accepted(BaseModel):
    id: str = Field(examples=["d12"])
    name: str = Field(examples=["notes.md"])
    status: str = Field(examples=["queued"])
    existing: str | None = Field(default=None, description="the name it already had, when the text was there")


class DocumentOut(BaseModel):
    id: str = Field(examples=["d12"])
    name: str
    status: str = Field(examples=["processing"])
    token_count: int | None = None
    memory_tokens: int | None = None
    chunk_count: int | None = None
    error: str | None = None
    progress: dict[str, Any] | None = Field(default=None, examples=[{"stage": "reading", "done": 2048, "total": 9000}])

    @classmethod
    def of(cls, info, progress: dict | None = None) -> DocumentOut:
        return cls(
            id=info.public_id, name=info.name, status=info.status, token_count=info.token_count,
            memory_tokens=info.memory_tokens, chunk_count=info.chunk_count, error=info.error, progress=progress,
        )  # fmt: skip


Task = Literal[TASKS]  # type: ignore[valid-type]


class QueryIn(BaseModel):
    question: str = Field(min_length=1, examples=["Who built the Kell bridge?"])
    task: Task = "memorag"
    callback_url: str | None = Field(
        default=None, examples=["https://example.com/hooks/memorag"],
        description="POSTed the result once done or failed, signed: X-Memorag-Signature: t=<unix>,v1=<HMAC-SHA256 "
        "of '<t>.<body>' with the key's webhook secret>; retried with backoff; http(s), public or allowed hosts",
    )  # fmt: skip


class BatchIn(BaseModel):
    callback_url: str | None = Field(default=None, description="as a query's, for every question of the batch")
    questions: list[QueryIn] = Field(
        description="each its own query; more than MEMORAG_MAX_BATCH (default 100) is refused whole with 413",
        examples=[[{"question": "Who built the Kell bridge?"}, {"question": "When did it open?"}]],
    )


class HistoryItem(BaseModel):
    id: str = Field(examples=["q7"])
    question: str
    task: str
    status: str = Field(examples=["done"])
    error: str | None = None
    asked_at: str
    finished_at: str | None = None
    answer: str | None = Field(default=None, description="the answer's text, once there is one")
    supported: bool | None = None
    citation: dict[str, Any] | None = None
    feedback: list[dict[str, Any]] = Field(default_factory=list, description="what was said about the answer")


class HistoryOut(BaseModel):
    queries: list[HistoryItem]
    next_cursor: str | None = Field(
        default=None, description="pass as ?cursor= for the next (older) page; null on the last page"
    )


class QueryOut(BaseModel):
    id: str = Field(examples=["q7"])
    status: str = Field(examples=["queued"])
    error: str | None = None


class ResultOut(BaseModel):
    query: str = Field(examples=["q7"])
    question: str
    task: str
    status: str
    error: str | None = None
    text: str | None = Field(default=None, description="the answer, or why the documents do not hold one")
    reader: str | None = Field(default=None, examples=["sentence"])
    supported: bool | None = Field(
        default=None, description="true only when the check passed: a sentence of the documents answers well enough"
    )
    citation: dict[str, Any] | None = Field(
        default=None,
        description="the sentence shown: chunk_id, doc_id, char_start, char_end, quote, context (title > headings), "
        "span (the short answer inside it, when the question asks for one: text, char_start, char_end) and "
        "citations (every sentence shown; a long answer cites each)",
    )
    reason: str | None = None
    evidence: list[dict[str, Any]] = Field(
        default_factory=list,
        description="the retrieved passages in document order: chunk_id, doc_id, document, ordinal, char_start, "
        "char_end, score, text and context (where the passage stands: title > headings, page, session date, speaker)",
    )
    clues: list[str] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)
    model: str | None = None
    model_fingerprint: str | None = None
    adapter_version: str | None = None

    model_config = {"extra": "ignore", "protected_namespaces": ()}


class FeedbackIn(BaseModel):
    good: bool = Field(description="was the answer right?")
    answer: str | None = Field(default=None, description="the correct answer, when it was wrong")
    comment: str | None = None
