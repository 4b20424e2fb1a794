"""Dated conversations: does retrieval find what a user said on a day, and the day they said it?

A long chat history in LongMemEval's format (sessions of user/assistant turns,
each session dated only in its header), built here: 36 sessions through 2023
whose filler is the needle essays, and 24 events of the user's life written for
this bench, each told once in one session. Events come in look-alike pairs
(two adoptions, two races, two concerts), so a question about a day is
answered only by the date. Two questions per event:

- ``when``: "When did I adopt the beagle puppy?" (the event's words, the date is the answer);
- ``on_date``: "What happened on May 20, 2023?" (the date in words a user types; the event is the answer),

the date written three ways in turn (``May 20, 2023``, ``20 May 2023``, ``2023-05-20``) while the
header says ``2023/05/20 (Sat) 10:00``. Hit@5: the event's turn among the five chunks retrieved with
the question alone, for chunks bare or with their context (the session date line) and dense or
hybrid search, all in one run::

    python ops/bench/dated_chats.py --json bench-out/dated-chats.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import re
from dataclasses import replace
from pathlib import Path

import common  # noqa: F401  (puts the project on sys.path)
import numpy as np
from common import DATA, BenchRedis, print_table, write_json

from agent.datasets import load_longmemeval
from agent.metrics import gold_chunk_ids, hit_at_k
from agent.models import load_model
from agent.retrieval import DEFAULT_CHUNK_TOKENS, DEFAULT_OVERLAP_TOKENS, chunk_document, get_embedder, retrieve
from core.settings import get_settings
from store.vectors import EmbeddedIndex

# (what the user says, the question that asks when): look-alike pairs next to each other.
EVENTS = [
    ("I adopted a beagle puppy today, we named him Biscuit.", "When did I adopt the beagle puppy?"),
    ("I adopted a grey tabby cat from the shelter today, we call her Miso.", "When did I adopt the tabby cat?"),
    ("I ran the Riverside half marathon this morning in 1 hour 52 minutes.", "When did I run the half marathon?"),
    ("I finished my first full marathon today, the Lakeshore Marathon.", "When did I finish my first marathon?"),
    ("I flew to Lisbon for a work conference today.", "When did I fly to Lisbon?"),
    ("I got back from a week of hiking in the Dolomites today.", "When did I get back from the Dolomites?"),
    ("I started a new job as a data engineer at Harbor Logistics today.", "When did I start at Harbor Logistics?"),
    ("I handed in my notice at the bookshop where I worked for six years.", "When did I quit the bookshop job?"),
    ("I bought a used Subaru Outback today.", "When did I buy the Subaru?"),
    ("I sold my old Honda Civic to a neighbour today.", "When did I sell the Honda Civic?"),
    ("I saw Arcade Fire live at the Forum tonight.", "When did I see Arcade Fire live?"),
    ("I went to a jazz concert by the Brad Mehldau Trio tonight.", "When did I go to the jazz concert?"),
    ("I planted tomatoes and basil in the back garden today.", "When did I plant the tomatoes?"),
    ("I harvested the first zucchini from my garden today.", "When did I harvest the first zucchini?"),
    ("I passed my driving test on the second try today.", "When did I pass my driving test?"),
    ("I sat the Spanish B2 exam this morning and I think it went well.", "When did I take the Spanish exam?"),
    ("I moved into a new apartment on Elm Street today.", "When did I move into the Elm Street apartment?"),
    ("I painted the living room of the new apartment pale green today.", "When did I paint the living room?"),
    ("My sister Clara got married in Porto today.", "When did my sister Clara get married?"),
    ("My grandmother turned ninety today and we threw her a party.", "When did my grandmother turn ninety?"),
    ("I had my wisdom teeth removed this morning.", "When did I have my wisdom teeth removed?"),
    ("I broke my wrist falling off my bike today.", "When did I break my wrist?"),
    ("I baked my first loaf of sourdough bread today.", "When did I bake my first sourdough loaf?"),
    ("My sourdough won second place at the county fair baking contest today.", "When did my sourdough win a prize?"),
]
SESSIONS = 36
EXCHANGES = 3  # user/assistant pairs per session
DATE_STYLES = ("{d:%B} {d.day}, {d:%Y}", "{d.day} {d:%B %Y}", "{d:%Y-%m-%d}")


def filler_paragraphs(data: Path, sentences_each: int = 5) -> list[str]:
    """The essays in runs of a few sentences (the files lost their paragraph breaks: "accelerating.We")."""
    files = sorted((data / "needle" / "essays").glob("*.txt"))
    if not files:
        raise SystemExit(f"no essays under {data / 'needle' / 'essays'}")
    text = " ".join(" ".join(f.read_text().split()) for f in files)
    sentences = [s for s in re.split(r"(?<=[a-z][.!?])\s*(?=[A-Z])", text) if len(s.split()) >= 4]
    return [" ".join(sentences[i : i + sentences_each]) for i in range(0, len(sentences), sentences_each)]


def build(data: Path, seed: int = 7) -> list[dict]:
    """LongMemEval-format items (one shared haystack): a ``when`` and an ``on_date`` question per event."""
    rng = random.Random(seed)
    paragraphs = filler_paragraphs(data)
    rng.shuffle(paragraphs)
    dates = [dt.datetime(2023, 1, 6, 10) + dt.timedelta(days=9 * i + rng.randrange(3)) for i in range(SESSIONS)]
    event_session = dict(zip(rng.sample(range(SESSIONS), len(EVENTS)), range(len(EVENTS)), strict=True))
    sessions, told = [], {}
    for s in range(SESSIONS):
        turns = []
        for e in range(EXCHANGES):
            ask = paragraphs.pop().split(". ")[0].rstrip(".")
            user = f"What do you make of this: {ask}?"
            has_answer = s in event_session and e == 1
            if has_answer:
                user = f"{EVENTS[event_session[s]][0]} Anyway, {user[0].lower()}{user[1:]}"
                told[event_session[s]] = s
            turns.append({"role": "user", "content": user, "has_answer": has_answer})
            turns.append({"role": "assistant", "content": paragraphs.pop(), "has_answer": False})
        sessions.append(turns)
    ids = [f"s{s}" for s in range(SESSIONS)]
    header_dates = [f"{d:%Y/%m/%d} ({d:%a}) {d:%H:%M}" for d in dates]
    items = []
    for n, (statement, when) in enumerate(EVENTS):
        day = dates[told[n]].date()
        on_date = f"What happened on {DATE_STYLES[n % len(DATE_STYLES)].format(d=day)}?"
        asked = (("when", when, f"{day:%B} {day.day}, {day:%Y}"), ("on_date", on_date, statement))
        for kind, question, answer in asked:
            items.append({
                "question_id": f"{kind}-{n}", "question_type": kind, "question": question, "answer": answer,
                "haystack_session_ids": ids, "haystack_dates": header_dates, "haystack_sessions": sessions,
                "answer_session_ids": [ids[told[n]]],
            })  # fmt: skip
    return items


VARIANTS = {"dense_bare": (False, False), "dense_context": (True, False), "hybrid_bare": (False, True)}
VARIANTS["hybrid_context"] = (True, True)


def measure(path: Path, k: int, chunk_tokens: int, overlap: int) -> tuple[dict, list[dict]]:
    settings = get_settings()
    lm, embedder = load_model(settings=settings), get_embedder()
    kinds = {item["question"]: item["question_type"] for item in json.loads(path.read_text())}
    rows: dict[str, dict[str, list[float]]] = {v: {"when": [], "on_date": []} for v in VARIANTS}
    answers = []
    server = BenchRedis(settings)
    try:
        index = EmbeddedIndex(server.client)
        for sample in load_longmemeval(path):
            with_context = chunk_document(sample.doc_id, sample.text, lm.tokenizer, chunk_tokens, overlap, name="chat")
            bare = [replace(c, context="") for c in with_context]
            for label, chunks in (("bare", bare), ("context", with_context)):
                index.drop(f"chat-{label}")
                index.upsert(f"chat-{label}", chunks, embedder.encode([c.searchable for c in chunks]))
            for q in sample.questions:
                gold = gold_chunk_ids(bare, q.evidence)
                for name, (context, hybrid) in VARIANTS.items():
                    kb = f"chat-{'context' if context else 'bare'}"
                    got = retrieve(index, embedder, kb, q.text, k=k, hybrid=hybrid)
                    hit = hit_at_k(gold, [e.chunk.id for e in got], k)
                    rows[name][kinds[q.text]].append(hit)
                    if name == "hybrid_context":
                        top = got[0].chunk if got else None
                        answers.append({"question": q.text, "hit": hit, "top_context": top.context if top else ""})
            for label in ("bare", "context"):
                index.drop(f"chat-{label}")
    finally:
        server.stop()
    table = {
        name: {
            f"when_hit@{k}": float(np.mean(r["when"])),
            f"on_date_hit@{k}": float(np.mean(r["on_date"])),
            f"hit@{k}": float(np.mean(r["when"] + r["on_date"])),
            "n": len(r["when"]) + len(r["on_date"]),
        }
        for name, r in rows.items()
    }
    base = table["dense_bare"][f"hit@{k}"]
    for row in table.values():
        row["vs_dense_bare"] = row[f"hit@{k}"] - base
    return table, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder (its needle essays)")
    parser.add_argument("--chats", type=Path, default=Path("bench-out/dated-chats-data.json"))
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--chunk-tokens", type=int, default=DEFAULT_CHUNK_TOKENS)
    parser.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP_TOKENS)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    args.chats.parent.mkdir(parents=True, exist_ok=True)
    args.chats.write_text(json.dumps(build(args.data)))
    table, answers = measure(args.chats, args.k, args.chunk_tokens, args.overlap)
    k = args.k
    print_table(
        [{"variant": v, **row} for v, row in table.items()],
        ["variant", f"when_hit@{k}", f"on_date_hit@{k}", f"hit@{k}", "vs_dense_bare", "n"],
        f"dated conversations: {SESSIONS} sessions, {len(EVENTS)} events, question only",
    )
    write_json(args.json, {"variants": table, "sessions": SESSIONS, "events": len(EVENTS), "questions": answers})


if __name__ == "__main__":
    main()
