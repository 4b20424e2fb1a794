"""Copy-constrained decoding: every line the model writes is a verbatim run of the document.

The 135M memory model, asked to quote evidence, mostly invents it; an
invented span retrieves whatever it happens to resemble. Restricting each
line to continue some run of the source's tokens (a line break ends a span
and the next may start at any word) turns span writing into choosing where
in the document to copy from, which retrieval can then find exactly.
Nothing uses it by default: the 135M default model chooses poorly where
to copy on QMSum (docs/benchmarks.md, "Spans copied verbatim").
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from functools import lru_cache

import torch

# A span ends on a line break; after ``max_span`` tokens one is forced, so
# a quote cannot swallow the whole token budget.
MIN_SPAN = 8
MAX_SPAN = 48
_GAP = -1  # between sources and in place of line breaks: no span crosses it


@lru_cache(maxsize=8)
def _break_tokens(tokenizer) -> frozenset[int]:
    """Token ids whose text holds a line break (they end a span)."""
    pieces = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    return frozenset(i for i, piece in enumerate(pieces) if "\n" in piece)


class CopySource:
    """An index of where each token occurs in the source texts, built once per document."""

    def __init__(self, tokenizer, texts: Sequence[str], *, min_span: int = MIN_SPAN, max_span: int = MAX_SPAN) -> None:
        self.breaks = _break_tokens(tokenizer)
        newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
        self.line_break = newline[0] if len(newline) == 1 else min(self.breaks)
        self.min_span, self.max_span = min_span, max_span
        tokens: list[int] = []
        for text in texts:
            ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
            tokens += [_GAP if t in self.breaks else t for t in ids] + [_GAP]
        self.tokens = tokens
        vocab = sorted({t for t in tokens if t != _GAP})
        word_start = {t for t, piece in zip(vocab, tokenizer.convert_ids_to_tokens(vocab), strict=True)
                      if _starts_word(piece)}  # fmt: skip
        self.after: dict[int, list[int]] = defaultdict(list)  # token -> positions right after each occurrence
        starts: set[int] = set()
        for i, t in enumerate(tokens):
            if t == _GAP:
                continue
            self.after[t].append(i + 1)
            if t in word_start or i == 0 or tokens[i - 1] == _GAP:
                starts.add(t)
        self.starts = sorted(starts)  # a span may begin with any token that begins a word

    def follow(self, live: list[int] | None, token: int, used: set[int] = frozenset()) -> list[int]:
        """Positions after the current span extended by ``token`` (``live`` None: a new span).

        Positions in ``used`` (already copied) cannot be copied again.
        """
        if live is None:
            return [p for p in self.after.get(token, []) if p - 1 not in used]
        return [p + 1 for p in live if self.tokens[p] == token and p not in used]

    def next_tokens(self, live: list[int] | None, used: set[int] = frozenset()) -> list[int]:
        if live is None:
            return self.starts
        return sorted({self.tokens[p] for p in live if self.tokens[p] != _GAP and p not in used})


def _starts_word(piece: str) -> bool:
    # byte-level BPE marks a leading space with "Ġ"; sentencepiece with "▁"
    return piece[:1] in ("Ġ", "▁", " ") or not piece[:1].isalnum()


class CopyConstraint:
    """A logits processor (transformers' interface) that keeps each line a copy of the source.

    Tokens that would leave every matching run are masked; a line break or
    end of text is allowed once a span has ``min_span`` tokens, and forced
    when no continuation is left or the span reaches ``max_span``.
    """

    def __init__(self, source: CopySource, prompt_len: int, stops: Sequence[int]) -> None:
        self.source = source
        self.seen = prompt_len
        self.stops = list(stops)  # end-of-text ids
        self.live: list[int] | None = None  # positions after the span so far; None between spans
        self.length = 0
        self.used: set[int] = set()  # source positions copied by earlier spans

    def _advance(self, token: int) -> None:
        if token in self.source.breaks:
            if self.live:
                self.used.update(p - i for p in self.live for i in range(1, self.length + 1))
            self.live, self.length = None, 0
            return
        self.live = self.source.follow(self.live, token, self.used)
        self.length += 1

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for token in input_ids[0, self.seen :].tolist():
            self._advance(token)
        self.seen = input_ids.shape[1]
        allowed = [] if self.length >= self.source.max_span else self.source.next_tokens(self.live, self.used)
        mask = torch.full_like(scores, float("-inf"))
        mask[:, allowed] = 0.0
        if self.live is None:
            mask[:, self.stops] = 0.0  # between spans: another span, or done
        elif self.length >= self.source.min_span:
            mask[:, [self.source.line_break, *self.stops]] = 0.0
        if not allowed and self.live is not None:  # nothing left to copy: end the span
            mask[:, self.source.line_break] = 0.0
        return scores + mask
