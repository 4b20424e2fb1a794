"""Which scorer's memory holds the document's facts: every scorer on the same haystacks.

A memory is written before any question exists, so the scorer that decides
what stays must be question-agnostic. Ten facts are planted in real essays
of each length; each memory is then asked every fact and the true answer is
ranked among ten candidates by the model's likelihood (``fact_acc``: share
ranked first; ``mrr``), which works where the 135M model's generation does
not. Beside it: the NLL of the essay's next tokens from the memory alone
(``nll_next``: does it still read as the document?) and formation time
against plain prefill of the same windows (no memory, nothing compressed)
and against snapkv's in the same run. At lengths inside the model's window,
full context (a beta-1 memory read exactly) is the reference; past it there
is none. ``--seeds 2`` moves the haystack and reverses the facts' depths, and
the spread between seeds is what a difference must beat.

    python ops/bench/scorers.py --tokens 3000,16000,64000 --betas 4,16,64 --json bench-out/scorers.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import common  # noqa: F401  (puts the project on sys.path)
import torch
from common import FACTS, essay_tokens, plant, print_table, write_json
from memory import plain_prefill_s

from agent.chat import chat_prompt
from agent.memory.decoding import continuation_logprob, score_continuations
from agent.memory.formation import form_memory, peak_positions
from agent.models import load_model
from core.settings import get_settings

SCORERS = ("snapkv", "surprisal", "expected", "reconstruct")
NEXT_TOKENS = 128  # held-out continuation scored from the memory
SEED_SHIFT = 7000  # tokens the haystack moves per seed


def haystack(lm, tokens: int, seed: int) -> tuple[list[int], list[int], list]:
    """(document with planted facts, the essay's next tokens, the facts in planting order)."""
    ids = essay_tokens(lm.tokenizer, tokens + NEXT_TOKENS + seed * SEED_SHIFT)[seed * SEED_SHIFT :]
    facts = FACTS if seed % 2 == 0 else FACTS[::-1]
    return plant(lm.tokenizer, ids[:tokens], facts), ids[tokens:], facts


def fact_ranks(lm, memory, facts) -> list[int]:
    """Rank (1 = best) of each true answer's mean token log-probability among its ten candidates."""
    ranks = []
    for fact in facts:
        prompt = chat_prompt(lm.tokenizer, fact.question)
        candidates = [lm.tokenizer(c, add_special_tokens=False)["input_ids"] for c in (fact.answer, *fact.distractors)]
        means = [sum(lps) / len(lps) for lps in score_continuations(lm, memory, prompt, candidates)]
        ranks.append(1 + sum(m > means[0] for m in means[1:]))
    return ranks


def next_nll(lm, memory, following: list[int]) -> float:
    """Mean NLL per token of the essay's continuation, read after the memory."""
    return -continuation_logprob(lm, memory, following[:1], following[1:]) / (len(following) - 1)


def measure(lm, memory, facts, following, reader=None) -> dict:
    reader = reader or lm
    ranks = fact_ranks(reader, memory, facts)
    return {
        "fact_acc": sum(r == 1 for r in ranks) / len(ranks),
        "mrr": statistics.mean(1 / r for r in ranks),
        "nll_next": next_nll(reader, memory, following),
    }


def run_length(lm, tokens: int, betas, scorers, seeds: int, window: int, int8_scorer: str | None) -> list[dict]:
    rows = []
    for seed in range(seeds):
        ids, following, facts = haystack(lm, tokens, seed)
        base = {"tokens": len(ids), "seed": seed}
        plain = plain_prefill_s(lm, ids, window)
        none = measure(lm, None, facts, following)
        rows.append({**base, "scorer": "none", "beta": None, **none})
        print(f"[{len(ids)} tokens, seed {seed}] plain prefill {plain:.1f} s; no memory {none}", flush=True)
        if peak_positions(len(ids), window, 1) <= lm.max_positions:
            full = form_memory(lm, ids, beta=1, window=window)
            exact = replace(lm, read_span=0)  # full context at the positions it was read at
            rows.append({**base, "scorer": "full", "beta": 1, **measure(lm, full, facts, following, exact)})
            print(f"  full context {rows[-1]}", flush=True)
        for beta in betas:
            if peak_positions(len(ids), window, beta) > lm.max_positions:
                print(f"  beta {beta}: skipped (exceeds the model's positions)", flush=True)
                continue
            snap_s = None
            for scorer in scorers:
                started = time.perf_counter()
                memory = form_memory(lm, ids, beta=beta, window=window, scorer=scorer)
                form_s = time.perf_counter() - started
                snap_s = form_s if scorer == "snapkv" else snap_s
                row = {**base, "scorer": scorer, "beta": beta, "form_s": form_s, "vs_plain": form_s / plain}
                row["vs_snapkv"] = form_s / snap_s if snap_s else None
                row.update(measure(lm, memory, facts, following))
                rows.append(row)
                print(f"  {scorer} beta {beta}: {row}", flush=True)
                if scorer == int8_scorer and beta == 16 and seed == 0:
                    quantized = form_memory(lm, ids, beta=beta, window=window, scorer=scorer, storage_dtype="int8")
                    rows.append(
                        {**base, "scorer": f"{scorer}-int8", "beta": beta, **measure(lm, quantized, facts, following)}
                    )
                    print(f"  {scorer} int8: {rows[-1]}", flush=True)
    return rows


def summary(rows: list[dict]) -> list[dict]:
    """Seeds averaged per (tokens, scorer, beta); spread = max - min over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["tokens"] // 1000, r["scorer"], r["beta"]), []).append(r)
    out = []
    for (k_tokens, scorer, beta), rs in groups.items():
        accs = [r["fact_acc"] for r in rs]
        row = {
            "k_tokens": k_tokens,
            "scorer": scorer,
            "beta": beta,
            "seeds": len(rs),
            "fact_acc": statistics.mean(accs),
        }
        row["spread"] = max(accs) - min(accs)
        for key in ("mrr", "nll_next", "vs_plain", "vs_snapkv"):
            values = [r[key] for r in rs if r.get(key) is not None]
            row[key] = statistics.mean(values) if values else None
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", default="3000,16000,64000", help="haystack lengths in tokens")
    parser.add_argument("--betas", default="4,16,64")
    parser.add_argument("--scorers", default=",".join(SCORERS))
    parser.add_argument("--seeds", type=int, default=2, help="haystacks per length (positions and text moved)")
    parser.add_argument("--seeds-over", type=int, default=20000, help="longer haystacks get one seed (time)")
    parser.add_argument(
        "--int8", default=None, help="the scorer also measured with int8 storage at beta 16 (default: MEMORAG_SCORER)"
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    settings = get_settings()
    torch.manual_seed(0)
    lm = load_model(settings=settings)
    betas = [int(b) for b in args.betas.split(",")]
    scorers = args.scorers.split(",")
    print(f"model {lm.name}, window {settings.window}, read span {lm.read_span}, scorers {scorers}", flush=True)
    rows: list[dict] = []
    for tokens in (int(t) for t in args.tokens.split(",")):
        seeds = args.seeds if tokens <= args.seeds_over else 1
        rows += run_length(lm, tokens, betas, scorers, seeds, settings.window, args.int8 or settings.scorer)
        payload = {"model": lm.name, "window": settings.window, "rows": rows, "summary": summary(rows)}
        write_json(args.json, {**payload, "date": time.strftime("%Y-%m-%d")})  # after every length: a long run keeps
    columns = ["k_tokens", "scorer", "beta", "seeds", "fact_acc", "spread", "mrr", "nll_next", "vs_plain", "vs_snapkv"]
    print_table(summary(rows), columns, "facts ranked first among ten candidates, by scorer (seeds averaged)")


if __name__ == "__main__":
    main()
