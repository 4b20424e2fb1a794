"""Clue-adapter versions: weights in Redis (safetensors bytes), history in the database.

Every worker reads the promoted version from one Redis key before each query
task and loads the weights only when it changed, so a promotion reaches
running workers between two tasks. The database is the record (which version
was promoted when, with which metrics); the Redis pointer follows it.
"""

from __future__ import annotations

import hashlib

import redis
from sqlmodel import select

from store import db
from store.db import AdapterVersion
from store.redis import StoreUnavailable


class AdapterNotFound(KeyError):
    """No adapter with that version (the message lists how to see them)."""


class AdapterRegistry:
    def __init__(self, client: redis.Redis, prefix: str = "memorag:adapter") -> None:
        self.client = client
        self.prefix = prefix

    @property
    def pointer(self) -> str:
        return f"{self.prefix}:promoted"

    def _key(self, version: str) -> str:
        return f"{self.prefix}:{version}"

    def publish(self, data: bytes, *, base_fingerprint: str, metrics: dict) -> str:
        """Store new adapter weights as a version (not promoted); returns the version name."""
        sha = hashlib.sha256(data).hexdigest()
        with db.session() as s:
            row = AdapterVersion(
                version=f"pending-{sha[:16]}",
                base_fingerprint=base_fingerprint,
                redis_key="",
                sha256=sha,
                metrics=metrics,
            )
            s.add(row)
            s.flush()
            row.version = f"a{row.id}-{sha[:8]}"
            row.redis_key = self._key(row.version)
            version, key = row.version, row.redis_key
            self._redis(lambda: self.client.set(key, data))  # inside the transaction: no row without weights
        return version

    def weights(self, version: str) -> bytes:
        data = self._redis(lambda: self.client.get(self._key(version)))
        if data is None:
            raise AdapterNotFound(f"no weights for adapter {version!r} (see 'manage.py adapters list')")
        return data

    def promoted(self) -> str | None:
        """The version workers should use now (one Redis read; None: the base model)."""
        value = self._redis(lambda: self.client.get(self.pointer))
        return value.decode() if value else None

    def promote(self, version: str) -> None:
        with db.session() as s:
            row = s.exec(select(AdapterVersion).where(AdapterVersion.version == version)).first()
            if row is None:
                raise AdapterNotFound(f"no adapter {version!r} (see 'manage.py adapters list')")
            self.weights(version)  # refuse a version whose weights are gone
            for other in s.exec(select(AdapterVersion).where(AdapterVersion.promoted)):
                other.promoted = False
                s.add(other)
            row.promoted, row.promoted_at = True, db.utcnow()
            s.add(row)
        self._redis(lambda: self.client.set(self.pointer, version))

    def rollback(self) -> str | None:
        """Promote the version promoted before the current one (or none); returns what is now promoted."""
        with db.session() as s:
            history = s.exec(
                select(AdapterVersion)
                .where(AdapterVersion.promoted_at.is_not(None))
                .order_by(AdapterVersion.promoted_at.desc(), AdapterVersion.id.desc())
            ).all()
            current = next((r for r in history if r.promoted), None)
            if current is None:
                raise AdapterNotFound("no adapter is promoted; nothing to roll back")
            current.promoted, current.promoted_at = False, None  # leaves the history of promotions
            s.add(current)
            earlier = next((r for r in history if r.id != current.id), None)
            if earlier is not None:
                earlier.promoted, earlier.promoted_at = True, db.utcnow()
                s.add(earlier)
            target = earlier.version if earlier else None
        self._redis(lambda: self.client.set(self.pointer, target) if target else self.client.delete(self.pointer))
        return target

    def versions(self) -> list[AdapterVersion]:
        with db.session() as s:
            return list(s.exec(select(AdapterVersion).order_by(AdapterVersion.id)))

    def _redis(self, call):
        try:
            return call()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"adapter store failed: {exc}") from exc
