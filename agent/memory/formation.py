"""Form a global memory: read the document in windows, keep 1/beta of each.

Each window runs on top of the memory so far, so it sees a compressed view
of everything before it (progressive compression, as beacons do). After the
window, every layer keeps its ``ceil(w / beta)`` most important KV pairs per
head, re-rotated to the positions right after the memory, so the memory is
always contiguous from 0 and a book fits a small model's position range.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from agent.memory.capture import capture_queries
from agent.memory.prefix_attention import reading_over_memory
from agent.memory.rope import key_rotation
from agent.memory.scorers import Scorer, get_scorer
from agent.memory.types import GlobalMemory, MemoryMeta
from agent.models import LoadedModel

MIN_BETA, MAX_BETA = 1, 64

ProgressFn = Callable[[int, int], None]


def memory_length(doc_tokens: int, window: int, beta: int) -> int:
    """Memory tokens a document forms: ceil(width / beta) from every window."""
    return sum(math.ceil(min(window, doc_tokens - s) / beta) for s in range(0, doc_tokens, window))


def peak_positions(doc_tokens: int, window: int, beta: int) -> int:
    """Largest position count in use: the memory before the last window plus that window."""
    last = (doc_tokens - 1) // window * window
    return memory_length(last, window, beta) + (doc_tokens - last)


def required_beta(doc_tokens: int, window: int, max_positions: int) -> int:
    """Smallest beta whose formation stays inside the model's positions."""
    for beta in range(MIN_BETA, MAX_BETA + 1):
        if peak_positions(doc_tokens, window, beta) <= max_positions:
            return beta
    raise ValueError(
        f"{doc_tokens} tokens do not fit {max_positions} positions even at beta={MAX_BETA} "
        f"with window {window}; use a smaller window or a model with more positions"
    )


def tokenize_document(lm: LoadedModel, text: str) -> list[int]:
    return lm.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]


@torch.inference_mode()
def form_memory(
    lm: LoadedModel,
    token_ids: list[int],
    *,
    beta: int = 16,
    window: int = 1024,
    scorer: str | Scorer = "snapkv",
    storage_dtype: torch.dtype | str = torch.bfloat16,
    on_progress: ProgressFn | None = None,
) -> GlobalMemory:
    """Compress ``token_ids`` into a memory; its K/V are kept in ``storage_dtype`` (a torch dtype or "int8")."""
    _check_fits(lm, len(token_ids), window, beta)
    importance = get_scorer(scorer) if isinstance(scorer, str) else scorer
    model, device = lm.model, lm.device
    rotation = key_rotation(model)
    cache = _empty_cache()
    kept: list[list[torch.Tensor]] = [[] for _ in range(model.config.num_hidden_layers)]
    memory_len, total = 0, len(token_ids)
    ids = torch.tensor(token_ids, dtype=torch.long, device=device)
    surprisal, last_hidden = None, None
    repeat_ask = tokenize_document(lm, importance.prompt) if importance.repeats_window else []

    for start in range(0, total, window):
        chunk = ids[start : start + window]
        width = chunk.numel()
        positions = torch.arange(memory_len, memory_len + width, device=device)
        with capture_queries(importance.observers(width)) as queries, reading_over_memory(memory_len):
            out = model.base_model(input_ids=chunk[None], position_ids=positions[None], cache=cache, use_cache=True)
        if beta > 1 and importance.needs_surprisal:  # beta 1 keeps every token: nothing to score
            hidden = out.last_hidden_state[0]
            surprisal = token_surprisal(model, hidden, chunk, last_hidden)
            last_hidden = hidden[-1:]
        if beta > 1 and importance.repeats_window:
            queries = repeat_queries(lm, cache, chunk, memory_len + width, repeat_ask)
        budget = width if beta == 1 else math.ceil(width / beta)
        for i, layer in enumerate(cache.layers):
            if beta == 1:  # everything stays where it is
                top = torch.arange(width, device=device).expand(layer.keys.shape[1], -1)
            else:
                top = importance.compress(
                    layer,
                    memory_len,
                    budget,
                    queries=queries.get(i),
                    surprisal=surprisal,
                    first_window=start == 0,
                    rerotate=lambda keys, delta, i=i: rotation.rerotate(keys, delta, i),
                )
            kept[i].append(top + start)
        memory_len += budget
        if on_progress:
            on_progress(min(start + width, total), total)
    return _memory(lm, cache, kept, importance.name, beta, window, total, storage_dtype)


