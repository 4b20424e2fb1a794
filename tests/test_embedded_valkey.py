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
