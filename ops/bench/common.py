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
