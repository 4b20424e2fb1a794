"""Compressed memories in Redis: chunked, checksummed, versioned.

A memory is stored as chunks of at most 8 MiB under a fresh version id,
then a small JSON manifest (checksum, sizes, metadata) is swapped in with
one SET. Readers go through the manifest, so they see the old memory or the
new one, never half of either; superseded chunks expire after a grace period
so a reader mid-way through the old version still finishes.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import quote

import redis

from store.errors import CorruptMemory, IncompatibleMemory
from store.redis import StoreUnavailable

CHUNK_BYTES = 8 * 1024 * 1024
OLD_VERSION_GRACE_S = 120


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
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.chunk_bytes = chunk_bytes
        self.ttl_s = ttl_s or None

    # keys -----------------------------------------------------------------
    def _base(self, kb: str, doc: str) -> str:
        return f"{self.prefix}:{quote(kb, safe='')}:{quote(doc, safe='')}"

    def _manifest_key(self, kb: str, doc: str) -> str:
        return self._base(kb, doc) + ":manifest"

    def _chunk_key(self, kb: str, doc: str, version: str, i: int) -> str:
        return f"{self._base(kb, doc)}:v:{version}:{i}"

    def _index_key(self, kb: str) -> str:
        return f"{self.prefix}:index:{quote(kb, safe='')}"

    # operations -----------------------------------------------------------
    def put(self, kb: str, doc: str, data: bytes, meta: dict) -> Manifest:
        version = uuid.uuid4().hex[:12]
        chunks = [data[i : i + self.chunk_bytes] for i in range(0, len(data), self.chunk_bytes)] or [b""]
        manifest = Manifest(
            version=version,
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            chunks=len(chunks),
            meta=meta,
            created_at=time.time(),
        )
        with self._errors():
            pipe = self.client.pipeline(transaction=False)
            for i, chunk in enumerate(chunks):
                pipe.set(self._chunk_key(kb, doc, version, i), chunk, ex=self.ttl_s)
            pipe.execute()
            previous = self.client.set(
                self._manifest_key(kb, doc), json.dumps(manifest.__dict__), ex=self.ttl_s, get=True
            )
            self.client.sadd(self._index_key(kb), doc)
            if previous:
                self._retire(kb, doc, Manifest.parse(previous), grace_s=OLD_VERSION_GRACE_S)
        return manifest

    def manifest(self, kb: str, doc: str) -> Manifest | None:
        with self._errors():
            raw = self.client.get(self._manifest_key(kb, doc))
        return Manifest.parse(raw) if raw else None

    def get(self, kb: str, doc: str, *, fingerprint: str | None = None) -> tuple[bytes, Manifest]:
        """The memory's bytes, verified; raises MemoryNotFound, CorruptMemory, IncompatibleMemory."""
        manifest = self.manifest(kb, doc)
        if manifest is None:
            raise MemoryNotFound(f"no memory for document {doc!r} in {kb!r}")
        stored = manifest.meta.get("model_fingerprint")
        if fingerprint is not None and stored != fingerprint:
            raise IncompatibleMemory(
                f"memory {kb}/{doc} was built by model {manifest.meta.get('model_name')} ({stored}), "
                f"not by the loaded model ({fingerprint})"
            )
        with self._errors():
            pipe = self.client.pipeline(transaction=False)
            for i in range(manifest.chunks):
                pipe.get(self._chunk_key(kb, doc, manifest.version, i))
            parts = pipe.execute()
        missing = [i for i, part in enumerate(parts) if part is None]
        if missing:
            raise CorruptMemory(f"memory {kb}/{doc} lacks chunk(s) {missing} of {manifest.chunks}")
        data = b"".join(parts)
        if len(data) != manifest.size or hashlib.sha256(data).hexdigest() != manifest.sha256:
            raise CorruptMemory(f"memory {kb}/{doc} does not match its checksum")
        return data, manifest

    def exists(self, kb: str, doc: str) -> bool:
        with self._errors():
            return bool(self.client.exists(self._manifest_key(kb, doc)))

    def delete(self, kb: str, doc: str) -> bool:
        manifest = self.manifest(kb, doc)
        with self._errors():
            self.client.srem(self._index_key(kb), doc)
            if manifest is None:
                return False
            self.client.delete(self._manifest_key(kb, doc))
        self._retire(kb, doc, manifest, grace_s=0)
        return True

    def list(self, kb: str) -> list[str]:
        """Documents of ``kb`` that have a memory (expired ones are pruned)."""
        with self._errors():
            docs = sorted(d.decode() for d in self.client.smembers(self._index_key(kb)))
            alive = [d for d in docs if self.client.exists(self._manifest_key(kb, d))]
            gone = set(docs) - set(alive)
            if gone:
                self.client.srem(self._index_key(kb), *gone)
        return alive

    def _retire(self, kb: str, doc: str, manifest: Manifest, *, grace_s: int) -> None:
        keys = [self._chunk_key(kb, doc, manifest.version, i) for i in range(manifest.chunks)]
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
