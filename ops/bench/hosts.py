"""The production shape across hosts: a store host (Redis with its AOF, PostgreSQL), a memory-worker host, query-
worker hosts and a manager host, each a network namespace with its own address, hostname and MEMORAG_HOME (its
own copy of the model; nothing shared on disk), built by ops/bench/lan.py. The manager does what a person does,
with ``manage.py``; the ledger is read on the manager host too, since only the LAN reaches the stores.

Scenarios:
  across_hosts        the manager creates a knowledge base, ingests two documents, asks three questions; the
                      memory worker forms, the query worker answers; status, ``celery inspect`` and Flower on the
                      manager name both remote workers.
  partition           the query worker's cable is pulled mid-question; a second query worker on another host
                      answers once the visibility timeout hands the message back; the cable comes back and the
                      first worker's late answer is not written over the second's.
  store_host_restart  the store host's Redis is killed while both workers are busy and started again on its AOF.

    python ops/bench/hosts.py --json bench-out/hosts.json           # all three, the tiny random model
    python ops/bench/hosts.py --model default --json out.json        # the bundled model (answers worth reading)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import common  # noqa: F401  (the project first on sys.path)
from chaos import QUESTIONS, pieces
from common import ROOT, print_table, write_json
from deployment import PrivatePostgres, tiny_llama, wait_until
from lan import Host, Lan, lan

MANAGE = str(ROOT / "manage.py")
CELERY = str(Path(sys.executable).parent / "celery")  # the same environment's
THIS = str(Path(__file__).resolve())
REDIS_PORT, POSTGRES_PORT = 6379, 5432
WORKERS = ["memory@memory", "query@query"]
INSPECTED = ("active", "active_queues")  # celery inspect commands run against the hosts


@dataclass
class Cluster:
    """The hosts and what runs on them; ``stop`` is the LAN's destroy plus the database's directory."""

    net: Lan
    model: Path
    task_timeout_s: int = 12
    reconcile_interval: int = 3
    grace_s: int = 5
    hosts: dict[str, Host] = field(default_factory=dict)
    postgres: PrivatePostgres | None = None

    @property
    def store(self) -> Host:
        return self.hosts["store"]

    @property
    def manager(self) -> Host:
        return self.hosts["manager"]

    def env(self, host: Host) -> dict[str, str]:
        store = self.store.address
        return {
            "MEMORAG_HOME": str(host.home),
            "MEMORAG_REDIS_URL": f"redis://{store}:{REDIS_PORT}/0",
            "MEMORAG_DATABASE_URL": f"postgresql://postgres@{store}:{POSTGRES_PORT}/postgres",
            "MEMORAG_MODEL": str(host.home / "models" / self.model.name),
            "MEMORAG_THREADS": "1",
            "MEMORAG_BETA": "4",
            "MEMORAG_TASK_TIMEOUT_S": str(self.task_timeout_s),
            "MEMORAG_RECONCILE_INTERVAL": str(self.reconcile_interval),
            "MEMORAG_RECONCILE_GRACE_S": str(self.grace_s),
        }

    def start(self) -> Cluster:
        store = self.hosts["store"] = self.net.add("store")
        self.start_redis()
        self.postgres = PrivatePostgres(store.address, POSTGRES_PORT, ["ip", "netns", "exec", store.namespace])
        self.postgres.create()
        for name in ("memory", "query", "query2", "manager"):
            host = self.hosts[name] = self.net.add(name)
            shutil.copytree(self.model, host.home / "models" / self.model.name)  # each host its own copy
            host.env = self.env(host)
        self.manager.run(sys.executable, MANAGE, "status")  # creates the schema before two workers race to
        self.start_worker("memory", "memory")
        self.start_worker("query", "query")
        self.manager.spawn("beat", sys.executable, MANAGE, "beat", "--loglevel", "WARNING")
        self.wait_for_workers(["memory@memory", "query@query"])
        return self

    def start_redis(self) -> None:
        """Debian's redis-server on the store host, appending every write (fsync each second)."""
        store = self.store
        (store.dir / "redis").mkdir(exist_ok=True)
        store.spawn("redis", "redis-server", "--bind", store.address, "127.0.0.1", "--port", str(REDIS_PORT),
                    "--protected-mode", "no", "--dir", str(store.dir / "redis"), "--appendonly", "yes",
                    "--appendfsync", "everysec", "--save", "", "--maxmemory-policy", "volatile-lru",
                    "--proto-max-bulk-len", "512mb")  # fmt: skip
        deadline = time.monotonic() + 15
        while store.run("redis-cli", "-p", str(REDIS_PORT), "ping", check=False).stdout.strip() != "PONG":
            if time.monotonic() > deadline:
                raise TimeoutError(f"Redis did not start on the store host:\n{store.log('redis')}")
            time.sleep(0.1)

    def start_worker(self, host: str, queues: str) -> None:
        self.hosts[host].spawn("worker", sys.executable, MANAGE, "worker", "-Q", queues, "-n", f"{host}@%h",
                               "--loglevel", "INFO")  # fmt: skip

    def wait_for_workers(self, names: list[str], timeout: float = 120) -> None:
        self.probe("workers", *names, wait=timeout)

    def manage(self, *args: str, timeout: float = 300) -> str:
        return self.manager.run(sys.executable, MANAGE, *args, timeout=timeout).stdout

    def _probe_command(self, args: tuple[str, ...], wait: float) -> list[str]:
        return [sys.executable, THIS, "--probe-timeout", str(wait), "--probe", *args]

    def probe(self, *args: str, wait: float = 120) -> dict:
        """Ask this script, run on the manager host, what the stores say (JSON on its last line); it waits up to
        ``wait`` seconds for what it looks for."""
        done = self.manager.run(*self._probe_command(args, wait), timeout=wait + 60)
        return json.loads(done.stdout.strip().splitlines()[-1])

    @contextlib.contextmanager
    def watching(self, *args: str, wait: float = 120) -> Iterator[Callable[[], dict]]:
        """A probe started before the work it watches for: it is connected and polling when this yields, and the
        yielded function waits for its answer."""
        process = subprocess.Popen(self.manager.command(*self._probe_command(args, wait)),
                                   env=self.manager.environment(), cwd=self.manager.dir, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            if process.stdout.readline().strip() != "watching":
                raise RuntimeError(f"probe {args} did not start: {process.communicate(timeout=10)[1]}")

            def result() -> dict:
                out, err = process.communicate(timeout=wait + 60)
                if process.returncode != 0:
                    raise RuntimeError(f"probe {args} exited {process.returncode}: {err.strip()}")
                return json.loads(out.strip().splitlines()[-1])

            yield result
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()

    def stop(self) -> None:
        self.net.destroy()  # every process of every host, the database's postmaster with them
        if self.postgres is not None:
            shutil.rmtree(self.postgres.dir, ignore_errors=True)


@contextlib.contextmanager
def cluster(root: Path, model: Path, **options) -> Iterator[Cluster]:
    with lan(root / "hosts") as net:
        running = Cluster(net, model, **options)
        try:
            yield running.start()
        finally:
            running.stop()


# scenarios ----------------------------------------------------------------------------------------------------
def documents(n: int, offset: int = 0, chars: int = 2500) -> list[tuple[str, str]]:
    return pieces(n, chars, offset)


def ingest(c: Cluster, kb: str, docs: list[tuple[str, str]], wait: bool = True) -> None:
    folder = c.manager.dir / "in" / kb
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in docs:
        (folder / name).write_text(text)
    c.manage("ingest", kb, *[str(folder / name) for name, _ in docs], *(["--wait"] if wait else []))


def ask(c: Cluster, kb: str, questions: list[str]) -> list[str]:
    """Each question sent by the manager; the query ids ``ask`` printed."""
    return [c.manage("ask", kb, question).split()[0] for question in questions]


def across_hosts(c: Cluster) -> dict:
    started, kb = time.monotonic(), "hosts"
    c.manage("kb", "create", kb)
    ingest(c, kb, documents(2))
    ask(c, kb, QUESTIONS[:3])
    ledger = c.probe("settle", kb, wait=180)
    with ThreadPoolExecutor(4) as pool:  # what an operator runs on the manager host, side by side
        status = pool.submit(c.manage, "status")
        celery = [CELERY, "-A", "workers.app", "inspect"]
        inspect = {cmd: pool.submit(c.manager.run, *celery, cmd, "--timeout", "5", cwd=ROOT) for cmd in INSPECTED}
        flower = pool.submit(flower_workers, c)
        status, inspect, flower = status.result(), {k: v.result().stdout for k, v in inspect.items()}, flower.result()
    return {
        "seconds": round(time.monotonic() - started, 1),
        "formed_by": _succeeded(c, "memorag.ingest"),
        "answered_by": _succeeded(c, "memorag.answer"),
        "status_names": [w for w in WORKERS if f"worker {w} on " in status],
        "unshared_tiers_warned": "disk tiers that are not shared" in status,
        "inspect_names": {cmd: _replied(out) for cmd, out in inspect.items()},
        "flower_names": sorted(flower),
        "disk_tier_files": {name: _tier_files(c.hosts[name]) for name in ("memory", "query")},
    } | ledger


def _replied(inspected: str) -> list[str]:
    """The workers that answered a ``celery inspect`` command ("->  name: OK")."""
    return [w for w in WORKERS if re.search(rf"->\s+{re.escape(w)}: OK", inspected)]


def flower_workers(c: Cluster, port: int = 5555) -> list[str]:
    """Flower on the manager host, pointed at the broker: the workers its API lists."""
    c.manager.spawn("flower", CELERY, "-A", "workers.app", "flower", f"--port={port}", "--address=127.0.0.1",
                    env={"FLOWER_UNAUTHENTICATED_API": "true"}, cwd=ROOT)  # fmt: skip
    try:
        return c.probe("flower", str(port), wait=60)["workers"]
    finally:
        c.manager.kill("flower", timeout=10)


def partition(c: Cluster) -> dict:
    """Pull the query worker's cable while it answers; another query worker finishes; the late answer loses."""
    started, kb = time.monotonic(), "partition"
    c.manage("kb", "create", kb)
    ingest(c, kb, documents(1, offset=10))
    with c.watching("taken", kb, wait=120) as taken:  # polling before the question exists
        ask(c, kb, QUESTIONS[3:4])
        query = taken()["query"]  # taken by the only query worker: query@query
    c.net.cut(c.hosts["query"])
    cut_at = time.monotonic()
    c.start_worker("query2", "query")
    first = c.probe("answered", query, wait=180)
    answered_s = time.monotonic() - cut_at
    c.net.heal(c.hosts["query"])
    c.probe("idle", "query@query", wait=180)  # its late attempt has ended
    after = c.probe("answered", query, wait=10)
    ledger = c.probe("settle", kb, wait=60)
    c.hosts["query2"].kill("worker", timeout=60)
    return {
        "seconds": round(time.monotonic() - started, 1),
        "answered_after_cut_s": round(answered_s, 1),
        "answered_by": [name for name in ("query", "query2") if _answered(c.hosts[name], query)],
        "late_attempt_kept_out": _kept_out(c.hosts["query"], query),
        "duplicate_answers": ledger["duplicate_answers"] + (first["answer"] != after["answer"]),
    } | {k: v for k, v in ledger.items() if k != "duplicate_answers"}


def store_host_restart(c: Cluster, down_s: float = 2.0) -> dict:
    """kill -9 the store host's Redis while documents form and questions are answered; start it on its AOF.
    Questions asked during the outage are refused with one line (the person asks again later)."""
    started, kb = time.monotonic(), "restart"
    c.manage("kb", "create", kb)
    ingest(c, kb, documents(1, offset=20))
    with c.watching("busy", kb, wait=120) as watcher, ThreadPoolExecutor(8) as pool:
        pool.submit(ingest, c, kb, documents(2, offset=21, chars=25_000), False)  # both workers' backlogs at once
        asks = [pool.submit(c.manager.run, sys.executable, MANAGE, "ask", kb, q, check=False) for q in QUESTIONS[:5]]
        busy = watcher()
        c.store.kill("redis")
        time.sleep(down_s)
        c.start_redis()
        answered = [f.result() for f in asks]
    ledger = c.probe("settle", kb, wait=240)
    refused = [a for a in answered if a.returncode != 0]
    not_one_line = [(a.returncode, a.stderr) for a in refused if a.returncode != 2 or a.stderr.count("\n") != 1]
    return {
        "seconds": round(time.monotonic() - started, 1),
        "busy_when_killed": busy["running"],
        "asked": len(answered) - len(refused),
        "refused_while_down": len(refused),
        "refusals_one_line": not not_one_line,
        "refusals_not_one_line": not_one_line,
    } | ledger


def _succeeded(c: Cluster, task: str) -> dict[str, int]:
    """How many tasks of this name each host's worker finished, from its log."""
    done = re.compile(rf"Task {re.escape(task)}\[[^\]]+\] succeeded")
    return {name: len(done.findall(c.hosts[name].log("worker"))) for name in ("memory", "query", "query2")}


def _answered(host: Host, query: str) -> bool:
    """The host's worker wrote the query's answer (its task's return value, in its log)."""
    return f"'query': '{query}', 'status': 'done'" in host.log("worker")


def _kept_out(host: Host, query: str) -> bool:
    """The host's worker finished a late attempt and left the answer that was there."""
    return f"'query': '{query}', 'status': 'already answered'" in host.log("worker")


def _tier_files(host: Host) -> int:
    tier = host.home / "memories"
    return sum(1 for _ in tier.rglob("*.safetensors")) if tier.exists() else 0


SCENARIOS = {"across_hosts": across_hosts, "partition": partition, "store_host_restart": store_host_restart}
COLUMNS = ["scenario", "documents", "queries", "lost", "duplicate_answers", "failed", "seconds"]


# probes: run on the manager host, print one JSON line ----------------------------------------------------------
def _query(public_id: str):
    from service.ids import query_number
    from store import db

    with db.session() as s:
        query = s.get(db.Query, query_number(public_id))
        s.expunge(query)
        return query


def probe(name: str, args: list[str], timeout: float) -> dict:
    from chaos import ledger, rows, settle
    from sqlmodel import select

    from store import db
    from store.redis import connect
    from workers.liveness import live_workers

    def until(predicate, what: str):
        return wait_until(predicate, timeout, every=0.05, what=what)

    if name == "workers":  # these workers' heartbeats are in Redis
        live = lambda: {w["name"] for w in live_workers(connect())}  # noqa: E731
        return {"live": sorted(until(lambda: (names := live()) >= set(args) and names, f"workers {args}"))}
    if name == "settle":  # no row of the knowledge bases in flight; then the ledger
        settle(args, timeout)
        return ledger(args)
    if name == "taken":  # a question of the knowledge base is being answered: which
        rows(args)  # connected before saying so
        print("watching", flush=True)
        taken = lambda: next((q.public_id for q in rows(args)[1] if q.status == "processing"), None)  # noqa: E731
        return {"query": until(taken, "a question to be taken")}
    if name == "answered":

        def answer():
            query = _query(args[0])
            with db.session() as s:
                row = s.exec(select(db.Answer).where(db.Answer.query_id == query.id)).first()
            return query.status == "done" and row is not None and {"answer": [row.id, row.text, row.timings]}

        return until(answer, f"{args[0]} to be answered")
    if name == "idle":  # the worker is live and runs nothing
        idle = lambda: any(w["name"] == args[0] and not w["running"] for w in live_workers(connect()))  # noqa: E731
        until(idle, f"{args[0]} to be idle")
        return {"idle": args[0]}
    if name == "busy":  # a document of the knowledge base forms while one of its questions is answered
        rows(args)  # connected before saying so
        print("watching", flush=True)

        def busy():
            docs, queries, _ = rows(args)
            forming = [d.public_id for d in docs if d.status == "processing"]
            answering = [q.public_id for q in queries if q.status == "processing"]
            return forming and answering and {"running": forming + answering}

        return until(busy, "a document and a question in progress together")
    if name == "flower":
        import urllib.request

        url = f"http://127.0.0.1:{args[0]}/api/workers?refresh=1"
        return {"workers": sorted(until(lambda: json.load(urllib.request.urlopen(url, timeout=10)), "Flower"))}
    raise SystemExit(f"unknown probe {name}")


# the bench ----------------------------------------------------------------------------------------------------
def run(chosen: list[str], root: Path, model: Path) -> dict[str, dict]:
    results = {}
    with cluster(root, model) as c:
        for name in chosen:
            print(f"== {name}", flush=True)
            results[name] = SCENARIOS[name](c)
            print(f"{name}: {results[name]}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), help="run only these (repeatable)")
    parser.add_argument("--model", default="tiny", help="'tiny' (a random 2-layer llama), 'default', or a directory")
    parser.add_argument("--keep", type=Path, help="build the hosts here and keep their homes and logs afterwards")
    parser.add_argument("--probe", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.add_argument("--probe-timeout", type=float, default=60.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped: the hosts are still taken down
    if args.probe:
        try:
            print(json.dumps(probe(args.probe[0], args.probe[1:], args.probe_timeout)))
        except TimeoutError as exc:
            raise SystemExit(str(exc)) from None
        return
    chosen = args.only or list(SCENARIOS)
    with contextlib.ExitStack() as stack:
        root = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="memorag-hosts-")))
        if args.model == "tiny":
            model = tiny_llama(root / "tiny-llama")
        elif args.model == "default":
            from agent.models import default_model_dir

            model = default_model_dir()
        else:
            model = Path(args.model)
        results = run(chosen, root, model)
    print_table([{"scenario": k} | v for k, v in results.items()], COLUMNS, "across hosts (lost and duplicates: 0)")
    write_json(args.json, {"model": args.model, "scenarios": results})


if __name__ == "__main__":
    main()
