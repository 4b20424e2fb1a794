"""Refusals raised below the service that reach a person as they are: the faces import them from here.

Imported where an error is turned into a reply, not at start-up (``ModelUnavailable`` brings torch).
"""

from __future__ import annotations

from agent.documents import BadDocument
from agent.models import ModelUnavailable
from service.errors import ServiceError
from store.adapters import AdapterNotFound
from store.errors import MemoryProblem
from store.memories import MemoryNotFound
from store.redis import StoreUnavailable

KNOWN = (ServiceError, BadDocument, MemoryProblem, ModelUnavailable, MemoryNotFound, AdapterNotFound, StoreUnavailable)

__all__ = [
    "KNOWN", "AdapterNotFound", "BadDocument", "MemoryNotFound", "MemoryProblem", "ModelUnavailable",
    "ServiceError", "StoreUnavailable",
]  # fmt: skip
