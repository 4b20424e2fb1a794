"""The production shape across hosts (ops/bench/hosts.py): a store host with Redis (AOF) and PostgreSQL, a memory
worker, query workers and a manager, each a network namespace with its own disk, talking only over the LAN."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "ops" / "bench"))  # after the project: ops/bench/service.py is a script

import hosts  # noqa: E402
import lan  # noqa: E402
from deployment import PG_BIN  # noqa: E402

WHY_NOT = (
    lan.unavailable()
    or (None if shutil.which("redis-server") else "redis-server is not installed")
    or (None if (PG_BIN / "initdb").exists() else "PostgreSQL 15's initdb is not installed")
)
pytestmark = [
    pytest.mark.skipif(WHY_NOT is not None, reason=f"no multi-host harness here: {WHY_NOT}"),
    pytest.mark.serial,  # a partition races the answer it cuts off: not beside other tests on two cores
]
WORKERS = ["memory@memory", "query@query"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tiny_long_model_dir):
    with hosts.cluster(tmp_path_factory.mktemp("hosts"), tiny_long_model_dir) as running:
        yield running
    assert not [n for n in lan.namespaces() if n.startswith(running.net.tag)]  # nothing left behind


def test_across_hosts_memory_worker_forms_query_worker_answers_and_the_manager_sees_both(cluster):
    result = hosts.across_hosts(cluster)
    assert (result["documents"], result["queries"]) == (2, 3)
    assert (result["lost"], result["duplicate_answers"], result["failed"], result["invalid_memories"]) == (0, 0, 0, 0)
    assert result["formed_by"]["memory"] >= 2 and result["formed_by"]["query"] == 0
    assert result["answered_by"]["query"] >= 3 and result["answered_by"]["memory"] == 0
    assert result["status_names"] == WORKERS
    assert result["unshared_tiers_warned"]  # nothing shared on disk: status says what that costs
    assert result["inspect_names"] == {"active": WORKERS, "active_queues": WORKERS}  # Celery's own tools
    assert result["flower_names"] == WORKERS
    assert result["disk_tier_files"] == {"memory": 2, "query": 0}  # each host's own disk


def test_partition_a_second_query_worker_answers_and_the_late_answer_is_kept_out(cluster):
    result = hosts.partition(cluster)
    assert result["answered_by"] == ["query2"]
    assert result["late_attempt_kept_out"]  # the cut-off worker finished after healing and wrote nothing
    assert (result["lost"], result["duplicate_answers"], result["failed"]) == (0, 0, 0)


def test_store_host_restart_with_both_workers_busy_loses_nothing(cluster):
    result = hosts.store_host_restart(cluster)
    assert any(r.startswith("d") for r in result["busy_when_killed"])
    assert any(r.startswith("q") for r in result["busy_when_killed"])
    assert result["documents"] == 3 and result["asked"] + result["refused_while_down"] == 5
    assert result["queries"] >= result["asked"] and result["refusals_one_line"], result["refusals_not_one_line"]
    assert (result["lost"], result["duplicate_answers"], result["failed"], result["invalid_memories"]) == (0, 0, 0, 0)


def test_a_worker_on_another_host_refuses_a_database_of_its_own_and_a_private_broker(cluster):
    host = cluster.hosts["query2"]
    alone = host.run(sys.executable, hosts.MANAGE, "worker", "-Q", "query", check=False, timeout=60,
                     env={"MEMORAG_REDIS_URL": "", "MEMORAG_DATABASE_URL": ""})  # fmt: skip
    assert alone.returncode == 2 and "no Redis to take work from" in alone.stderr
    sqlite = host.run(sys.executable, hosts.MANAGE, "worker", "-Q", "query", check=False, timeout=60,
                      env={"MEMORAG_DATABASE_URL": ""})  # fmt: skip
    assert sqlite.returncode == 2 and "MEMORAG_DATABASE_URL is unset" in sqlite.stderr
    assert not (host.home / "valkey").exists()  # no server was started on the worker's host
