"""Decode and score text after a global memory.

The memory occupies positions 0..M-1 (spread over the model's read span
when longer, see ``reading``); the prompt continues after it. Sampling
controls come from transformers' logits processors; the repetition guard
(penalty plus n-gram blocking) keeps the 135M default model from looping.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from agent.memory.capture import ATTENTION_NAME
from agent.memory.prefix_attention import reading_over_memory
from agent.memory.reading import memory_cache
from agent.memory.types import GlobalMemory
from agent.models import LoadedModel


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    stop: Sequence[str] = field(default_factory=tuple)
    repetition_penalty: float = 1.15
    no_repeat_ngram: int = 6
    seed: int | None = None


def _processors(params: SamplingParams):
    from transformers import (
        LogitsProcessorList,
        NoRepeatNGramLogitsProcessor,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopPLogitsWarper,
    )

    procs = LogitsProcessorList()
    if params.repetition_penalty and params.repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    if params.no_repeat_ngram:
        procs.append(NoRepeatNGramLogitsProcessor(params.no_repeat_ngram))
    if params.temperature > 0:
        procs.append(TemperatureLogitsWarper(params.temperature))
        if params.top_p < 1.0:
            procs.append(TopPLogitsWarper(params.top_p))
    return procs


def _context(lm: LoadedModel, memory: GlobalMemory | None):
    """A fresh cache holding the memory (empty without one) and the next free position."""
    from transformers import DynamicCache

    if memory is None:
        return DynamicCache(), 0
    memory.check_model(lm.fingerprint)
    return memory_cache(lm, memory)


def _prefill(lm: LoadedModel, memory: GlobalMemory | None, prompt_ids: Sequence[int]):
    """Run the prompt on top of the memory; returns (cache, last logits, next position)."""
    cache, offset = _context(lm, memory)
    ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=lm.device)
    positions = torch.arange(offset, offset + ids.shape[1], device=lm.device)[None]
    with reading_over_memory(cache.get_seq_length()):  # the memory read without a mask, where the split applies
        out = lm.model(input_ids=ids, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1)
    return out.cache if hasattr(out, "cache") else out.past_key_values, out.logits[:, -1], offset + ids.shape[1]


def generate(
    lm: LoadedModel,
    memory: GlobalMemory | None,
    prompt_ids: Sequence[int],
    params: SamplingParams = SamplingParams(),
) -> str:
    """Generate after memory + prompt and return the whole text."""
    return "".join(stream_generate(lm, memory, prompt_ids, params))


def stream_generate(
    lm: LoadedModel,
    memory: GlobalMemory | None,
    prompt_ids: Sequence[int],
    params: SamplingParams = SamplingParams(),
) -> Iterator[str]:
    """Yield new pieces of text as they are decoded (stop strings already cut)."""
    with torch.inference_mode():
        tokenizer = lm.tokenizer
        cache, logits, position = _prefill(lm, memory, prompt_ids)
        eos = set(_eos_ids(lm))
        procs = _processors(params)
        generator = None
        if params.temperature > 0:
            generator = torch.Generator(device=lm.device)
            generator.manual_seed(params.seed if params.seed is not None else torch.seed())
        history = torch.tensor([list(prompt_ids)], dtype=torch.long, device=lm.device)
        produced: list[int] = []
        text = ""
        for _ in range(params.max_new_tokens):
            scores = procs(history, logits.float())
            if params.temperature > 0:
                token = int(torch.multinomial(scores.softmax(-1), 1, generator=generator))
            else:
                token = int(scores.argmax(-1))
            if token in eos:
                return
            produced.append(token)
            new_text = tokenizer.decode(produced, skip_special_tokens=True)
            cut = _stop_at(new_text, params.stop)
            if cut is not None:
                new_text = new_text[:cut]
            if len(new_text) > len(text) and not new_text.endswith("\ufffd"):
                yield new_text[len(text) :]
                text = new_text
            if cut is not None:
                return
            history = torch.cat([history, torch.tensor([[token]], device=lm.device)], dim=1)
            step = torch.tensor([[token]], device=lm.device)
            out = lm.model(input_ids=step, position_ids=torch.tensor([[position]], device=lm.device), cache=cache)
            cache = out.cache if hasattr(out, "cache") else out.past_key_values
            logits, position = out.logits[:, -1], position + 1


@torch.inference_mode()
def generate_batch(
    lm: LoadedModel,
    memory: GlobalMemory | None,
    prompts: Sequence[Sequence[int]],
    params: Sequence[SamplingParams],
) -> list[str]:
    """Several prompts decoded together after one memory: what ``generate`` would write for each.

    The memory's cache is built once and repeated per row; prompts are
    left-padded (masked, positions counted from each prompt's own start) so
    every row's next token comes from the last column. Each row keeps its
    own history, processors, token budget and stop strings, and leaves the
    batch when it ends, so the batch costs the longest row, not the sum.
    """
    if len(prompts) != len(params):
        raise ValueError("one SamplingParams per prompt")
    if not prompts:
        return []
    if any(not p for p in prompts):
        raise ValueError("every prompt needs at least one token")
    cache, logits, mask, offset = _prefill_batch(lm, memory, prompts)
    eos = set(_eos_ids(lm))
    rows = [_Row(lm, list(p), sp, offset + len(p)) for p, sp in zip(prompts, params, strict=True)]
    live = list(range(len(rows)))  # rows still decoding, in cache order
    while live:
        steps: list[int] = []
        for slot, row in enumerate(live):
            if rows[row].step(logits[slot : slot + 1], eos):
                steps.append(slot)
        if len(steps) < len(live):  # some rows ended: keep only the others' cache rows
            keep = torch.tensor(steps, dtype=torch.long, device=lm.device)
            if steps:
                cache.batch_select_indices(keep)
            mask = mask[keep]
        live = [live[slot] for slot in steps]
        if not live:
            break
        tokens = torch.tensor([[rows[row].produced[-1]] for row in live], device=lm.device)
        mask = torch.cat([mask, torch.ones((len(live), 1), dtype=torch.long, device=lm.device)], dim=1)
        at = torch.tensor([[rows[row].position] for row in live], device=lm.device)
        out = lm.model(input_ids=tokens, position_ids=at, attention_mask=mask, cache=cache)
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        logits = out.logits[:, -1]
        for row in live:
            rows[row].position += 1
    return [row.text.rstrip("\ufffd") for row in rows]


def _prefill_batch(lm: LoadedModel, memory: GlobalMemory | None, prompts: Sequence[Sequence[int]]):
    """Left-padded prompts read after one memory: (cache, last logits per row, attention mask, first position)."""
    cache, offset = _context(lm, memory)
    prefix = cache.get_seq_length()
    batch, width = len(prompts), max(len(p) for p in prompts)
    if batch > 1:
        cache.batch_repeat_interleave(batch)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    ids = torch.full((batch, width), pad, dtype=torch.long, device=lm.device)
    mask = torch.zeros((batch, prefix + width), dtype=torch.long, device=lm.device)
    mask[:, :prefix] = 1
    positions = torch.full((batch, width), offset, dtype=torch.long, device=lm.device)
    for row, prompt in enumerate(prompts):
        n = len(prompt)
        ids[row, width - n :] = torch.tensor(list(prompt), dtype=torch.long)
        mask[row, prefix + width - n :] = 1
        positions[row, width - n :] = torch.arange(offset, offset + n)
    out = lm.model(
        input_ids=ids, position_ids=positions, attention_mask=mask, cache=cache, use_cache=True, logits_to_keep=1
    )
    cache = out.cache if hasattr(out, "cache") else out.past_key_values
    return cache, out.logits[:, -1], mask, offset


class _Row:
    """One prompt's decoding state in ``generate_batch``: history, processors, text so far."""

    def __init__(self, lm: LoadedModel, prompt: list[int], params: SamplingParams, position: int):
        self.tokenizer = lm.tokenizer
        self.params = params
        self.procs = _processors(params)
        self.history = torch.tensor([prompt], dtype=torch.long, device=lm.device)
        self.generator = None
        if params.temperature > 0:
            self.generator = torch.Generator(device=lm.device)
            self.generator.manual_seed(params.seed if params.seed is not None else torch.seed())
        self.produced: list[int] = []
        self.text = ""
        self.position = position

    def step(self, logits: torch.Tensor, eos: set[int]) -> bool:
        """Choose the next token from ``logits``; False when this row has ended."""
        if len(self.produced) >= self.params.max_new_tokens:
            return False
        scores = self.procs(self.history, logits.float())
        if self.params.temperature > 0:
            token = int(torch.multinomial(scores.softmax(-1), 1, generator=self.generator))
        else:
            token = int(scores.argmax(-1))
        if token in eos:
            return False
        self.produced.append(token)
        text = self.tokenizer.decode(self.produced, skip_special_tokens=True)
        cut = _stop_at(text, self.params.stop)
        self.text = text if cut is None else text[:cut]
        if cut is not None or len(self.produced) >= self.params.max_new_tokens:
            return False
        self.history = torch.cat([self.history, torch.tensor([[token]], device=self.history.device)], dim=1)
        return True


@torch.inference_mode()
def token_logprobs(
    lm: LoadedModel,
    memory: GlobalMemory | None,
    prompt_ids: Sequence[int],
    continuation_ids: Sequence[int],
) -> list[float]:
    """Log-probability of each token of ``continuation_ids`` after memory + prompt."""
    if not continuation_ids:
        return []
    return logprobs_tensor(lm, memory, prompt_ids, continuation_ids).tolist()


def logprobs_tensor(
    lm: LoadedModel,
    memory: GlobalMemory | None,
    prompt_ids: Sequence[int],
    continuation_ids: Sequence[int],
) -> torch.Tensor:
    """Per-token log-probabilities of the continuation, differentiable outside inference mode.

    The memory is a fixed prefix: its keys and values are constants, so a
    gradient reaches only what computes the prompt and continuation (a LoRA
    adapter, when one is trained).
    """
    if not prompt_ids:  # logits for the first continuation token come from the last prompt token
        raise ValueError("scoring needs at least one prompt token")
    cache, offset = _context(lm, memory)
    ids = torch.tensor([list(prompt_ids) + list(continuation_ids)], dtype=torch.long, device=lm.device)
    positions = torch.arange(offset, offset + ids.shape[1], device=lm.device)[None]
    n = len(continuation_ids)
    logits = lm.model(input_ids=ids, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=n + 1).logits
    logprobs = logits[0, :-1].float().log_softmax(-1)
    return logprobs.gather(-1, ids[0, -n:, None]).squeeze(-1)


def continuation_logprob(
    lm: LoadedModel,
    memory: GlobalMemory | None,
    prompt_ids: Sequence[int],
    continuation_ids: Sequence[int],
) -> float:
    """Sum of log-probabilities of ``continuation_ids`` after memory + prompt."""
    return float(sum(token_logprobs(lm, memory, prompt_ids, continuation_ids)))


def _stop_at(text: str, stops: Sequence[str]) -> int | None:
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None


def _eos_ids(lm: LoadedModel) -> list[int]:
    ids = lm.model.generation_config.eos_token_id if lm.model.generation_config else None
    if ids is None:
        ids = lm.tokenizer.eos_token_id
    return [ids] if isinstance(ids, int) else list(ids or [])


@torch.inference_mode()
def score_continuations(
    lm: LoadedModel,
    memory: GlobalMemory | None,
    prompt_ids: Sequence[int],
    candidates: Sequence[Sequence[int]],
) -> list[list[float]]:
    """Per-token log-probabilities of each candidate after memory + prompt, the prompt read once.

    The prompt's keys and values are computed in one pass and shared. On the
    CPU the candidates then run as segments of one short row that each see the
    prefix and only themselves (``prefix_attention``), so the prefix is not
    copied per candidate; elsewhere as one right-padded batch on a copied prefix.
    """
    if not prompt_ids:
        raise ValueError("scoring needs at least one prompt token")
    todo = [list(c) for c in candidates]
    if not todo:
        return []
    cache, first, position = _prefill(lm, memory, prompt_ids)
    first = first.float().log_softmax(-1)[0]
    out = [[float(first[c[0]])] if c else [] for c in todo]
    if max(len(c) for c in todo) <= 1:
        return out
    rest = _score_as_segments if _segments_apply(lm, cache.get_seq_length(), todo) else _score_as_batch
    for row, scores in zip(out, rest(lm, cache, position, todo), strict=True):
        row.extend(scores)
    return out


def _segments_apply(lm: LoadedModel, prefix: int, todo: list[list[int]]) -> bool:
    """Whether every layer runs the split attention that keeps segments apart (CPU, our SDPA, no short window)."""
    config = lm.model.config
    window = getattr(config, "sliding_window", None)  # conservative: some models set it and use it on no layer
    return (
        prefix > 0
        and lm.device.type == "cpu"
        and getattr(config, "_attn_implementation", None) == ATTENTION_NAME
        and (window is None or window >= prefix + sum(len(c) for c in todo))
    )


def _score_as_segments(lm: LoadedModel, cache, position: int, todo: list[list[int]]) -> list[list[float]]:
    """All candidates' inputs in one row, each a segment at its own positions after the prefix."""
    feeds = [c[:-1] for c in todo]
    ids = torch.tensor([[t for f in feeds for t in f]], dtype=torch.long, device=lm.device)
    segments = torch.cat([torch.full((len(f),), i, dtype=torch.long) for i, f in enumerate(feeds)]).to(lm.device)
    positions = torch.cat([torch.arange(position, position + len(f)) for f in feeds]).to(lm.device)[None]
    with reading_over_memory(cache.get_seq_length(), segments):
        logits = lm.model(input_ids=ids, position_ids=positions, cache=cache).logits[0].float()
    logprobs = logits.log_softmax(-1)
    scores, start = [], 0
    for c, f in zip(todo, feeds, strict=True):
        scores.append([float(logprobs[start + i, token]) for i, token in enumerate(c[1:])])
        start += len(f)
    return scores


def _score_as_batch(lm: LoadedModel, cache, position: int, todo: list[list[int]]) -> list[list[float]]:
    """The candidates as one right-padded batch on a per-row copy of the prefix."""
    batch, width = len(todo), max(len(c) for c in todo)
    prefix = cache.get_seq_length()
    cache.batch_repeat_interleave(batch)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    feed = torch.full((batch, width - 1), pad, dtype=torch.long, device=lm.device)
    mask = torch.zeros((batch, prefix + width - 1), dtype=torch.long, device=lm.device)
    mask[:, :prefix] = 1
    for row, c in enumerate(todo):
        inputs = c[:-1]
        feed[row, : len(inputs)] = torch.tensor(inputs, dtype=torch.long)
        mask[row, prefix : prefix + len(inputs)] = 1
    positions = torch.arange(position, position + width - 1, device=lm.device).expand(batch, -1)
    logits = lm.model(input_ids=feed, position_ids=positions, attention_mask=mask, cache=cache).logits.float()
    logprobs = logits.log_softmax(-1)
    return [[float(logprobs[row, i, token]) for i, token in enumerate(c[1:])] for row, c in enumerate(todo)]
