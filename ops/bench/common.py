"""Shared pieces of the benchmarks: real haystacks, planted facts, tables, JSON."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"


@dataclass(frozen=True)
class Fact:
    statement: str
    question: str
    answer: str
    distractors: tuple[str, ...]


FACTS = [
    Fact("The access code for the north archive is 4721.", "What is the access code for the north archive?",
         "4721", ("3816", "9054", "2267", "6139", "7408", "1592", "8375", "5643", "3920")),
    Fact("The ferry to Lindholm leaves at 7:45 every morning.", "When does the ferry to Lindholm leave?",
         "7:45", ("6:15", "8:30", "9:10", "5:50", "10:20", "11:05", "6:40", "8:55", "7:05")),
    Fact("Marta's favourite instrument is the bassoon.", "What is Marta's favourite instrument?",
         "the bassoon", ("the violin", "the harp", "the trumpet", "the cello", "the oboe", "the drums",
                         "the flute", "the piano", "the clarinet")),
    Fact("The blue warehouse stores exactly 380 bicycles.", "How many bicycles does the blue warehouse store?",
         "380", ("120", "945", "610", "275", "830", "455", "190", "720", "560")),
    Fact("The village of Ostrava Minor was founded in 1742.", "When was the village of Ostrava Minor founded?",
         "1742", ("1815", "1690", "1903", "1777", "1654", "1866", "1721", "1598", "1930")),
    Fact("The password for the greenhouse terminal is heron.", "What is the password for the greenhouse terminal?",
         "heron", ("falcon", "otter", "maple", "comet", "willow", "badger", "quartz", "ember", "lynx")),
    Fact("Doctor Ilse Varga keeps her spare key under the red flowerpot.",
         "Where does Doctor Ilse Varga keep her spare key?",
         "under the red flowerpot", ("in the mailbox", "above the door", "in her coat", "under the doormat",
                                     "in the garage", "behind the clock", "in a drawer", "under the bench",
                                     "in the shed")),
    Fact("The night train from Ravel to Somme costs 64 euros.",
         "How much does the night train from Ravel to Somme cost?",
         "64 euros", ("12 euros", "99 euros", "37 euros", "150 euros", "48 euros", "75 euros", "23 euros",
                      "81 euros", "56 euros")),
    Fact("The lighthouse on Cape Morrow is painted green.", "What colour is the lighthouse on Cape Morrow?",
         "green", ("red", "white", "yellow", "blue", "black", "orange", "purple", "grey", "brown")),
    Fact("The chess club meets every Thursday in room 18.", "In which room does the chess club meet?",
         "room 18", ("room 4", "room 31", "room 9", "room 42", "room 7", "room 26", "room 12", "room 55", "room 3")),
]  # fmt: skip


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
