"""The HTTP face: the same service functions the command line calls, behind API keys.

Errors are JSON ``{"error": "..."}`` with the status that says what happened
(401 no or bad key, 403 a role too small, 404 unknown or not yours, 409
duplicate, 413 too large, 422 bad input, 503 a store or worker missing),
never a traceback. A key for one knowledge base gets 404 for everything of
another, whether it exists or not.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Header, Path, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from sqlmodel import select
from starlette.exceptions import HTTPException

from api.models import Accepted, DocumentOut, ErrorOut, FeedbackIn, KbIn, KbOut, QueryIn, QueryOut, Readiness, ResultOut
from service import Conflict, Invalid, NotFound, NoWorker, ServiceError, bases, documents, keys, queries, training
from service import feedback as feedback_service
from store import db


class Denied(ServiceError):
    """The key may not do this (its role is too small)."""


class Unauthenticated(ServiceError):
    """No key, or one that is wrong or revoked."""


class TooLarge(ServiceError):
    """The upload or question is over its limit."""


WHY = {
    400: "the body cannot be parsed",
    401: "no key, or a wrong or revoked one",
    403: "the key's role is too small",
    404: "unknown, or in another knowledge base",
    409: "exists already",
    413: "over the size limit",
    422: "bad input",
    503: "a store or worker is missing",
}
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut, "description": why} for code, why in WHY.items()}
PAGE = FilePath(__file__).parent / "static" / "index.html"  # the web page: no build step
STATUS = {Unauthenticated: 401, Denied: 403, NotFound: 404, Conflict: 409, TooLarge: 413, Invalid: 422, NoWorker: 503}


def create_app() -> FastAPI:
    app = FastAPI(
        title="memorag",
        version="1",
        description="Questions over long documents, answered from a compressed global memory and cited.",
    )
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _bad_request)
    app.add_exception_handler(HTTPException, _http_error)
    _add_errors(app)
    app.include_router(_routes())
    return app


def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
    status = next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 400)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": str(exc)}, status_code=status, headers=headers)


def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's own refusals (an unparsable body, a method not allowed) in the same shape as ours."""
    return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)


def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"] if part != "body")
    return JSONResponse({"error": f"{where}: {first['msg']}"}, status_code=422)


def _add_errors(app: FastAPI) -> None:
    from agent.documents import BadDocument
    from store.adapters import AdapterNotFound
    from store.redis import StoreUnavailable

    @app.exception_handler(BadDocument)
    def _bad_document(_: Request, exc: BadDocument) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=413 if "over the" in str(exc) else 422)

    @app.exception_handler(AdapterNotFound)
    def _no_adapter(_: Request, exc: AdapterNotFound) -> JSONResponse:
        return JSONResponse({"error": exc.args[0] if exc.args else str(exc)}, status_code=404)

    @app.exception_handler(StoreUnavailable)
    def _store_down(_: Request, exc: StoreUnavailable) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=503)


