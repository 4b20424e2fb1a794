"""Vector indexes for chunks, scoped per knowledge base.

``EmbeddedIndex`` keeps chunk texts and vectors in the same Redis as the
memories and searches exactly (cosine over normalized vectors) with numpy,
over a matrix cached per process and reloaded when the knowledge base's
version counter moves. Searches learn that a counter moved from Redis's
invalidation pushes (``store.tracking``) rather than a read per search, so a
warm search costs the matrix product and little else. ``WeaviateIndex`` (in
``store.weaviate``) is the production store. A search in one knowledge base
never sees another's chunks.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass
from typing import Protocol
from urllib.parse import quote

import numpy as np
import redis

from store.tracking import KeyWatch


@dataclass(frozen=True)
class Chunk:
    """A passage of a document; token spans are in the memory model's tokens."""

    doc_id: str
    ordinal: int
    text: str
    char_start: int
    char_end: int
    token_start: int
    token_end: int

    @property
    def id(self) -> str:
        return f"{self.doc_id}#{self.ordinal}"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Chunk:
        return cls(**json.loads(raw))


Hits = list[tuple[Chunk, float]]


class VectorIndex(Protocol):
    def upsert(self, kb: str, chunks: list[Chunk], vectors: np.ndarray) -> None: ...

    def delete_document(self, kb: str, doc_id: str) -> int: ...

    def search(self, kb: str, vectors: np.ndarray, k: int) -> list[Hits]:
        """One ranked list per query vector, best first, with cosine scores."""
        ...

    def count(self, kb: str) -> int: ...

    def drop(self, kb: str) -> None: ...


@dataclass
class _Snapshot:
    version: int
    ids: list[str]
    chunks: list[Chunk]
    matrix: np.ndarray


def rrf(rankings: list[list[str]], weights: list[float] | None = None, k: int = 60) -> dict[str, float]:
    """Reciprocal-rank fusion: sum of weight / (k + rank) over the rankings an id appears in."""
    weights = weights or [1.0] * len(rankings)
    fused: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + weight / (k + rank)
    return fused


class EmbeddedIndex:
    def __init__(self, client: redis.Redis, prefix: str = "memorag:vec") -> None:
        self.client = client
        self.prefix = prefix
        self._cache: dict[str, _Snapshot] = {}
        self._lock = threading.Lock()
        self._versions = KeyWatch(client, f"{prefix}/version:")

    def _key(self, kb: str, part: str) -> str:
        return f"{self.prefix}:{quote(kb, safe='')}:{part}"

    def _version_key(self, kb: str) -> str:
        """Outside the knowledge base's key space: dropping it never resets the counter."""
        return f"{self.prefix}/version:{quote(kb, safe='')}"

    def upsert(self, kb: str, chunks: list[Chunk], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        pipe = self.client.pipeline(transaction=True)
        for chunk, vector in zip(chunks, vectors, strict=True):
            pipe.hset(self._key(kb, "chunks"), chunk.id, chunk.to_json())
            pipe.hset(self._key(kb, "vectors"), chunk.id, _normalize(vector).tobytes())
            pipe.sadd(self._key(kb, f"doc:{quote(chunk.doc_id, safe='')}"), chunk.id)
        pipe.incr(self._version_key(kb))
        pipe.execute()
        self._forget(kb)

    def delete_document(self, kb: str, doc_id: str) -> int:
        members = self._key(kb, f"doc:{quote(doc_id, safe='')}")
        ids = list(self.client.smembers(members))
        pipe = self.client.pipeline(transaction=True)
        if ids:
            pipe.hdel(self._key(kb, "chunks"), *ids)
            pipe.hdel(self._key(kb, "vectors"), *ids)
        pipe.delete(members)
        pipe.incr(self._version_key(kb))
        pipe.execute()
        self._forget(kb)
        return len(ids)

    def count(self, kb: str) -> int:
        return int(self.client.hlen(self._key(kb, "chunks")))

    def drop(self, kb: str) -> None:
        keys = list(self.client.scan_iter(match=self._key(kb, "*"), count=1000))
        if keys:
            self.client.delete(*keys)
        self.client.incr(self._version_key(kb))
        self._forget(kb)

    def _forget(self, kb: str) -> None:
        """Read-your-writes in this process, before the server's invalidation push arrives."""
        with self._lock:
            self._cache.pop(kb, None)

    def _snapshot(self, kb: str) -> _Snapshot:
        version_key = self._version_key(kb)
        with self._lock:
            snap = self._cache.get(kb)
        if snap is not None and self._versions.trusted(version_key):
            return snap
        self._versions.mark(version_key)
        version = int(self.client.get(version_key) or 0)
        if snap is not None and snap.version == version:
            return snap
        pipe = self.client.pipeline(transaction=True)
        pipe.get(version_key)
        pipe.hgetall(self._key(kb, "chunks"))
        pipe.hgetall(self._key(kb, "vectors"))
        version_raw, chunk_map, vector_map = pipe.execute()
        ids = sorted(i.decode() for i in chunk_map)
        chunks = [Chunk.from_json(chunk_map[i.encode()]) for i in ids]
        matrix = (
            np.stack([np.frombuffer(vector_map[i.encode()], dtype=np.float32) for i in ids])
            if ids
            else np.zeros((0, 0), dtype=np.float32)
        )
        snap = _Snapshot(int(version_raw or 0), ids, chunks, matrix)
        with self._lock:
            self._cache[kb] = snap
        return snap

    def search(self, kb: str, vectors: np.ndarray, k: int) -> list[Hits]:
        snap = self._snapshot(kb)
        queries = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if not snap.ids:
            return [[] for _ in queries]
        scores = queries @ snap.matrix.T
        k = min(k, len(snap.ids))
        results: list[Hits] = []
        for row in scores:
            top = np.argpartition(-row, k - 1)[:k]
            top = top[np.argsort(-row[top])]
            results.append([(snap.chunks[i], float(row[i])) for i in top])
        return results


def open_index(client: redis.Redis, settings) -> VectorIndex:
    """Weaviate when ``MEMORAG_WEAVIATE_URL`` is set, else the embedded index in ``client``'s Redis."""
    if settings.weaviate_url:
        from store.weaviate import WeaviateIndex

        return WeaviateIndex(settings.weaviate_url, settings.weaviate_grpc_port, api_key=settings.weaviate_api_key)
    return EmbeddedIndex(client)


def _normalize(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return (vector / norm if norm else vector).astype(np.float32)
