"""ops/compose.yaml cannot run here; keep it parseable and consistent with the settings."""

from __future__ import annotations

from pathlib import Path

import yaml

from core.settings import Settings
from workers.app import QUEUES

COMPOSE = Path(__file__).resolve().parents[1] / "ops" / "compose.yaml"


def test_compose_has_the_production_shape_and_only_known_settings():
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert {"redis", "postgres", "weaviate", "sglang", "memory-worker", "query-worker", "train-worker", "beat"} <= set(
        services
    )
    known = {f"MEMORAG_{name.upper()}" for name in Settings.model_fields}
    served: set[str] = set()
    for name in ("memory-worker", "query-worker", "train-worker", "beat", "manager"):
        service = services[name]
        env = service["environment"]
        assert set(env) <= known, set(env) - known
        assert env["MEMORAG_REDIS_URL"].startswith("redis://redis:")
        assert "@postgres:5432/" in env["MEMORAG_DATABASE_URL"]
        assert env["MEMORAG_WEAVIATE_URL"] == "http://weaviate:8080"
        assert env["MEMORAG_GENERATOR_URL"] == "http://sglang:30000"
        command = service.get("command", [])
        if command[:1] == ["worker"]:
            served |= set(command[command.index("-Q") + 1].split(","))
    assert served == set(QUEUES)
    redis = services["redis"]["command"]
    assert redis[redis.index("--maxmemory-policy") + 1] == "volatile-lru"  # memories evicted, never the queues
    for name in ("memory-worker", "query-worker"):  # one disk tier both reach; nothing else shared on disk
        assert services[name]["environment"]["MEMORAG_MEMORY_DIR"] == "/memories"
        assert services[name]["volumes"] == ["memories:/memories"]
    dockerfile = (COMPOSE.parent / "Dockerfile").read_text()
    assert dockerfile.index("ENV MEMORAG_HOME=/data") < dockerfile.index("models prepare")  # where it is looked for
    assert "VOLUME" not in dockerfile
    assert (COMPOSE.parent / "Dockerfile").exists()
