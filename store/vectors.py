"""Vector indexes for chunks, scoped per knowledge base.

``EmbeddedIndex`` keeps chunk texts and vectors in the same Redis as the
memories and searches exactly (cosine over normalized vectors) with numpy,
over a matrix cached per process and reloaded when the knowledge base's
version counter moves. Searches learn that a counter moved from Redis's
invalidation pushes (``store.tracking``) rather than a read per search, so a
warm search costs the matrix product and little else. ``WeaviateIndex`` (in
``store.weaviate``) is the production store. A search in one knowledge base
never sees another's chunks.

Each embedded entry carries a digest of its chunk and vector: an entry whose
bytes changed is left out of searches and its document reported damaged, so
the reconciler rebuilds it from the stored text instead of serving it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol
from urllib.parse import quote

import numpy as np
import redis

from store.lexical import LexicalIndex
from store.tracking import KeyWatch


@dataclass(frozen=True)
class Chunk:
    """A passage of a document; token spans are in the memory model's tokens.

    ``context`` is where it stands (title > headings, page, speaker): searched and shown with the
    passage, never part of ``text``, so the character offsets quote the document exactly. Chunks
    stored before it existed read back with none until ``manage.py reindex``.
    """

    doc_id: str
    ordinal: int
    text: str
    char_start: int
    char_end: int
    token_start: int
    token_end: int
    context: str = ""

    @property
    def id(self) -> str:
        return f"{self.doc_id}#{self.ordinal}"

    @property
    def searchable(self) -> str:
        """What is embedded and indexed lexically: the context line above the passage."""
        return f"{self.context}\n{self.text}" if self.context else self.text

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Chunk:
        return cls(**json.loads(raw))


Hits = list[tuple[Chunk, float]]


class VectorIndex(Protocol):
    def upsert(self, kb: str, chunks: list[Chunk], vectors: np.ndarray) -> None: ...

    def delete_document(self, kb: str, doc_id: str) -> int: ...

    def search(self, kb: str, vectors: np.ndarray, k: int, texts: Sequence[str] | None = None) -> list[Hits]:
        """One ranked list per query vector, best first: cosine scores, or with ``texts`` (one per vector)
        the hybrid of dense and BM25 rankings fused by reciprocal rank (the fused score)."""
        ...

    def count(self, kb: str) -> int: ...

    def document_counts(self, kb: str, doc_ids: list[str]) -> dict[str, int]:
        """How many chunks each document has in the index (a cheap check: no entry is read)."""
        ...

    def verify(self, kb: str, doc_ids: list[str]) -> dict[str, int]:
        """How many of each document's chunks are intact (every entry read and checked where the index can)."""
        ...

    def damaged(self, kb: str) -> set[str]:
        """Documents whose entries a search found damaged since they were last written."""
        ...

    def drop(self, kb: str) -> None: ...


@dataclass
class _Snapshot:
    version: int
    ids: list[str]
    chunks: list[Chunk]
    matrix: np.ndarray
    _lexical: LexicalIndex | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def lexical(self) -> LexicalIndex:
        """BM25 over the chunks and their context, built on the first lexical search of this version."""
        with self._lock:
            if self._lexical is None:
                self._lexical = LexicalIndex([c.searchable for c in self.chunks])
            return self._lexical


DIGEST_BYTES = 16


def _digest(chunk_json: bytes, vector: bytes) -> bytes:
    return hashlib.blake2b(chunk_json + vector, digest_size=DIGEST_BYTES).digest()


