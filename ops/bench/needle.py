"""Needle in a haystack: can the memory answer planted facts?

Ten facts are planted at spread depths in Paul Graham essays of each size;
each is asked from memory (the ``draft_answer`` program) at every beta, and
with the full document in the model's window where it fits (the baseline,
same run; a beta=1 memory is exactly full context). Memories longer than
the model's read span are read spread over it (``agent/memory/reading.py``);
the full-context baseline is read as plain text, and again spread
(``full-spread``) where that differs.

    python ops/bench/needle.py --tokens 4000,6000,32000 --betas 4,8,16 --json out.json
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import common  # noqa: F401  (puts the project on sys.path)
from common import FACTS, essay_tokens, plant, print_table, write_json

from agent import programs
from agent.backends import LocalBackend
from agent.chat import chat_prompt
from agent.memory.decoding import SamplingParams, generate, token_logprobs
from agent.memory.formation import form_memory, peak_positions
from agent.models import load_model, memory_storage
from core.settings import get_settings


def answer_rank(lm, memory, prompt: list[int], fact, lead: str = "") -> int:
    """Rank (1 = best) of the true answer's mean token log-probability among the candidates."""
    scores = []
    for candidate in (fact.answer, *fact.distractors):
        ids = lm.tokenizer(f"{lead} {candidate}" if lead else candidate, add_special_tokens=False)["input_ids"]
        ids = ids[len(lm.tokenizer(lead, add_special_tokens=False)["input_ids"]) :] if lead else ids
        lps = token_logprobs(lm, memory, prompt, ids)
        scores.append(sum(lps) / len(lps))
    return 1 + sum(s > scores[0] for s in scores[1:])


def evaluate(lm, memory, facts, max_tokens: int) -> dict:
    """Ask each fact two ways: the ``draft_answer`` program as users ask it, and cloze.

    Cloze starts the reply with the fact's own lead-in ("The access code for
    the north archive is") and scores/decodes only the answer, so it measures
    what the memory holds rather than how the small model phrases a reply.
    """
    backend = LocalBackend(lm, memory)
    hits, cloze_hits, ranks, cloze_ranks = 0, 0, [], []
    for fact in facts:
        out = programs.draft_answer.run(question=fact.question, max_tokens=max_tokens, backend=backend)
        if out.error():
            raise out.error()
        hits += fact.answer.lower() in out["answer"].lower()
        prompt = chat_prompt(lm.tokenizer, programs.PROMPTS["draft_answer"].format(question=fact.question))
        ranks.append(answer_rank(lm, memory, prompt, fact))
        lead = fact.statement[: fact.statement.index(fact.answer)]
        cloze = prompt + lm.tokenizer(lead.rstrip(), add_special_tokens=False)["input_ids"]
        cloze_ranks.append(answer_rank(lm, memory, cloze, fact, lead=lead.rstrip()))
        said = generate(lm, memory, cloze, SamplingParams(max_new_tokens=8, stop=(".", "\n")))
        cloze_hits += fact.answer.lower() in said.lower()
    return {
        "accuracy": hits / len(facts),
        "answer_logprob_rank": sum(ranks) / len(ranks),
        "cloze_accuracy": cloze_hits / len(facts),
        "cloze_rank": sum(cloze_ranks) / len(cloze_ranks),
    }


def main() -> None:
    # Long on purpose: one experiment read top to bottom (arguments, measurements, the table printed).
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", default="4000,6000,32000")
    parser.add_argument("--betas", default="4,8,16")
    parser.add_argument("--facts", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=40, help="new tokens for each answer")
    parser.add_argument("--window", type=int, default=None)
    parser.add_argument("--skip-full", action="store_true", help="no full-context baseline (compare scorers)")
    parser.add_argument("--scorer", default=None, help="memory scorer (default: MEMORAG_SCORER)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    settings = get_settings()
    window = args.window or settings.window
    scorer = args.scorer or settings.scorer
    lm = load_model(settings=settings)
    storage = memory_storage(settings.memory_dtype, lm.device)
    facts = FACTS[: args.facts]
    print(
        f"model {lm.name} ({lm.dtype}), window {window}, scorer {scorer}, read span {lm.read_span}, {len(facts)} facts"
    )
    runs = []
    for n in [int(x) for x in args.tokens.split(",") if x]:
        ids = plant(lm.tokenizer, essay_tokens(lm.tokenizer, n), facts)
        fits = len(ids) + 200 <= lm.max_positions and not args.skip_full
        full = [("full", 1, 0)] + ([("full-spread", 1, lm.read_span)] if 0 < lm.read_span < len(ids) else [])
        configs = (full if fits else []) + [("memory", int(b), lm.read_span) for b in args.betas.split(",") if b]
        for mode, beta, span in configs:
            if peak_positions(len(ids), window, beta) > lm.max_positions:
                runs.append({"tokens": n, "beta": beta, "mode": mode, "skipped": "exceeds the model's positions"})
                continue
            started = time.perf_counter()
            memory = form_memory(lm, ids, beta=beta, window=window, scorer=scorer, storage_dtype=storage)
            result = evaluate(replace(lm, read_span=span), memory, facts, args.max_tokens)
            seconds = time.perf_counter() - started
            runs.append(
                {"tokens": n, "beta": beta, "mode": mode, "memory_tokens": len(memory), **result, "seconds": seconds}
            )
            print(f"[{n} tokens] {mode} beta {beta}: {result}", flush=True)
    for n in {r["tokens"] for r in runs}:
        full = next((r for r in runs if r["tokens"] == n and r["mode"] == "full"), None)
        for r in runs:
            if r["tokens"] == n and full and "accuracy" in r and full["accuracy"]:
                r["accuracy_vs_full"] = r["accuracy"] / full["accuracy"]
    print_table(
        runs,
        [
            "tokens",
            "mode",
            "beta",
            "accuracy",
            "accuracy_vs_full",
            "answer_logprob_rank",
            "cloze_accuracy",
            "cloze_rank",
            "seconds",
        ],
    )
    write_json(
        args.json,
        {
            "model": lm.name,
            "dtype": str(lm.dtype),
            "window": window,
            "scorer": scorer,
            "read_span": lm.read_span,
            "facts": len(facts),
            "date": time.strftime("%Y-%m-%d"),
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
