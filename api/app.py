"""The HTTP face: the same service functions the command line calls, behind API keys.

Errors are JSON ``{"error": "..."}`` with the status that says what happened
(401 no or bad key, 403 a role too small, 404 unknown or not yours, 409
duplicate, 413 too large, 422 bad input, 503 a store or worker missing),
never a traceback. A key for one knowledge base gets 404 for everything of
another, whether it exists or not.
"""

from __future__ import annotations

from fastapi import FastAPI

from api import errors
from api.routes import router


def create_app() -> FastAPI:
    app = FastAPI(
        title="memorag",
        version="1",
        description="Questions over long documents, answered from a compressed global memory and cited.",
    )
    errors.install(app)
    app.include_router(router)
    return app
