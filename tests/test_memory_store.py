"""Memories in Redis: bit-identical round trips, damage detected, atomic replace."""

from __future__ import annotations

import hashlib
import os

import fakeredis
import pytest

from store.errors import CorruptMemory, IncompatibleMemory
from store.memories import MemoryNotFound, MemoryStore
from store.redis import StoreUnavailable

META = {"model_fingerprint": "abc", "model_name": "m", "doc_tokens": 10, "memory_tokens": 2}


@pytest.fixture
def store(redis_client):
    return MemoryStore(redis_client, chunk_bytes=1000)


def test_round_trip_is_bit_identical_across_chunks(store):
    data = os.urandom(4567)
    manifest = store.put("kb", "doc", data, META)
    assert manifest.chunks == 5 and manifest.size == 4567
    assert manifest.sha256 == hashlib.sha256(data).hexdigest()
    again, read = store.get("kb", "doc", fingerprint="abc")
    assert again == data and read == manifest
    assert store.exists("kb", "doc") and store.list("kb") == ["doc"]


def test_flipped_byte_is_detected(store, redis_client):
    manifest = store.put("kb", "doc", os.urandom(2500), META)
    key = store.chunk_key("kb", "doc", manifest.version, 1)
    chunk = bytearray(redis_client.get(key))
    chunk[10] ^= 0x01
    redis_client.set(key, bytes(chunk))
    with pytest.raises(CorruptMemory, match="checksum"):
        store.get("kb", "doc")


def test_missing_chunk_is_detected(store, redis_client):
    manifest = store.put("kb", "doc", os.urandom(2500), META)
    redis_client.delete(store.chunk_key("kb", "doc", manifest.version, 2))
    with pytest.raises(CorruptMemory, match="lacks chunk"):
        store.get("kb", "doc")


def test_other_models_memory_is_refused(store):
    store.put("kb", "doc", b"x" * 10, META)
    with pytest.raises(IncompatibleMemory, match="abc"):
        store.get("kb", "doc", fingerprint="other")


def test_replace_swaps_whole_versions(store, redis_client):
    first = store.put("kb", "doc", b"a" * 2500, META)
    second = store.put("kb", "doc", b"b" * 1500, META)
    assert store.get("kb", "doc")[0] == b"b" * 1500
    old = store.chunk_key("kb", "doc", first.version, 0)
    assert 0 < redis_client.ttl(old) <= 120  # a reader mid-way through the old version can finish
    assert redis_client.ttl(store.chunk_key("kb", "doc", second.version, 0)) == -1


def test_delete_list_and_isolation(store):
    store.put("kb-a", "doc", b"a", META)
    store.put("kb-b", "doc", b"b", META)
    store.put("kb-a", "with:colon/slash", b"c", META)
    assert store.list("kb-a") == ["doc", "with:colon/slash"]
    assert store.get("kb-b", "doc")[0] == b"b"
    assert store.delete("kb-a", "doc") and not store.delete("kb-a", "doc")
    assert store.list("kb-a") == ["with:colon/slash"]
    with pytest.raises(MemoryNotFound):
        store.get("kb-a", "doc")
    assert store.get("kb-b", "doc")[0] == b"b"


def test_ttl_applies_to_manifest_and_chunks(redis_client):
    store = MemoryStore(redis_client, ttl_s=300)
    manifest = store.put("kb", "doc", b"x" * 10, META)
    assert 0 < redis_client.ttl(store._manifest_key("kb", "doc")) <= 300
    assert 0 < redis_client.ttl(store.chunk_key("kb", "doc", manifest.version, 0)) <= 300


def test_persists_for_a_new_client(valkey_url, redis_client):
    import redis

    MemoryStore(redis_client).put("kb", "doc", b"payload", META)
    fresh = MemoryStore(redis.Redis.from_url(valkey_url))
    assert fresh.get("kb", "doc")[0] == b"payload"


def test_connection_lost_mid_pipelined_read_is_a_clear_error():
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server)
    store = MemoryStore(client, chunk_bytes=100)
    store.put("kb", "doc", os.urandom(1000), META)
    pipeline = client.pipeline

    def drop_then_pipeline(*args, **kwargs):
        server.connected = False  # the server goes away after the manifest, before the chunk pipeline
        return pipeline(*args, **kwargs)

    client.pipeline = drop_then_pipeline
    with pytest.raises(StoreUnavailable, match="lost the connection"):
        store.get("kb", "doc")


def test_missing_chunk_on_fake_server():
    client = fakeredis.FakeRedis()
    store = MemoryStore(client, chunk_bytes=100)
    manifest = store.put("kb", "doc", os.urandom(350), META)
    client.delete(store.chunk_key("kb", "doc", manifest.version, 3))
    with pytest.raises(CorruptMemory):
        store.get("kb", "doc")
