"""The fault campaign of ops/bench/chaos.py, each scenario small, against real processes: Valkey, a private
PostgreSQL cluster, two workers and beat (the reconciler's schedule), with a tiny random model."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "ops" / "bench"))  # after the project: ops/bench/service.py is a script

import chaos  # noqa: E402
from deployment import PG_BIN, PrivatePostgres, deployment  # noqa: E402

pytestmark = pytest.mark.skipif(not (PG_BIN / "initdb").exists(), reason="PostgreSQL 15's initdb is not installed")
CLEAN = {"lost": 0, "duplicate_answers": 0, "duplicate_chunks": 0, "invalid_memories": 0}


@pytest.fixture(scope="module")
def postgres():
    cluster = PrivatePostgres().create()
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="module")
def live(tmp_path_factory, tiny_long_model_dir, postgres):
    """One deployment the scenarios share (each in its own knowledge bases)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("MEMORAG_HOME", "MEMORAG_REDIS_URL", "MEMORAG_DATABASE_URL", "MEMORAG_MODEL"):
            patch.delenv(name, raising=False)
        home = tmp_path_factory.mktemp("chaos")
        with deployment(home, str(tiny_long_model_dir), database_url=postgres.url, task_timeout_s=10,
                        reconcile_interval=3, grace_s=5) as running:  # fmt: skip
            yield running


def clean(result: dict) -> dict:
    return {k: result[k] for k in CLEAN}


def test_worker_kill(live):
    result = chaos.worker_kill(live, docs=3, questions=4, kills=1)
    assert clean(result) == CLEAN and result["documents"] == 3 and result["queries"] == 4, result


@pytest.mark.parametrize("aof", [False], ids=["no-aof"])  # with its AOF: tests/test_hosts.py, store_host_restart
def test_broker_restart(live, aof):
    result = chaos.broker_restart(live, aof, docs=2, questions=3, down_s=1.0)
    assert clean(result) == CLEAN and result["failed"] == 0, result


def test_store_wipe(live):
    result = chaos.store_wipe(live, kbs=2, docs_per_kb=1)
    assert clean(result) == CLEAN, result
    assert result["chunks_back"] == result["chunks_before"] and result["memories_back"] == result["memories_before"]
    assert result["answered_after"] == "4/4" and result["repaired_documents"] == 2


def test_corruption(live):
    result = chaos.corruption(live, n=4, questions=2)
    assert result["memory_detected"] == result["memory_chunks_corrupted"] == 4, result
    assert result["memory_reformed"] == result["memory_disk_copies_corrupted"] == 2, result  # the rest: from disk
    assert result["vector_detected"] == result["vector_entries_corrupted"] == 4, result
    assert result["served_from_corrupt"] == 0 < result["evidence_checked"] and result["still_corrupt_after"] == 0
    assert clean(result) == CLEAN, result


def test_database_restart(live, postgres):
    result = chaos.database_restart(live, postgres, down_s=4, docs=2, questions=2)
    assert clean(result) == CLEAN and result["failed"] == 0, result
    done, tries = map(int, result["clear_errors"].split("/"))
    assert tries >= 2 and done == tries, result


def test_load(live):
    result = chaos.load(live, questions=4, submitters=2)
    assert result["answered"] == "4/4" and clean(result) == CLEAN, result


def test_fuzz(live):
    cases = int(os.environ.get("MEMORAG_FUZZ_CASES", 60))
    result = chaos.fuzz(live, cases=cases)
    assert result["cases"] >= 0.9 * cases and result["tracebacks"] == 0, result
    assert result["inconsistent_rows"] == 0, result


def test_isolation(live):
    result = chaos.isolation(live, kbs=8, chunks=10, searches=40)
    assert result["cross_kb_hits"] == 0 and all(r["hits"] > 0 for r in result["indexes"].values()), result