def principal(
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> keys.Principal:
    token = x_api_key or (authorization or "").removeprefix("Bearer ").strip()
    if not token:
        raise Unauthenticated("an API key is needed: 'Authorization: Bearer <key>' (manage.py keys create)")
    found = keys.authenticate(token)
    if found is None:
        raise Unauthenticated("the API key is wrong or revoked")
    return found


Key = Annotated[keys.Principal, Depends(principal)]
RowId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the number in d12 or q7")]


def _kb(who: keys.Principal, name: str, role: str) -> int:
    """The knowledge base's id if ``who`` sees it (else 404, as for one that does not exist) and has ``role``."""
    with db.session() as s:
        try:
            kb_id = bases.get_kb(s, name).id
        except NotFound:
            kb_id = None
    if kb_id is None or not who.sees(kb_id):
        raise NotFound(f"no knowledge base named {name!r}")
    if not who.may(role):
        raise Denied(f"a {who.role} key may not do this; it needs a {role} key")
    return kb_id


def _owned(who: keys.Principal, model, number: int, label: str, role: str):
    """The row (a Document or Query) if ``who`` sees its knowledge base and has ``role``; else 404 / 403."""
    with db.session() as s:
        row = s.get(model, number)
        kb_id = None if row is None else row.kb_id
    if kb_id is None or not who.sees(kb_id):
        raise NotFound(f"no {label} {number}")
    if not who.may(role):
        raise Denied(f"a {who.role} key may not do this; it needs a {role} key")
    return row


def _routes():
    from fastapi import APIRouter

    r = APIRouter(responses=ERRORS)

    @r.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(PAGE, media_type="text/html")

    @r.get("/healthz", tags=["service"], summary="The process is up")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @r.get(
        "/readyz", tags=["service"], summary="The database, Redis and a worker per queue answer",
        response_model=Readiness, responses={503: {"model": Readiness, "description": "something is not ready"}},
    )  # fmt: skip
    def readyz() -> JSONResponse:
        return _readiness()

    @r.get("/v1/kbs", tags=["knowledge bases"], summary="The knowledge bases this key sees")
    def list_kbs(who: Key) -> list[KbOut]:
        with db.session() as s:
            ids = {kb.name: kb.id for kb in s.exec(select(db.KnowledgeBase)).all()}
        return [KbOut(name=k.name, description=k.description, documents=k.documents)
                for k in bases.list_kbs() if who.sees(ids[k.name])]  # fmt: skip

    @r.post("/v1/kbs", status_code=201, tags=["knowledge bases"], summary="Create a knowledge base (admin)")
    def create_kb(body: KbIn, who: Key) -> KbOut:
        _operator(who, "create knowledge bases")
        bases.create_kb(body.name, body.description)
        return KbOut(name=body.name, description=body.description, documents={})

    @r.delete("/v1/kbs/{name}", tags=["knowledge bases"], summary="Delete a knowledge base and all it holds (admin)")
    def delete_kb(name: str, who: Key) -> dict[str, Any]:
        _kb(who, name, "admin")
        return {"deleted": name, "documents": bases.delete_kb(name)}

    @r.post("/v1/kbs/{name}/documents", status_code=202, tags=["documents"], summary="Upload documents (writer)")
    def upload(name: str, who: Key, files: Annotated[list[UploadFile], File()]) -> list[Accepted]:
        _kb(who, name, "writer")
        texts = [(upload.filename or "upload.txt", _read_upload(upload)) for upload in files]
        return [Accepted(id=d.public_id, name=d.name, status=d.status, existing=d.existing)
                for d in documents.add_documents(name, texts)]  # fmt: skip

    @r.get("/v1/kbs/{name}/documents", tags=["documents"], summary="The knowledge base's documents")
    def list_documents(name: str, who: Key) -> list[DocumentOut]:
        _kb(who, name, "reader")
        return [DocumentOut.of(d) for d in documents.list_documents(name)]

    @r.get("/v1/documents/{doc_id}", tags=["documents"], summary="A document's status and progress")
    def get_document(doc_id: RowId, who: Key) -> DocumentOut:
        _owned(who, db.Document, doc_id, "document", "reader")
        info, progress = documents.document_progress(doc_id)
        return DocumentOut.of(info, progress)

    @r.delete("/v1/documents/{doc_id}", tags=["documents"], summary="Remove a document (writer)")
    def delete_document(doc_id: RowId, who: Key) -> dict[str, Any]:
        _owned(who, db.Document, doc_id, "document", "writer")
        gone = documents.remove_document(f"d{doc_id}")
        return {"removed": gone.public_id, "name": gone.name, "chunks": gone.chunks}

    @r.post("/v1/kbs/{name}/queries", status_code=202, tags=["queries"], summary="Ask a question; answered later")
    def ask(name: str, body: QueryIn, who: Key) -> QueryOut:
        _kb(who, name, "reader")
        ticket = queries.ask(name, body.question, body.task)
        return QueryOut(id=ticket.public_id, status="queued")

    @r.get("/v1/queries/{query_id}", tags=["queries"], summary="A query's status")
    def query_status(query_id: RowId, who: Key) -> QueryOut:
        _owned(who, db.Query, query_id, "query", "reader")
        now = queries.status(f"q{query_id}")
        return QueryOut(id=now.public_id, status=now.status, error=now.error)

    @r.get("/v1/queries/{query_id}/result", tags=["queries"], summary="The answer, its citation and evidence")
    def query_result(query_id: RowId, who: Key) -> ResultOut:
        _owned(who, db.Query, query_id, "query", "reader")
        return ResultOut(**queries.result(query_id).record())

    @r.get("/v1/queries/{query_id}/events", tags=["queries"], summary="Server-sent events until the answer is in")
    def query_events(query_id: RowId, who: Key) -> StreamingResponse:
        _owned(who, db.Query, query_id, "query", "reader")

        def state() -> dict[str, Any]:
            now = queries.status(f"q{query_id}")
            return {"id": now.public_id, "status": now.status, "error": now.error, "progress": now.progress}

        return _stream(state)

    @r.get("/v1/documents/{doc_id}/events", tags=["documents"], summary="Server-sent events until it is ready")
    def document_events(doc_id: RowId, who: Key) -> StreamingResponse:
        _owned(who, db.Document, doc_id, "document", "reader")

        def state() -> dict[str, Any]:
            info, progress = documents.document_progress(doc_id)
            if info is None:
                return {"id": f"d{doc_id}", "status": "deleted"}
            return DocumentOut.of(info, progress).model_dump()

        return _stream(state)

    @r.get("/v1/documents/{doc_id}/text", tags=["documents"], summary="The document's text (citations index it)")
    def document_text(doc_id: RowId, who: Key) -> PlainTextResponse:
        row = _owned(who, db.Document, doc_id, "document", "reader")
        return PlainTextResponse(row.text)

    @r.post("/v1/queries/{query_id}/feedback", status_code=201, tags=["feedback"], summary="Rate an answer (writer)")
    def give_feedback(query_id: int, body: FeedbackIn, who: Key) -> dict[str, int]:
        _owned(who, db.Query, query_id, "query", "writer")
        return {"feedback": feedback_service.give_feedback(f"q{query_id}", body.good, body.answer, body.comment)}

    @r.get("/v1/adapters", tags=["adapters"], summary="Clue-writer adapter versions (admin)")
    def list_adapters(who: Key) -> dict[str, Any]:
        _operator(who)
        rows, promoted = training.list_adapters()
        versions = [
            {"version": v.version, "promoted": v.promoted, "created_at": str(v.created_at), "metrics": v.metrics}
            for v in rows
        ]
        return {"promoted": promoted, "versions": versions}

    @r.post("/v1/adapters/{version}/promote", tags=["adapters"], summary="Promote an adapter version (admin)")
    def promote(version: str, who: Key) -> dict[str, str | None]:
        _operator(who)
        training.promote(version)
        return {"promoted": version}

    @r.post("/v1/adapters/rollback", tags=["adapters"], summary="Back to the version promoted before (admin)")
    def rollback(who: Key) -> dict[str, str | None]:
        _operator(who)
        return {"promoted": training.rollback()}

    return r


def _operator(who: keys.Principal, what: str = "manage adapters") -> None:
    """What spans knowledge bases (creating them, adapters) needs an admin key for all of them."""
    if not (who.kb_id is None and who.may("admin")):
        raise Denied(f"only an admin key for every knowledge base may {what}")


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

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _read_upload(upload: UploadFile) -> str:
    """The upload's text, checked like a file given to ``ingest`` (size, type, PDF text)."""
    from agent.documents import read_document
    from core.settings import get_settings

    suffix = FilePath(upload.filename or "upload.txt").suffix or ".txt"
    with tempfile.TemporaryDirectory() as tmp:
        path = FilePath(tmp) / f"upload{suffix}"
        path.write_bytes(upload.file.read())
        try:
            return read_document(path, get_settings().max_document_mb)
        except ValueError as exc:  # name the upload, not the temporary file
            raise type(exc)(str(exc).replace(str(path), upload.filename or "upload")) from None


def _readiness() -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        with db.session() as s:
            s.exec(select(db.KnowledgeBase.id).limit(1)).all()
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = str(exc).splitlines()[0]
    try:
        from service.stores import live_queues
        from workers.app import QUEUES

        live = live_queues()
        checks["redis"] = "ok"
        for queue in QUEUES:
            checks[f"worker:{queue}"] = "ok" if live.get(queue) else "no live worker"
    except Exception as exc:
        checks["redis"] = str(exc).splitlines()[0]
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)
