"""The API's routes: each parses, checks the key (``api.access``), calls the service, and shapes the reply."""

from __future__ import annotations

import json
import time
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, File, Query, UploadFile
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse

from api.access import DocNumber, Key, QueryNumber, kb_id_for, operator, owned
from api.errors import ERRORS
from api.models import (
    Accepted,
    BatchIn,
    DocumentOut,
    FeedbackIn,
    HistoryOut,
    KbIn,
    KbOut,
    QueryIn,
    QueryOut,
    Readiness,
    ResultOut,
)
from service import Invalid, bases, documents, health, queries, training
from service import feedback as feedback_service

PAGE = FilePath(__file__).parent / "static" / "index.html"  # the web page: no build step
router = APIRouter(responses=ERRORS)


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(PAGE, media_type="text/html")


@router.get("/healthz", tags=["service"], summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz", tags=["service"], summary="The database, Redis and a worker per queue answer",
    response_model=Readiness, responses={503: {"model": Readiness, "description": "something is not ready"}},
)  # fmt: skip
def readyz() -> JSONResponse:
    return _readiness()


@router.get("/v1/kbs", tags=["knowledge bases"], summary="The knowledge bases this key sees")
def list_kbs(who: Key) -> list[KbOut]:
    visible = [k for k in bases.list_kbs() if who.sees(k.id)]
    return [KbOut(name=k.name, description=k.description, documents=k.documents) for k in visible]


@router.post("/v1/kbs", status_code=201, tags=["knowledge bases"], summary="Create a knowledge base (admin)")
def create_kb(body: KbIn, who: Key) -> KbOut:
    operator(who, "create knowledge bases")
    bases.create_kb(body.name, body.description)
    return KbOut(name=body.name, description=body.description, documents={})


@router.delete("/v1/kbs/{name}", tags=["knowledge bases"], summary="Delete a knowledge base and all it holds (admin)")
def delete_kb(name: str, who: Key) -> dict[str, Any]:
    kb_id_for(who, name, "admin")
    return {"deleted": name, "documents": bases.delete_kb(name)}


@router.post("/v1/kbs/{name}/documents", status_code=202, tags=["documents"], summary="Upload documents (writer)")
def upload(name: str, who: Key, files: Annotated[list[UploadFile], File()]) -> list[Accepted]:
    kb_id_for(who, name, "writer")
    texts = [(upload.filename or "upload.txt", documents.read_upload(upload.filename, upload.file)) for upload in files]
    return [Accepted(id=d.public_id, name=d.name, status=d.status, existing=d.existing)
            for d in documents.add_documents(name, texts)]  # fmt: skip


@router.get("/v1/kbs/{name}/documents", tags=["documents"], summary="The knowledge base's documents")
def list_documents(name: str, who: Key) -> list[DocumentOut]:
    kb_id_for(who, name, "reader")
    return [DocumentOut.of(d) for d in documents.list_documents(name)]


@router.get("/v1/documents/{doc_id}", tags=["documents"], summary="A document's status and progress")
def get_document(doc_id: DocNumber, who: Key) -> DocumentOut:
    owned(who, "d", doc_id, "reader")
    info, progress = documents.document_progress(doc_id)
    return DocumentOut.of(info, progress)


@router.delete("/v1/documents/{doc_id}", tags=["documents"], summary="Remove a document (writer)")
def delete_document(doc_id: DocNumber, who: Key) -> dict[str, Any]:
    owned(who, "d", doc_id, "writer")
    gone = documents.remove_document(f"d{doc_id}")
    return {"removed": gone.public_id, "name": gone.name, "chunks": gone.chunks}


@router.post("/v1/kbs/{name}/queries", status_code=202, tags=["queries"], summary="Ask a question; answered later")
def ask(name: str, body: QueryIn, who: Key) -> QueryOut:
    kb_id_for(who, name, "reader")
    ticket = queries.ask(name, body.question, body.task, callback_url=body.callback_url, key_id=who.key_id)
    return QueryOut(id=ticket.public_id, status="queued")


@router.post(
    "/v1/kbs/{name}/queries:batch", status_code=202, tags=["queries"],
    summary="Ask many questions at once, each its own query; all are queued or none",
)  # fmt: skip
def ask_batch(name: str, body: BatchIn, who: Key) -> list[QueryOut]:
    kb_id_for(who, name, "reader")
    if any(q.callback_url for q in body.questions):
        raise Invalid("a batch has one callback_url, beside its questions, not one per question")
    asked = [(q.question, q.task) for q in body.questions]
    tickets = queries.ask_many(name, asked, callback_url=body.callback_url, key_id=who.key_id)
    return [QueryOut(id=t.public_id, status="queued") for t in tickets]


