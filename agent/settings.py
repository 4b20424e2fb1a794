"""One settings object, read from ``MEMORAG_*`` environment variables.

Every default is the embedded, no-set-up choice; production overrides by
environment. Plain data so that ``store/`` and ``workers/`` may read it too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _env(name: str, default: str = "") -> str:
    return os.environ.get(f"MEMORAG_{name}", default).strip()


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=lambda: Path(_env("HOME") or Path.home() / ".local/share/memorag"))
    redis_url: str = field(default_factory=lambda: _env("REDIS_URL"))
    model: str = field(default_factory=lambda: _env("MODEL", "default"))
    device: str = field(default_factory=lambda: _env("DEVICE", "auto"))
    dtype: str = field(default_factory=lambda: _env("DTYPE", "auto"))
    memory_dtype: str = field(default_factory=lambda: _env("MEMORY_DTYPE", "bf16"))
    beta: int = field(default_factory=lambda: int(_env("BETA", "16")))
    window: int = field(default_factory=lambda: int(_env("WINDOW", "1024")))
    scorer: str = field(default_factory=lambda: _env("SCORER", "snapkv"))
    # A memory longer than this many tokens is read with its positions spread over it (0: never).
    read_span: int = field(default_factory=lambda: int(_env("READ_SPAN", "2048")))
    reader: str = field(default_factory=lambda: _env("READER", "auto"))  # auto, extract or generate (agent.reader)
    memory_ttl_s: int = field(default_factory=lambda: int(_env("MEMORY_TTL_S", "0")))
    generator_url: str = field(default_factory=lambda: _env("GENERATOR_URL"))
    generator_api: str = field(default_factory=lambda: _env("GENERATOR_API", "sglang"))
    generator_api_key: str = field(default_factory=lambda: _env("GENERATOR_API_KEY"))
    generator_model: str = field(default_factory=lambda: _env("GENERATOR_MODEL", "default"))
    weaviate_url: str = field(default_factory=lambda: _env("WEAVIATE_URL"))
    weaviate_grpc_port: int = field(default_factory=lambda: int(_env("WEAVIATE_GRPC_PORT", "50051")))
    weaviate_api_key: str = field(default_factory=lambda: _env("WEAVIATE_API_KEY"))
    embedder: str = field(default_factory=lambda: _env("EMBEDDER", "default"))
    max_document_mb: float = field(default_factory=lambda: float(_env("MAX_DOCUMENT_MB", "20")))
    database_url: str = field(default_factory=lambda: _env("DATABASE_URL"))
    # Longest task a worker may run before the broker hands its message to another worker.
    task_timeout_s: int = field(default_factory=lambda: int(_env("TASK_TIMEOUT_S", "7200")))
    route_docs: int = field(default_factory=lambda: int(_env("ROUTE_DOCS", "3")))
    top_k: int = field(default_factory=lambda: int(_env("TOP_K", "5")))
    # RLGF: beat runs `retrain` every RETRAIN_INTERVAL seconds; it trains only once this much new feedback arrived.
    retrain_interval: int = field(default_factory=lambda: int(_env("RETRAIN_INTERVAL", "3600")))
    retrain_min_feedback: int = field(default_factory=lambda: int(_env("RETRAIN_MIN_FEEDBACK", "20")))
    rlgf_candidates: int = field(default_factory=lambda: int(_env("RLGF_CANDIDATES", "4")))
    rlgf_steps: int = field(default_factory=lambda: int(_env("RLGF_STEPS", "40")))
    rlgf_sft_steps: int = field(default_factory=lambda: int(_env("RLGF_SFT_STEPS", "20")))
    rlgf_budget_s: float = field(default_factory=lambda: float(_env("RLGF_BUDGET_S", "1800")))
    rlgf_heldout: float = field(default_factory=lambda: float(_env("RLGF_HELDOUT", "0.2")))
    gate_margin: float = field(default_factory=lambda: float(_env("GATE_MARGIN", "0.01")))

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def valkey_dir(self) -> Path:
        return self.home / "valkey"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"


def get_settings() -> Settings:
    """Fresh settings each call, so tests and CLIs can change the environment."""
    return Settings()
