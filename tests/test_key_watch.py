"""Client-side caching: a marked key stays trusted until someone writes it.

Runs against the session's private Valkey (a real server); the index test
checks the point of it all: a cached matrix is reused without a read and
refreshed as soon as another client changes the knowledge base.
"""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest
import redis

from store.tracking import KeyWatch
from store.vectors import Chunk, EmbeddedIndex


def _until(predicate, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


@pytest.fixture
def prefix() -> str:
    return f"watch-{uuid.uuid4().hex[:8]}:"


def test_a_write_by_another_client_revokes_trust(valkey_url, prefix):
    watch = KeyWatch(redis.Redis.from_url(valkey_url), prefix, max_trust_s=60)
    writer = redis.Redis.from_url(valkey_url)
    key, other = prefix + "a", prefix + "b"
    assert not watch.trusted(key), "nothing is trusted before it is marked"
    watch.mark(key)
    watch.mark(other)
    assert watch.trusted(key) and watch.trusted(other)
    writer.incr(key)
    assert _until(lambda: not watch.trusted(key))
    assert watch.trusted(other), "a write to one key leaves the others trusted"
    writer.set("unwatched-" + key, 1)
    assert watch.trusted(other)
    watch.close()


def test_trust_expires_and_a_flush_revokes_everything(valkey_url, prefix):
    watch = KeyWatch(redis.Redis.from_url(valkey_url), prefix, max_trust_s=0.2)
    key = prefix + "a"
    watch.mark(key)
    assert watch.trusted(key)
    time.sleep(0.25)
    assert not watch.trusted(key), "trust is bounded in time even without invalidations"
    watch.max_trust_s = 60
    watch.mark(key)
    redis.Redis.from_url(valkey_url).flushdb()
    assert _until(lambda: not watch.trusted(key))
    watch.close()


def test_a_killed_connection_distrusts_then_recovers(valkey_url, prefix):
    client = redis.Redis.from_url(valkey_url)
    watch = KeyWatch(client, prefix, max_trust_s=60, retry_s=0.05)
    key = prefix + "a"
    watch.mark(key)
    assert watch.trusted(key)
    client.client_kill_filter(_id=watch.client_id)
    assert _until(lambda: not watch.trusted(key)), "a lost link must not keep vouching"
    time.sleep(0.06)
    watch.mark(key)
    assert _until(lambda: watch.trusted(key)), "the watch reconnects and tracks again"
    client.incr(key)
    assert _until(lambda: not watch.trusted(key)), "the new link receives invalidations"
    watch.close()


def test_index_reuses_its_matrix_without_reading_redis_and_sees_other_writers(valkey_url, redis_client):
    kb = f"kb-{uuid.uuid4().hex[:8]}"
    reader, writer = EmbeddedIndex(redis.Redis.from_url(valkey_url)), EmbeddedIndex(redis_client)
    reader._versions.max_trust_s = 60
    vectors = np.eye(4, dtype=np.float32)
    writer.upsert(kb, [Chunk("doc", i, f"t{i}", 0, 1, 0, 1) for i in range(3)], vectors[:3])
    reader.search(kb, vectors[:1], k=1)

    reads = []
    reader.client.get = lambda *a, **kw: reads.append(a) or redis.Redis.get(reader.client, *a, **kw)
    for _ in range(5):
        assert reader.search(kb, vectors[:1], k=1)[0][0][0].id == "doc#0"
    assert reads == [], "a warm search should not ask Redis for the version"

    writer.upsert(kb, [Chunk("new", 0, "n", 0, 1, 0, 1)], vectors[3:])
    assert _until(lambda: reader.search(kb, vectors[3:], k=1)[0][0][0].id == "new#0", timeout=1.0)


def test_a_forked_child_does_not_inherit_trust(valkey_url, prefix):
    import multiprocessing

    watch = KeyWatch(redis.Redis.from_url(valkey_url), prefix, max_trust_s=60)
    key = prefix + "a"
    watch.mark(key)
    parent_id = watch.client_id

    def child(queue):
        first = watch.trusted(key)
        watch.mark(key)
        queue.put((first, watch.trusted(key), watch.client_id != parent_id))

    queue = multiprocessing.get_context("fork").Queue()
    process = multiprocessing.get_context("fork").Process(target=child, args=(queue,))
    process.start()
    result = queue.get(timeout=10)
    process.join(10)
    assert result == (False, True, True), "the child opens its own tracking link instead of reading the parent's"
    assert watch.trusted(key), "the parent's link is untouched by the child"
    watch.close()