def repeat_queries(
    lm: LoadedModel, cache, chunk: torch.Tensor, length: int, request: list[int]
) -> dict[int, torch.Tensor]:
    """Every layer's queries while the model, after the window, is asked (``request``, token ids) to repeat it;
    the cache is left as it was."""
    ask = torch.tensor(request, dtype=torch.long, device=chunk.device)
    feed = torch.cat([ask, chunk])
    positions = torch.arange(length, length + feed.numel(), device=chunk.device)
    with capture_queries(torch.arange(ask.numel(), feed.numel())) as queries, reading_over_memory(length):
        lm.model.base_model(input_ids=feed[None], position_ids=positions[None], cache=cache, use_cache=True)
    for layer in cache.layers:  # the repeat was a probe, not part of the document
        layer.keys, layer.values = layer.keys[:, :, :length], layer.values[:, :, :length]
    return queries


def _check_fits(lm: LoadedModel, tokens: int, window: int, beta: int) -> None:
    if not MIN_BETA <= beta <= MAX_BETA:
        raise ValueError(f"beta must be between {MIN_BETA} and {MAX_BETA}, got {beta}")
    if not tokens:
        raise ValueError("cannot form a memory of an empty document")
    if peak_positions(tokens, window, beta) > lm.max_positions:
        need = required_beta(tokens, window, lm.max_positions)
        raise ValueError(
            f"{tokens} tokens at beta={beta} exceed the model's {lm.max_positions} positions; use beta >= {need}"
        )


def _memory(lm: LoadedModel, cache, kept, scorer: str, beta: int, window: int, total: int, dtype) -> GlobalMemory:
    """The formed cache as a stored memory: K/V in ``dtype`` on the CPU, which tokens each head kept.

    An int8 memory is quantized from the cache as computed, not from a bf16 copy of it.
    """
    layers = range(len(kept))
    as_float = lm.dtype if dtype == "int8" else dtype
    keys = [cache.layers[i].keys[0].to("cpu", as_float).contiguous() for i in layers]
    values = [cache.layers[i].values[0].to("cpu", as_float).contiguous() for i in layers]
    indices = torch.stack([torch.cat(k, dim=1) for k in kept]).to(torch.int32).cpu()
    meta = MemoryMeta(
        model_fingerprint=lm.fingerprint,
        model_name=lm.name,
        tokenizer=f"{type(lm.tokenizer).__name__}:{lm.name}",
        beta=beta,
        window=window,
        scorer=scorer,
        doc_tokens=total,
        memory_tokens=keys[0].shape[1],
        num_layers=len(kept),
        kv_heads=keys[0].shape[0],  # from the cache: configs name KV heads in more ways than one
        head_dim=keys[0].shape[-1],
        dtype=str(keys[0].dtype).removeprefix("torch."),
    )
    if dtype == "int8":
        return GlobalMemory.int8_of(keys, values, indices, meta)
    return GlobalMemory(keys, values, indices, meta)


def token_surprisal(
    model, hidden: torch.Tensor, chunk: torch.Tensor, previous: torch.Tensor | None, rows: int = 256
) -> torch.Tensor:
    """-log p(token | everything before it) for each window token, in float32.

    The window's first token is predicted by the previous window's last
    hidden state (over the memory, as the model read it); the document's
    first token has nothing before it and scores 0. Logits are computed a
    few rows at a time: a full window of vocabulary-sized rows is large.
    """
    head = model.get_output_embeddings()
    states = hidden[:-1] if previous is None else torch.cat([previous, hidden[:-1]])
    targets = chunk[1:] if previous is None else chunk
    losses = [
        torch.nn.functional.cross_entropy(head(states[i : i + rows]).float(), targets[i : i + rows], reduction="none")
        for i in range(0, states.shape[0], rows)
    ]
    surprisal = torch.cat(losses) if losses else hidden.new_zeros(0, dtype=torch.float32)
    if previous is None:
        surprisal = torch.cat([surprisal.new_zeros(1), surprisal])
    return surprisal


def _empty_cache():
    from transformers import DynamicCache

    return DynamicCache()
