"""How refusals reach a client: one JSON shape, ``{"error": "..."}``, with the status that says why."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from api.models import ErrorOut
from core.redact import redact
from service import Conflict, Invalid, NotFound, NotSent, NoWorker, ServiceError, TooMany


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
STATUS = {
    Unauthenticated: 401, Denied: 403, NotFound: 404, Conflict: 409, TooLarge: 413, TooMany: 413, Invalid: 422,
    NoWorker: 503, NotSent: 503,
}  # fmt: skip


def install(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _bad_request)
    app.add_exception_handler(HTTPException, _http_error)
    _add_errors(app)


def refusal(message: str, status_code: int, headers: dict | None = None) -> JSONResponse:
    """The one shape of every refusal; a password in a store's URL never leaves the server."""
    return JSONResponse({"error": redact(message)}, status_code=status_code, headers=headers)


def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
    status = next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 400)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return refusal(str(exc), status_code=status, headers=headers)


def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's own refusals (an unparsable body, a method not allowed) in the same shape as ours."""
    return refusal(str(exc.detail), status_code=exc.status_code, headers=exc.headers)


def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"] if part != "body")
    return JSONResponse({"error": f"{where}: {first['msg']}"}, status_code=422)


def _add_errors(app: FastAPI) -> None:
    from service.refusals import AdapterNotFound, BadDocument, StoreUnavailable

    @app.exception_handler(BadDocument)
    def _bad_document(_: Request, exc: BadDocument) -> JSONResponse:
        return refusal(str(exc), status_code=413 if "over the" in str(exc) else 422)

    @app.exception_handler(AdapterNotFound)
    def _no_adapter(_: Request, exc: AdapterNotFound) -> JSONResponse:
        return JSONResponse({"error": exc.args[0] if exc.args else str(exc)}, status_code=404)

    @app.exception_handler(StoreUnavailable)
    def _store_down(_: Request, exc: StoreUnavailable) -> JSONResponse:
        return refusal(str(exc), status_code=503)
