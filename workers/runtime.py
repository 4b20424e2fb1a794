"""What a worker process loads once: the model, the embedder, the stores.

Loaded lazily on the first task, in the process that runs it (never before a
pool forks, so GPU hosts initialise CUDA in the child), and rebuilt after a
fork.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from agent.models import LoadedModel, load_model
from agent.retrieval import Embedder, get_embedder
from core.settings import Settings, get_settings
from store.indexes import open_index
from store.memories import MemoryStore, open_memories
from store.redis import connect
from store.vectors import VectorIndex


@dataclass
class Runtime:
    settings: Settings
    memories: MemoryStore
    index: VectorIndex
    _lm: LoadedModel | None = None
    _embedder: Embedder | None = None

    @property
    def lm(self) -> LoadedModel:
        if self._lm is None:
            self._lm = load_model(settings=self.settings)
        return self._lm

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = get_embedder(self.settings.embedder)
        return self._embedder


_runtime: Runtime | None = None
_lock = threading.Lock()


def reset() -> None:
    """Forget the runtime (after a fork, or when tests switch servers)."""
    global _runtime
    _runtime = None


os.register_at_fork(after_in_child=reset)


def runtime() -> Runtime:
    """This process's runtime; stores connect at once, models load on first use."""
    global _runtime
    with _lock:
        if _runtime is None:
            settings = get_settings()
            client = connect(settings=settings)
            _runtime = Runtime(settings, open_memories(client, settings), open_index(client, settings))
        return _runtime
