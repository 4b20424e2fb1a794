"""Global memory benchmark: formation cost, size, re-hydration, fidelity.

Every ratio compares against a baseline measured in the same run:
formation against plain prefill of the same windows (no memory carried,
nothing compressed), re-hydration against formation, memory fidelity
against full context and no context.

    python ops/bench/memory.py --tokens 8000,32000 --betas 4,8,16,32,64 --json out.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import common  # noqa: F401  (puts the project on sys.path)
import torch
from common import FACTS, BenchRedis, essay_tokens, plant, print_table, write_json

from agent.chat import chat_prompt
from agent.memory.decoding import continuation_logprob
from agent.memory.formation import form_memory, peak_positions, required_beta
from agent.memory.types import GlobalMemory
from agent.models import load_model, memory_storage
from agent.pipeline import save_memory
from core.settings import get_settings
from store.memories import MemoryStore


@torch.inference_mode()
def plain_prefill_s(lm, ids: list[int], window: int) -> float:
    """Read the same windows independently: no memory, no compression (the floor)."""
    started = time.perf_counter()
    for s in range(0, len(ids), window):
        chunk = torch.tensor([ids[s : s + window]], device=lm.device)
        lm.model.base_model(input_ids=chunk, use_cache=True)
    return time.perf_counter() - started


def rehydrate_times(store, lm, kb: str, doc: str, repeats: int = 5) -> tuple[float, float]:
    """Medians of (Redis fetch + verify, fetch -> cache ready to decode); a single cold read is noise."""
    fetches, totals = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        data, _ = store.get(kb, doc, fingerprint=lm.fingerprint)
        fetches.append(time.perf_counter() - started)
        GlobalMemory.from_bytes(data).to_cache(lm.device, lm.dtype)
        totals.append(time.perf_counter() - started)
    return statistics.median(fetches), statistics.median(totals)


def full_kv_bytes_per_token(lm, storage: torch.dtype | str) -> int:
    cfg = lm.model.config
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return 2 * cfg.num_hidden_layers * kv_heads * head_dim * (1 if storage == "int8" else storage.itemsize)


def cost_rows(lm, store, sizes, betas, window, scorer, storage) -> list[dict]:
    rows = []
    full_bpt = full_kv_bytes_per_token(lm, storage)
    for n in sizes:
        ids = essay_tokens(lm.tokenizer, n)
        plain = plain_prefill_s(lm, ids, window)
        print(f"[{n} tokens] plain prefill {plain:.1f} s", flush=True)
        for beta in betas:
            if peak_positions(n, window, beta) > lm.max_positions:
                print(f"  beta {beta}: skipped, {n} tokens need beta >= {required_beta(n, window, lm.max_positions)}")
                rows.append({"tokens": n, "beta": beta, "skipped": "exceeds the model's positions"})
                continue
            started = time.perf_counter()
            memory = form_memory(lm, ids, beta=beta, window=window, scorer=scorer, storage_dtype=storage)
            form_s = time.perf_counter() - started
            manifest = save_memory(store, "bench", f"{n}-{beta}", memory)
            fetch_s, rehydrate_s = rehydrate_times(store, lm, "bench", f"{n}-{beta}")
            store.delete("bench", f"{n}-{beta}")
            row = {
                "tokens": n,
                "beta": beta,
                "form_s": form_s,
                "plain_prefill_s": plain,
                "formation_overhead": form_s / plain,
                "memory_tokens": len(memory),
                "bytes_per_token": manifest.size / n,
                "full_kv_bytes_per_token": full_bpt,
                "size_vs_ideal": manifest.size / n / (full_bpt / beta),
                "rehydrate_s": rehydrate_s,
                "rehydrate_speedup": form_s / rehydrate_s,
                "redis_mib_s": manifest.size / 2**20 / fetch_s,
            }
            rows.append(row)
            print(f"  beta {beta}: form {form_s:.1f} s, rehydrate {rehydrate_s * 1000:.0f} ms", flush=True)
    return rows


def fidelity(lm, tokens: int, betas, window, scorer, storage, n_facts: int) -> dict:
    """Mean answer NLL given memory + question, against full context and none."""
    facts = FACTS[:n_facts]
    ids = plant(lm.tokenizer, essay_tokens(lm.tokenizer, tokens), facts)
    prompts = [chat_prompt(lm.tokenizer, f.question) for f in facts]
    answers = [lm.tokenizer(" " + f.answer, add_special_tokens=False)["input_ids"] for f in facts]

    def mean_nll(memory, reader=lm) -> float:
        pairs = zip(prompts, answers, strict=True)
        return -sum(continuation_logprob(reader, memory, p, a) for p, a in pairs) / len(facts)

    nll_none = mean_nll(None)
    full = form_memory(lm, ids, beta=1, window=window, storage_dtype=storage)
    nll_full = mean_nll(full, replace(lm, read_span=0))  # exact full context, positions as in the text
    out = {
        "tokens": len(ids),
        "facts": len(facts),
        "nll_none": nll_none,
        "nll_full": nll_full,
        "nll_full_spread": mean_nll(full),
        "read_span": lm.read_span,
        "betas": {},
    }
    for beta in betas:
        memory = form_memory(lm, ids, beta=beta, window=window, scorer=scorer, storage_dtype=storage)
        nll = mean_nll(memory)
        gap = nll_none - nll_full
        out["betas"][str(beta)] = {"nll": nll, "recovered": (nll_none - nll) / gap if gap else None}
        print(f"  fidelity beta {beta}: nll {nll:.2f}", flush=True)
    return out


def main() -> None:
    # Long on purpose: one experiment read top to bottom (arguments, measurements, the table printed).
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", default="8000,32000", help="document sizes in tokens")
    parser.add_argument("--betas", default="4,8,16,32,64", help="compression ratios")
    parser.add_argument("--window", type=int, default=None)
    parser.add_argument("--scorer", default=None)
    parser.add_argument("--fidelity-tokens", type=int, default=6000, help="haystack size for fidelity (fits 8k)")
    parser.add_argument("--facts", type=int, default=5, help="planted facts for fidelity (0 skips it)")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    settings = get_settings()
    window, scorer = args.window or settings.window, args.scorer or settings.scorer
    sizes = [int(x) for x in args.tokens.split(",") if x]
    betas = [int(x) for x in args.betas.split(",") if x]

    lm = load_model(settings=settings)
    storage = memory_storage(settings.memory_dtype, lm.device)
    print(f"model {lm.name} on {lm.device} ({lm.dtype}), memory dtype {storage}, window {window}, scorer {scorer}")
    server = BenchRedis(settings)
    store = MemoryStore(server.client)
    try:
        rows = cost_rows(lm, store, sizes, betas, window, scorer, storage)
        print_table(
            rows,
            [
                "tokens",
                "beta",
                "form_s",
                "plain_prefill_s",
                "formation_overhead",
                "memory_tokens",
                "bytes_per_token",
                "full_kv_bytes_per_token",
                "size_vs_ideal",
                "rehydrate_s",
                "rehydrate_speedup",
                "redis_mib_s",
            ],
            "cost",
        )
        fid = fidelity(lm, args.fidelity_tokens, betas, window, scorer, storage, args.facts) if args.facts else None
        if fid:
            print_table(
                [{"beta": b, **v} for b, v in fid["betas"].items()],
                ["beta", "nll", "recovered"],
                f"fidelity ({fid['tokens']} tokens, {fid['facts']} facts): nll none {fid['nll_none']:.2f}, "
                f"full {fid['nll_full']:.2f} (spread over {fid['read_span']}: {fid['nll_full_spread']:.2f})",
            )
    finally:
        server.stop()
    write_json(
        args.json,
        {
            "model": lm.name,
            "device": str(lm.device),
            "dtype": str(lm.dtype),
            "memory_dtype": str(storage),
            "window": window,
            "scorer": scorer,
            "runs": rows,
            "fidelity": fid,
            "date": time.strftime("%Y-%m-%d"),
        },
    )


if __name__ == "__main__":
    main()
