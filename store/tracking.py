"""Know, without a round trip, whether a Redis key may have changed.

Server-assisted client-side caching (Redis 6+, Valkey): one dedicated RESP3
connection runs ``CLIENT TRACKING ON BCAST PREFIX <prefix>``, and the server
pushes an invalidation on it for every write to a key under the prefix. A
key is trusted from ``mark(key)`` (called *before* reading its value) until
its invalidation arrives; reading pushed messages is a socket poll, not a
request. Anything that goes wrong (old server, dropped link, a fork) only
makes keys untrusted, so callers fall back to reading Redis, never to stale
data; trust also expires after ``max_trust_s`` to bound staleness on a link
that died silently.
"""

from __future__ import annotations

import os
import threading
import time

import redis


class KeyWatch:
    def __init__(self, client: redis.Redis, prefix: str, max_trust_s: float = 1.0, retry_s: float = 1.0) -> None:
        self._pool = client.connection_pool
        self.prefix = prefix
        self.max_trust_s = max_trust_s
        self.retry_s = retry_s
        self.supported = True
        self._conn: redis.connection.AbstractConnection | None = None
        self.client_id: int | None = None  # the tracking connection's id on the server
        self._pid = os.getpid()
        self._retry_at = 0.0
        self._marked: dict[bytes, float] = {}
        self._lock = threading.Lock()

    def trusted(self, key: str) -> bool:
        """True when ``key`` has certainly not been written since it was marked."""
        with self._lock:
            if not self._poll():
                return False
            marked = self._marked.get(key.encode())
            return marked is not None and time.monotonic() - marked < self.max_trust_s

    def mark(self, key: str) -> None:
        """Start trusting ``key``; read its value after this, not before."""
        with self._lock:
            if self._poll():
                self._marked[key.encode()] = time.monotonic()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _poll(self) -> bool:
        """Apply pushed invalidations; False when the watch cannot vouch for anything."""
        if self._pid != os.getpid():  # a forked child must not read its parent's socket
            self._conn, self._pid = None, os.getpid()
            self._marked.clear()
        if self._conn is None and not self._connect():
            return False
        try:
            while self._conn.can_read(timeout=0):
                self._conn.read_response(push_request=True)
        except (redis.RedisError, OSError):
            self._drop()
            return False
        return True

    def _connect(self) -> bool:
        if not self.supported or time.monotonic() < self._retry_at:
            return False
        conn = self._pool.connection_class(**{**self._pool.connection_kwargs, "protocol": 3})
        try:
            conn.connect()
            conn._parser.set_invalidation_push_handler(self._invalidate)
            conn.send_command("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", self.prefix)
            conn.read_response()
            conn.send_command("CLIENT", "ID")
            self.client_id = int(conn.read_response())
        except redis.ResponseError:
            self.supported = False  # no tracking on this server: always read through
            conn.disconnect()
            return False
        except (redis.RedisError, OSError):
            self._retry_at = time.monotonic() + self.retry_s
            conn.disconnect()
            return False
        self._conn = conn
        return True

    def _invalidate(self, message: list) -> None:
        keys = message[1] if len(message) > 1 else None
        if keys is None:  # FLUSHALL / FLUSHDB: everything may have changed
            self._marked.clear()
        else:
            for key in keys:
                self._marked.pop(key if isinstance(key, bytes) else str(key).encode(), None)

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.disconnect()
        self._conn = None
        self._marked.clear()
        self._retry_at = time.monotonic() + self.retry_s