@router.get("/v1/kbs/{name}/queries", tags=["queries"], summary="Questions and their answers, newest first")
def query_history(
    name: str,
    who: Key,
    status: Annotated[str | None, Query(description="only queries in this status", examples=["done"])] = None,
    limit: Annotated[int, Query(ge=1, le=queries.HISTORY_PAGE_MAX)] = 20,
    cursor: Annotated[str | None, Query(description="next_cursor of the page before", examples=["q12"])] = None,
) -> HistoryOut:
    kb_id_for(who, name, "reader")
    page = queries.history(name, status=status, limit=limit, cursor=cursor)
    return HistoryOut(queries=page.queries, next_cursor=page.next_cursor)


@router.get("/v1/queries/{query_id}", tags=["queries"], summary="A query's status")
def query_status(query_id: QueryNumber, who: Key) -> QueryOut:
    owned(who, "q", query_id, "reader")
    now = queries.status(f"q{query_id}")
    return QueryOut(id=now.public_id, status=now.status, error=now.error)


@router.get("/v1/queries/{query_id}/result", tags=["queries"], summary="The answer, its citation and evidence")
def query_result(query_id: QueryNumber, who: Key) -> ResultOut:
    owned(who, "q", query_id, "reader")
    return ResultOut(**queries.result(query_id).record())


@router.get("/v1/queries/{query_id}/events", tags=["queries"], summary="Server-sent events until the answer is in")
def query_events(query_id: QueryNumber, who: Key) -> StreamingResponse:
    owned(who, "q", query_id, "reader")

    def state() -> dict[str, Any]:
        now = queries.status(f"q{query_id}")
        return {"id": now.public_id, "status": now.status, "error": now.error, "progress": now.progress}

    return _stream(state)


@router.get("/v1/documents/{doc_id}/events", tags=["documents"], summary="Server-sent events until it is ready")
def document_events(doc_id: DocNumber, who: Key) -> StreamingResponse:
    owned(who, "d", doc_id, "reader")

    def state() -> dict[str, Any]:
        info, progress = documents.document_progress(doc_id)
        if info is None:
            return {"id": f"d{doc_id}", "status": "deleted"}
        return DocumentOut.of(info, progress).model_dump()

    return _stream(state)


@router.get("/v1/documents/{doc_id}/text", tags=["documents"], summary="The document's text (citations index it)")
def document_text(doc_id: DocNumber, who: Key) -> PlainTextResponse:
    owned(who, "d", doc_id, "reader")
    return PlainTextResponse(documents.document_text(doc_id))


@router.post("/v1/queries/{query_id}/feedback", status_code=201, tags=["feedback"], summary="Rate an answer (writer)")
def give_feedback(query_id: QueryNumber, body: FeedbackIn, who: Key) -> dict[str, int]:
    owned(who, "q", query_id, "writer")
    return {"feedback": feedback_service.give_feedback(f"q{query_id}", body.good, body.answer, body.comment)}


@router.get("/v1/adapters", tags=["adapters"], summary="Clue-writer adapter versions (admin)")
def list_adapters(who: Key) -> dict[str, Any]:
    operator(who)
    rows, promoted = training.list_adapters()
    versions = [
        {"version": v.version, "promoted": v.promoted, "created_at": str(v.created_at), "metrics": v.metrics}
        for v in rows
    ]
    return {"promoted": promoted, "versions": versions}


@router.post("/v1/adapters/{version}/promote", tags=["adapters"], summary="Promote an adapter version (admin)")
def promote(version: str, who: Key) -> dict[str, str | None]:
    operator(who)
    training.promote(version)
    return {"promoted": version}


@router.post("/v1/adapters/rollback", tags=["adapters"], summary="Back to the version promoted before (admin)")
def rollback(who: Key) -> dict[str, str | None]:
    operator(who)
    return {"promoted": training.rollback()}


FINISHED = {"ready", "done", "failed", "deleted"}


def _stream(state, every: float = 0.5, limit_s: float = 3600.0) -> StreamingResponse:
    """``state()`` as an event each time it changes (a comment every 15 s keeps proxies open) until it ends."""

    def events():
        last, started, beat = None, time.monotonic(), time.monotonic()
        while time.monotonic() - started < limit_s:
            now = state()
            if now != last:
                yield f"event: {'end' if now['status'] in FINISHED else 'progress'}\ndata: {json.dumps(now)}\n\n"
                last, beat = now, time.monotonic()
                if now["status"] in FINISHED:
                    return
            elif time.monotonic() - beat > 15:
                yield ": still working\n\n"
                beat = time.monotonic()
            time.sleep(every)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # proxies pass events at once
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


def _readiness() -> JSONResponse:
    ready, body = health.readiness()
    return JSONResponse(body, status_code=200 if ready else 503)
