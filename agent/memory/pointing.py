"""Where the memory says the answer lives: the question's attention over the memory, per chunk.

Every memory slot remembers the document token it came from
(``GlobalMemory.token_indices``), and chunks are cut in the same tokens, so
one short prefill of the question on top of the memory, with no decoding,
gives each attention head a distribution over the document's chunks. Some
heads look where the answer is (query-focused retrieval heads, QRHead and
InfiniRetri, 2025); which ones is measured on a dev split
(``ops/bench/memory_evidence.py``) and kept in ``heads/<model>.json``
beside this module. Cost: one forward pass of the question's tokens.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from agent.memory.capture import capture_queries
from agent.memory.reading import memory_cache
from agent.memory.scorers import SINK_TOKENS
from agent.memory.types import GlobalMemory
from agent.models import LoadedModel

HEADS_DIR = Path(__file__).with_name("heads")
PROMPT = "Find the passage of the document that answers this question.\nQuestion: {question}"


@dataclass(frozen=True)
class Heads:
    """The (layer, KV head) pairs whose attention ranks chunks, chosen on a dev split for one model."""

    model: str
    pairs: tuple[tuple[int, int], ...]
    weight: float = 1.0  # their ranking's RRF weight beside the question's own
    measured: str = ""  # where and how they were chosen, for whoever reads the file

    def to_json(self) -> str:
        fields = {"model": self.model, "pairs": self.pairs, "weight": self.weight, "measured": self.measured}
        return json.dumps(fields, indent=1)


def heads_file(model_name: str) -> Path:
    return HEADS_DIR / f"{model_name}.json"


def load_heads(model_name: str) -> Heads | None:
    """The heads chosen for ``model_name``, or None when none were measured for it."""
    path = heads_file(model_name)
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    pairs = tuple((int(a), int(b)) for a, b in raw["pairs"])
    return Heads(raw["model"], pairs, float(raw.get("weight", 1.0)), raw.get("measured", ""))


@torch.inference_mode()
def chunk_attention(
    lm: LoadedModel, memory: GlobalMemory, question: str, token_spans: Sequence[tuple[int, int]]
) -> torch.Tensor:
    """[layers, KV heads, chunks]: the attention the question's tokens pay to each chunk's memory slots.

    ``token_spans``: each chunk's [start, end) in document tokens, sorted. Per head, the mass is a share of
    the question's attention over the memory (the first tokens, attention sinks, excluded), averaged over
    the question's tokens and the query heads sharing the KV head.
    """
    memory.check_model(lm.fingerprint)
    prompt = lm.tokenizer(PROMPT.format(question=question), add_special_tokens=False, verbose=False)["input_ids"]
    cache, offset = memory_cache(lm, memory)
    ids = torch.tensor([prompt], dtype=torch.long, device=lm.device)
    positions = torch.arange(offset, offset + ids.shape[1], device=lm.device)[None]
    with capture_queries(torch.arange(ids.shape[1])) as captured:
        lm.model(input_ids=ids, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1)
    length = len(memory)
    layers = []
    for i, cached in enumerate(cache.layers):
        keys, queries = cached.keys, captured[i][0].float()  # keys [1, KVH, M + n, D]; queries [H, n, D]  # [H, n, D]
        kv_heads = keys.shape[1]
        grouped = queries.reshape(kv_heads, -1, *queries.shape[1:])  # [KVH, G, n, D]
        logits = grouped @ keys[0, :, None, :length].float().transpose(-1, -2) * queries.shape[-1] ** -0.5
        layers.append(logits.softmax(dim=-1).mean(dim=(1, 2)).cpu())  # [KVH, M]
    mass = torch.stack(layers)  # [L, KVH, M]
    per_chunk = _per_chunk(memory, token_spans, mass)
    return per_chunk / per_chunk.sum(dim=-1, keepdim=True).clamp(min=1e-9)


def slots_per_chunk(memory: GlobalMemory, token_spans: Sequence[tuple[int, int]]) -> torch.Tensor:
    """[layers, KV heads, chunks]: how many memory slots each head kept from each chunk."""
    return _per_chunk(memory, token_spans, torch.ones(memory.token_indices.shape))


def _per_chunk(memory: GlobalMemory, token_spans: Sequence[tuple[int, int]], mass: torch.Tensor) -> torch.Tensor:
    """Sum ``mass`` [L, KVH, M] by the chunk each slot's token falls in (the latest-starting one)."""
    starts = torch.tensor([s for s, _ in token_spans], dtype=torch.long)
    ends = torch.tensor([e for _, e in token_spans], dtype=torch.long)
    tokens = memory.token_indices.long()  # [L, KVH, M]
    slot_chunk = torch.searchsorted(starts, tokens, right=True) - 1
    inside = (slot_chunk >= 0) & (tokens < ends[slot_chunk.clamp(min=0)]) & (tokens >= SINK_TOKENS)
    per_chunk = torch.zeros(*mass.shape[:2], len(token_spans))
    return per_chunk.scatter_add_(2, slot_chunk.clamp(min=0), mass * inside)


def chunk_scores(attention: torch.Tensor, heads: Heads | None) -> torch.Tensor:
    """[chunks]: the chosen heads' mean share per chunk (every head where none were chosen)."""
    if heads is None or not heads.pairs:
        return attention.mean(dim=(0, 1))
    layers, kv = zip(*heads.pairs, strict=True)
    return attention[list(layers), list(kv)].mean(dim=0)