def intact(chunk_raw: bytes | None, entry: bytes | None) -> tuple[Chunk, np.ndarray] | None:
    """The chunk and its vector, or None when either was lost or its bytes changed."""
    if chunk_raw is None or entry is None or len(entry) <= DIGEST_BYTES:
        return None
    vector, digest = entry[:-DIGEST_BYTES], entry[-DIGEST_BYTES:]
    if _digest(chunk_raw, vector) != digest or len(vector) % 4:
        return None
    try:
        return Chunk.from_json(chunk_raw), np.frombuffer(vector, dtype=np.float32)
    except (ValueError, TypeError):
        return None


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

    def key(self, kb: str, part: str) -> str:
        return f"{self.prefix}:{quote(kb, safe='')}:{part}"

    def version_key(self, kb: str) -> str:
        """Outside the knowledge base's key space: dropping it never resets the counter."""
        return f"{self.prefix}/version:{quote(kb, safe='')}"

    def upsert(self, kb: str, chunks: list[Chunk], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        pipe = self.client.pipeline(transaction=True)
        for chunk, vector in zip(chunks, vectors, strict=True):
            raw, values = chunk.to_json().encode(), _normalize(vector).tobytes()
            pipe.hset(self.key(kb, "chunks"), chunk.id, raw)
            pipe.hset(self.key(kb, "vectors"), chunk.id, values + _digest(raw, values))
            pipe.sadd(self.key(kb, f"doc:{quote(chunk.doc_id, safe='')}"), chunk.id)
        if chunks:
            pipe.srem(self.key(kb, "damaged"), *{c.doc_id for c in chunks})
        pipe.incr(self.version_key(kb))
        pipe.execute()
        self._forget(kb)

    def delete_document(self, kb: str, doc_id: str) -> int:
        members = self.key(kb, f"doc:{quote(doc_id, safe='')}")
        ids = list(self.client.smembers(members))
        pipe = self.client.pipeline(transaction=True)
        if ids:
            pipe.hdel(self.key(kb, "chunks"), *ids)
            pipe.hdel(self.key(kb, "vectors"), *ids)
        pipe.delete(members)
        pipe.srem(self.key(kb, "damaged"), doc_id)
        pipe.incr(self.version_key(kb))
        pipe.execute()
        self._forget(kb)
        return len(ids)

    def count(self, kb: str) -> int:
        return int(self.client.hlen(self.key(kb, "chunks")))

    def document_counts(self, kb: str, doc_ids: list[str]) -> dict[str, int]:
        pipe = self.client.pipeline(transaction=False)
        for doc in doc_ids:
            pipe.scard(self.key(kb, f"doc:{quote(doc, safe='')}"))
        return dict(zip(doc_ids, map(int, pipe.execute()), strict=True))

    def verify(self, kb: str, doc_ids: list[str]) -> dict[str, int]:
        held = dict.fromkeys(doc_ids, 0)
        for doc in doc_ids:
            ids = sorted(self.client.smembers(self.key(kb, f"doc:{quote(doc, safe='')}")))
            if ids:
                chunks = self.client.hmget(self.key(kb, "chunks"), ids)
                entries = self.client.hmget(self.key(kb, "vectors"), ids)
                held[doc] = sum(intact(c, e) is not None for c, e in zip(chunks, entries, strict=True))
        return held

    def damaged(self, kb: str) -> set[str]:
        return {d.decode() for d in self.client.smembers(self.key(kb, "damaged"))}

    def drop(self, kb: str) -> None:
        keys = list(self.client.scan_iter(match=self.key(kb, "*"), count=1000))
        if keys:
            self.client.delete(*keys)
        self.client.incr(self.version_key(kb))
        self._forget(kb)

    def _forget(self, kb: str) -> None:
        """Read-your-writes in this process, before the server's invalidation push arrives."""
        with self._lock:
            self._cache.pop(kb, None)

    def _snapshot(self, kb: str) -> _Snapshot:
        version_key = self.version_key(kb)
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
        pipe.hgetall(self.key(kb, "chunks"))
        pipe.hgetall(self.key(kb, "vectors"))
        version_raw, chunk_map, vector_map = pipe.execute()
        ids, chunks, rows, damaged = [], [], [], set()
        for key in sorted(set(chunk_map) | set(vector_map)):
            found = intact(chunk_map.get(key), vector_map.get(key))
            if found is None:  # never served; the reconciler rebuilds the document from its text
                damaged.add(key.decode().rpartition("#")[0])
                continue
            ids.append(key.decode())
            chunks.append(found[0])
            rows.append(found[1])
        if damaged:
            self.client.sadd(self.key(kb, "damaged"), *damaged)
        matrix = np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)
        snap = _Snapshot(int(version_raw or 0), ids, chunks, matrix)
        with self._lock:
            self._cache[kb] = snap
        return snap

    def search(self, kb: str, vectors: np.ndarray, k: int, texts: Sequence[str] | None = None) -> list[Hits]:
        snap = self._snapshot(kb)
        queries = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if texts is not None and len(texts) != len(queries):
            raise ValueError(f"{len(texts)} query texts but {len(queries)} vectors")
        if not snap.ids:
            return [[] for _ in queries]
        with _one_blas_thread():
            scores = queries @ snap.matrix.T
        k = min(k, len(snap.ids))
        results: list[Hits] = []
        for n, row in enumerate(scores):
            top = np.argpartition(-row, k - 1)[:k]
            top = top[np.argsort(-row[top])]
            if texts is None:
                results.append([(snap.chunks[i], float(row[i])) for i in top])
                continue
            lexical = snap.lexical.top(texts[n], k)
            fused = rrf([[int(i) for i in top], lexical])
            best = sorted(fused, key=lambda i: -fused[i])[:k]
            results.append([(snap.chunks[i], fused[i]) for i in best])
        return results


@functools.cache
def _blas():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _one_blas_thread():
    """The product on one BLAS thread: a few thousand rows take a millisecond on one core, and BLAS threads
    left spinning after a parallel product slow the embedder's next question about threefold (measured
    with 4,900 chunks: 33 ms against 129 ms per route + retrieve)."""
    return _blas().limit(limits=1, user_api="blas")


def _normalize(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return (vector / norm if norm else vector).astype(np.float32)
