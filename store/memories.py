"""Compressed memories in two tiers: Redis (hot, may evict) over a disk copy (durable).

In Redis a memory is stored as chunks of at most 8 MiB under a fresh
version id, then a small JSON manifest (checksum, sizes, metadata) is
swapped in with one SET. Readers go through the manifest, so they see the
old memory or the new one, never half of either; superseded chunks expire
after a grace period so a reader mid-way through the old version still
finishes.

With a disk tier (``store/disk.py``) every memory is written there first
with the same manifest; Redis then holds it as a cache whose keys carry a
TTL, so a Redis with ``maxmemory-policy volatile-lru`` evicts memories,
least recently used first, and never the queues or the index (no TTL). A
miss in Redis loads the disk copy and puts it back; a miss in both is
``MemoryNotFound`` (the pipeline re-forms from text).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import quote

import redis

from core.settings import Settings
from store.disk import DiskTier
from store.errors import CorruptMemory, IncompatibleMemory, MemoryProblem
from store.redis import StoreUnavailable

CHUNK_BYTES = 8 * 1024 * 1024
OLD_VERSION_GRACE_S = 120
# A hot copy's expiry when a disk tier holds the memory: it marks the keys evictable (volatile-lru) and is
# long enough that LRU, not expiry, decides what stays.
HOT_TTL_S = 30 * 24 * 3600

log = logging.getLogger(__name__)


class StoreFull(RuntimeError):
    """Redis refused a memory at its maxmemory and there is no disk tier to keep it instead."""


class MemoryNotFound(KeyError):
    """No memory is stored under that knowledge base and document."""


@dataclass(frozen=True)
class Manifest:
    version: str
    sha256: str
    size: int
    chunks: int
    meta: dict
    created_at: float

    @classmethod
    def parse(cls, raw: bytes | str) -> Manifest:
        try:
            return cls(**json.loads(raw))
        except (ValueError, TypeError) as exc:
            raise CorruptMemory(f"memory manifest is unreadable: {exc}") from exc


class MemoryStore:
    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "memorag:mem",
        chunk_bytes: int = CHUNK_BYTES,
        ttl_s: int | None = None,
        disk: DiskTier | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.chunk_bytes = chunk_bytes
        self.disk = disk
        self.ttl_s = ttl_s or (HOT_TTL_S if disk else None)
        self.reads: Counter[str] = Counter()  # where each get was served from: redis, disk

    @property
    def durable(self) -> bool:
        """Stored memories persist (a disk copy, or Redis keys without expiry): a missing one is damage."""
        return self.disk is not None or self.ttl_s is None

    # keys -----------------------------------------------------------------
    def _base(self, kb: str, doc: str) -> str:
        return f"{self.prefix}:{quote(kb, safe='')}:{quote(doc, safe='')}"

    def _manifest_key(self, kb: str, doc: str) -> str:
        return self._base(kb, doc) + ":manifest"

    def chunk_key(self, kb: str, doc: str, version: str, i: int) -> str:
        return f"{self._base(kb, doc)}:v:{version}:{i}"

    def _index_key(self, kb: str) -> str:
        return f"{self.prefix}:index:{quote(kb, safe='')}"

    # operations -----------------------------------------------------------
    def put(self, kb: str, doc: str, data: bytes, meta: dict) -> Manifest:
        manifest = Manifest(
            version=uuid.uuid4().hex[:12],
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            chunks=max(1, -(-len(data) // self.chunk_bytes)),
            meta=meta,
            created_at=time.time(),
        )
        if self.disk is not None:
            self.disk.put(kb, doc, data, manifest.__dict__)
        try:
            self._put_hot(kb, doc, data, manifest)
        except redis.OutOfMemoryError as exc:
            if self.disk is None:
                raise StoreFull(
                    f"Redis is at its maxmemory and refused memory {kb}/{doc} ({len(data) / 2**20:.0f} MiB): "
                    "raise maxmemory or keep a disk tier (MEMORAG_MEMORY_DIR)"
                ) from exc
            log.warning("memory %s/%s kept on disk only: Redis is at its maxmemory", kb, doc)
        return manifest

    def _put_hot(self, kb: str, doc: str, data: bytes, manifest: Manifest) -> None:
        with self._errors():
            pipe = self.client.pipeline(transaction=False)
            for i in range(manifest.chunks):
                chunk = data[i * self.chunk_bytes : (i + 1) * self.chunk_bytes]
                pipe.set(self.chunk_key(kb, doc, manifest.version, i), chunk, ex=self.ttl_s)
            pipe.execute()
            previous = self.client.set(
                self._manifest_key(kb, doc), json.dumps(manifest.__dict__), ex=self.ttl_s, get=True
            )
            self.client.sadd(self._index_key(kb), doc)
        if previous:
            old = Manifest.parse(previous)
            if old.version != manifest.version:  # a refill from disk puts the same version back
                self._retire(kb, doc, old, grace_s=OLD_VERSION_GRACE_S)

    def manifest(self, kb: str, doc: str) -> Manifest | None:
        with self._errors():
            raw = self.client.get(self._manifest_key(kb, doc))
        if raw:
            return Manifest.parse(raw)
        cold = self.disk.manifest(kb, doc) if self.disk else None
        return Manifest(**cold) if cold else None

    def get(self, kb: str, doc: str, *, fingerprint: str | None = None) -> tuple[bytes, Manifest]:
        """The memory's bytes, verified, from Redis or else the disk tier (which refills Redis).

        Raises MemoryNotFound (no tier holds it), CorruptMemory, IncompatibleMemory.
        """
        try:
            found = self.get_hot(kb, doc, fingerprint)
            self.reads["redis"] += 1
            return found
        except (MemoryNotFound, CorruptMemory):
            if self.disk is None:
                raise
            cold = self.disk.get(kb, doc)
            if cold is None:
                raise
        data, manifest = cold[0], Manifest(**cold[1])
        _check_model(kb, doc, manifest, fingerprint)
        self.reads["disk"] += 1
        try:
            self._put_hot(kb, doc, data, manifest)
        except redis.OutOfMemoryError:
            log.warning("memory %s/%s served from disk: Redis is at its maxmemory", kb, doc)
        return data, manifest

    def get_hot(self, kb: str, doc: str, fingerprint: str | None) -> tuple[bytes, Manifest]:
        with self._errors():
            raw = self.client.get(self._manifest_key(kb, doc))
        if raw is None:
            raise MemoryNotFound(f"no memory for document {doc!r} in {kb!r}")
        manifest = Manifest.parse(raw)
        _check_model(kb, doc, manifest, fingerprint)
        with self._errors():
            pipe = self.client.pipeline(transaction=False)
            for i in range(manifest.chunks):
                pipe.get(self.chunk_key(kb, doc, manifest.version, i))
            parts = pipe.execute()
        missing = [i for i, part in enumerate(parts) if part is None]
        if missing:
            raise CorruptMemory(f"memory {kb}/{doc} lacks chunk(s) {missing} of {manifest.chunks}")
        data = b"".join(parts)
        if len(data) != manifest.size or hashlib.sha256(data).hexdigest() != manifest.sha256:
            raise CorruptMemory(f"memory {kb}/{doc} does not match its checksum")
        return data, manifest

    def verify(self, kb: str, doc: str) -> str | None:
        """None when some tier holds an intact copy (a damaged or missing disk copy is written again from
        Redis; a damaged Redis copy is dropped, so the next read takes the disk's); else what is wrong."""
        hot, hot_problem = _attempt(lambda: self.get_hot(kb, doc, None))
        if self.disk is None:
            return hot_problem
        cold, cold_problem = _attempt(lambda: self._disk_get(kb, doc))
        if hot and not cold:
            self.disk.put(kb, doc, hot[0], hot[1].__dict__)
        if cold and not hot and not hot_problem.startswith("memory: missing"):
            self.drop_hot(kb, doc)
        if hot or cold:
            return None
        return hot_problem if cold_problem.startswith("memory: missing") else cold_problem

    def _disk_get(self, kb: str, doc: str) -> tuple[bytes, dict]:
        found = self.disk.get(kb, doc)
        if found is None:
            raise MemoryNotFound(doc)
        return found

    def exists(self, kb: str, doc: str) -> bool:
        with self._errors():
            if self.client.exists(self._manifest_key(kb, doc)):
                return True
        return self.disk is not None and self.disk.exists(kb, doc)

    def delete(self, kb: str, doc: str) -> bool:
        on_disk = self.disk is not None and self.disk.delete(kb, doc)
        return self.drop_hot(kb, doc) or on_disk

    def drop_hot(self, kb: str, doc: str) -> bool:
        try:
            manifest = self.manifest(kb, doc)
        except CorruptMemory:
            manifest = None
        with self._errors():
            self.client.srem(self._index_key(kb), doc)
            if not self.client.delete(self._manifest_key(kb, doc)):
                return False
        if manifest is not None:
            self._retire(kb, doc, manifest, grace_s=0)
        return True

    def list(self, kb: str) -> list[str]:
        """Documents of ``kb`` that have a memory in either tier (expired or evicted ones are pruned)."""
        with self._errors():
            docs = sorted(d.decode() for d in self.client.smembers(self._index_key(kb)))
            alive = [d for d in docs if self.client.exists(self._manifest_key(kb, d))]
            gone = set(docs) - set(alive)
            if gone:
                self.client.srem(self._index_key(kb), *gone)
        return sorted(set(alive) | set(self.disk.list(kb) if self.disk else []))

    def _retire(self, kb: str, doc: str, manifest: Manifest, *, grace_s: int) -> None:
        keys = [self.chunk_key(kb, doc, manifest.version, i) for i in range(manifest.chunks)]
        with self._errors():
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                if grace_s:
                    pipe.expire(key, grace_s)
                else:
                    pipe.delete(key)
            pipe.execute()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn connection failures into StoreUnavailable naming the server."""
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            kwargs = self.client.connection_pool.connection_kwargs
            where = f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
            raise StoreUnavailable(f"lost the connection to Redis at {where}: {exc}") from exc


def open_memories(client: redis.Redis, settings: Settings) -> MemoryStore:
    """The memory store the settings describe: Redis, over a disk tier unless MEMORAG_MEMORY_DIR=off."""
    folder = settings.memory_tier_dir
    return MemoryStore(client, ttl_s=settings.memory_ttl_s, disk=DiskTier(folder) if folder else None)


def _check_model(kb: str, doc: str, manifest: Manifest, fingerprint: str | None) -> None:
    stored = manifest.meta.get("model_fingerprint")
    if fingerprint is not None and stored != fingerprint:
        raise IncompatibleMemory(
            f"memory {kb}/{doc} was built by model {manifest.meta.get('model_name')} ({stored}), "
            f"not by the loaded model ({fingerprint})"
        )


def _attempt(read) -> tuple[object | None, str]:
    """(what ``read`` returned, "") or (None, the problem as the reconciler words it)."""
    try:
        return read(), ""
    except MemoryNotFound:
        return None, "memory: missing"
    except MemoryProblem as exc:
        return None, f"memory: {exc}"
