"""One settings object, read from ``MEMORAG_*`` environment variables and checked once.

Every default is the embedded, no-set-up choice; production overrides by
environment. It lives below every layer (``store/``, ``agent/``, ``workers/``
all read it) and imports none of them. A bad value is one line naming the
variable, what it holds and what it should hold: ``InvalidSettings``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

DType = Literal["auto", "bf16", "bfloat16", "fp16", "float16", "fp32", "float32"]
Positive = Annotated[int, Field(ge=1)]
NonNegative = Annotated[int, Field(ge=0)]


class InvalidSettings(ValueError):
    """A ``MEMORAG_*`` variable holds a value the service cannot use; the message says which and why."""


class Settings(BaseSettings):
    # An empty variable means the default, as an unset one does.
    model_config = SettingsConfigDict(
        env_prefix="MEMORAG_", env_ignore_empty=True, frozen=True, str_strip_whitespace=True, extra="ignore"
    )

    home: Path = Field(default_factory=lambda: Path.home() / ".local/share/memorag")
    redis_url: str = ""
    model: str = "default"
    device: str = "auto"
    # Threads the model computes on in each process (0: torch's default, every core). Several workers on one
    # host each want cores / workers.
    threads: NonNegative = 0
    dtype: DType = "auto"
    # int8 halves a memory's bytes (values with per-channel / per-token scales, see agent/memory/int8.py).
    memory_dtype: Literal[DType, "int8"] = "bf16"
    beta: Annotated[int, Field(ge=1, le=64)] = 16
    window: Positive = 1024
    # surprisal holds planted facts where snapkv holds none (beta 16: 0.40 vs 0.00 at 16k tokens) for 1.25-1.35x
    # snapkv's formation time (ops/bench/scorers.py, docs/benchmarks.md)
    scorer: str = "surprisal"
    # A memory longer than this many tokens is read with its positions spread over it (0: never).
    read_span: NonNegative = 2048
    reader: Literal["auto", "extract", "generate"] = "auto"
    # Expiry of a memory's Redis (hot) copy; without a disk tier the memory is then rebuilt from text when asked for.
    memory_ttl_s: NonNegative = 0
    # The durable memory tier: a folder (local or a shared volume); empty: MEMORAG_HOME/memories; "off": none.
    memory_dir: str = ""
    # The embedded Valkey's memory budget (Redis syntax: 4gb, 512mb; 0: no cap; empty: a quarter of the RAM).
    # Memories' hot copies are evicted least recently used first; queues and the index are never evicted.
    redis_maxmemory: Annotated[str, Field(pattern=r"(?i)^(|\d+\s*(b|kb?|mb?|gb?)?)$")] = ""
    generator_url: str = ""
    generator_api: Literal["sglang", "openai"] = "sglang"
    generator_api_key: str = ""
    generator_model: str = "default"
    weaviate_url: str = ""
    weaviate_grpc_port: Annotated[int, Field(ge=1, le=65535)] = 50051
    weaviate_api_key: str = ""
    embedder: str = "default"
    max_document_mb: Annotated[float, Field(gt=0)] = 20.0
    max_question_chars: Annotated[int, Field(ge=1)] = 2000
    # Webhooks: hosts, addresses or networks (comma-separated) callbacks may reach; empty: any public address
    # (private, loopback and reserved ones refused). Each POST waits WEBHOOK_TIMEOUT_S; WEBHOOK_ATTEMPTS in all.
    webhook_hosts: str = ""
    webhook_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    webhook_attempts: Annotated[int, Field(ge=1, le=20)] = 5
    # Most questions one batch (``queries:batch``, ``ask --file``) may carry; a larger one is refused whole.
    max_batch: Annotated[int, Field(ge=1)] = 100
    # Bounds checked before anything is queued: a document's tokens (the memory model's) and a PDF's pages.
    max_document_tokens: Positive = 2_000_000
    max_pdf_pages: Positive = 2000
    api_host: str = "127.0.0.1"
    api_port: Annotated[int, Field(ge=1, le=65535)] = 8000
    # Processes answering HTTP (0: one per CPU core, at most 4). One process is bound by its interpreter lock:
    # a submission is ~8 ms of Python, so 8 clients at once queue ~65 ms behind each other in one process.
    api_workers: Annotated[int, Field(ge=0, le=32)] = 0
    database_url: str = ""
    # SQLite (no MEMORAG_DATABASE_URL) syncs to disk at checkpoints ("normal": a commit survives any process
    # crash; an OS crash or power loss may undo the last few) or at every commit ("full", slower).
    sqlite_sync: Literal["normal", "full"] = "normal"
    # Longest task a worker may run before the broker hands its message to another worker.
    task_timeout_s: Positive = 7200
    # The reconciler (beat, and `manage.py repair`) requeues work whose message was lost once it has been
    # untouched this long, and checks the stores every RECONCILE_INTERVAL seconds.
    reconcile_interval: Positive = 60
    reconcile_grace_s: NonNegative = 30
    # A document or question whose worker died this many times holding it ends failed with the reason.
    max_deliveries: Positive = 3
    # How long a question waits for its knowledge base's repair before it ends with an error saying so.
    repair_wait_s: Positive = 600
    route_docs: Positive = 3
    # Clue decoding (spans, sub-questions, a draft written from each routed memory). With hybrid search the
    # bundled model's clues add recall@5 +0.034 on QMSum val and +0.090 on L-Eval natural_question for seconds a
    # question (docs/benchmarks.md); "off" answers at rag's speed.
    clues: Literal["on", "off"] = "on"
    # Evidence from the memory's attention (agent/memory/pointing.py): "auto" where heads that beat the question
    # alone on a dev split were kept for the model (agent/memory/heads/; none for the bundled model), "off" never.
    memory_evidence: Literal["auto", "off"] = "auto"
    # How chunks are searched: BM25 over each chunk and its title/headings beside the embedding, fused by
    # rank ("hybrid"), or the embedding alone ("dense"). docs/evaluation.md has the comparison.
    retrieval: Literal["hybrid", "dense"] = "hybrid"
    top_k: Annotated[int, Field(ge=1, le=50)] = 5
    # RLGF: beat runs `retrain` every RETRAIN_INTERVAL seconds; it trains only once this much new feedback arrived.
    retrain_interval: Positive = 3600
    retrain_min_feedback: Positive = 20
    rlgf_candidates: Annotated[int, Field(ge=2)] = 4
    rlgf_steps: NonNegative = 40
    rlgf_sft_steps: NonNegative = 20
    rlgf_budget_s: Annotated[float, Field(gt=0)] = 1800.0
    rlgf_heldout: Annotated[float, Field(gt=0, lt=1)] = 0.2
    gate_margin: Annotated[float, Field(ge=0)] = 0.01

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def valkey_dir(self) -> Path:
        return self.home / "valkey"

    @property
    def memory_tier_dir(self) -> Path | None:
        if self.memory_dir.lower() == "off":
            return None
        return Path(self.memory_dir).expanduser() if self.memory_dir else self.home / "memories"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    def replace(self, **changes) -> Settings:
        """A copy with ``changes`` applied and checked like the environment is."""
        return checked(lambda: Settings(**{**self.model_dump(), **changes}))


def checked(make) -> Settings:
    try:
        return make()
    except ValidationError as exc:
        raise InvalidSettings(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """The first problem as one line: ``MEMORAG_TOP_K='abc': should be a whole number``."""
    error = exc.errors()[0]
    name = "MEMORAG_" + "_".join(str(part) for part in error["loc"]).upper()
    message = error["msg"].replace("Input should be", "should be").replace("input", "value")
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{name}={error.get('input')!r}: {message}{more}"


_last: tuple[tuple[tuple[str, str], ...], Settings] | None = None


def get_settings() -> Settings:
    """The settings the environment holds now; raises InvalidSettings.

    Read again whenever a ``MEMORAG_*`` variable changed (tests and CLIs change them), else the last ones:
    reading them costs about 10 ms, and one submission asked six times (ops/bench/api.py).
    """
    global _last
    import os

    environment = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("MEMORAG_") or k == "HOME"))
    if _last is None or _last[0] != environment:
        _last = (environment, checked(Settings))
    return _last[1]
