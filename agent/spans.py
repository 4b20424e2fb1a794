"""The short answer inside a cited sentence: the words of it that the question asks for.

A typed question (a number, a date, a name, an identifier, one of two options it names) gets its answer
marked inside the sentence shown. The candidates are the sentence's words of that kind that do not just
repeat the question; among several, three signals choose (each measured alone in ``ops/bench/spans.py``):

likelihood  the model's mean log-probability of the candidate as the reply, relative to the best candidate
fresh       1 when the candidate names nothing the question names ("Who voices Jeremy?" is answered by the
            actor, not by "Jeremy Johnson"); answers rarely repeat their question's words
near        closeness in the sentence to the question's own words ("voiced by Mitchel Musso"), 1 / (1 + d)
            for d words between
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from agent import programs
from agent.chat import chat_prompt, end_of_turn_ids
from agent.memory.decoding import score_continuations
from agent.models import LoadedModel
from agent.ranking import STOPWORDS, WORD, content_words, stem, tokens
from agent.retrieval import Evidence

MAX_CANDIDATES = 24
SIGNALS = ("likelihood", "fresh", "near")


@dataclass(frozen=True)
class SpanWeights:
    """How much each signal counts in choosing the span (chosen on the dev split of ops/bench/spans.py)."""

    likelihood: float = 1.0
    fresh: float = 1.0
    near: float = 1.0

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in SIGNALS}


DEFAULT_SPAN_WEIGHTS = SpanWeights()


@dataclass(frozen=True)
class Span:
    """The short answer inside a cited sentence, in the document's characters."""

    text: str
    char_start: int
    char_end: int


class Sentence(Protocol):
    """A sentence of a retrieved passage (``agent.reader.Sentence``): its text, where it starts in the passage."""

    text: str
    start: int
    evidence: Evidence


# the question's kind -------------------------------------------------------------
_WANTS_NUMBER = re.compile(
    r"^\s*when\b|\b(how\s+(many|much|long|old|far|tall|big|large|wide)|what\s+(year|date|day|month|time|age|percentage|"
    r"number|size|value)|in\s+what\s+year|from\s+which\s+\w+)\b",
    re.IGNORECASE,
)
_WANTS_DATE = re.compile(r"^\s*when\b|\b(what\s+(year|date|day|month)|in\s+(what|which)\s+year)\b", re.IGNORECASE)
_WANTS_NAME = re.compile(r"\s*(who|whom|whose|where)\b", re.IGNORECASE)
_WANTS_IDENTIFIER = re.compile(
    r"\b(which|what)\s+(?:[\w-]+\s+){0,4}?(function|method|command|variable|field|event|package|file|module|"
    r"property|option|class|error|header|flag|call|api|tool|keyword|port|address|signal|library|directory|"
    r"setting|status|value|values|fields|properties|events|methods|functions)s?\b",
    re.IGNORECASE,
)
_CHOICE = re.compile(r"^\s*(is|are|does|do|did|was|were|can|should|will|has|have)\b.+\bor\b", re.IGNORECASE)
_COUNTED = re.compile(r"\bhow\s+(?:many|much)\s+(\w+)", re.IGNORECASE)


def answer_type(question: str) -> str | None:
    """The kind of short answer the question asks for (the first it asks, in "Who ..., and when?"), or None when
    a sentence is the answer."""
    if _WANTS_NAME.match(question):
        return "name"
    if _WANTS_DATE.search(question):
        return "date"
    if _WANTS_NUMBER.search(question):
        return "number"
    if _CHOICE.match(question):
        return "choice"
    if _WANTS_IDENTIFIER.search(question):
        return "identifier"
    return None


def counted_noun(question: str) -> str | None:
    """What a "how many" question counts ("boats" in "How many boats ..."), if it is one."""
    found = _COUNTED.search(question)
    return found.group(1) if found else None


# candidates ----------------------------------------------------------------------
def _set(words: str) -> frozenset[str]:
    return frozenset(words.split())


NUMBER_WORDS = _set(
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen "
    "eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million billion"
)
MONTHS = _set("january february march april may june july august september october november december")
_MONTH = "|".join(sorted(MONTHS))
_COUNT = "|".join(sorted(NUMBER_WORDS))
_NUMBER = re.compile(
    rf"\b(?:\d{{1,2}}\s+(?:{_MONTH})\s*,?\s*\d{{4}}|(?:{_MONTH})\s+\d{{1,2}}\s*,?\s*\d{{4}}|(?:{_MONTH})\s+\d{{4}}"
    rf"|\d[\d,.]*(?:\s*%)?(?:\s*[KMG]\b|\s+(?:hundred|thousand|million|billion|octets|bytes|bits?|ms|seconds))?"
    rf"|(?:{_COUNT})(?:[\s-]+(?:{_COUNT}))*)\b",
    re.IGNORECASE,
)
_DATE = re.compile(rf"\b(?:{_MONTH})\b|^\s*(?:1[0-9]|20)\d\d\s*$", re.IGNORECASE)
MARKUP = re.compile(r"</?[A-Za-z][^<>]{0,40}(?:>|\Z)")  # a tag, or one a passage's end cut
_NAME = re.compile(r"\b[A-Z][\w'’.-]*(?:\s+(?:of|the|de|van|von|da|and|&)?\s*[A-Z][\w'’.-]*)*")
# Words a sentence may open with, capitalised only for that ("However , ..."): never a name alone.
_OPENERS = _set(
    "however although though meanwhile after before during since while when then thus also later today "
    "yes no according despite following"
)
_CODE = re.compile(
    r"`([^`\n]{1,60})`|'([^'\n]{1,40})'|\"([^\"\n]{1,40})\"|"
    r"(\b[A-Za-z_][\w]*(?:_[\w]+|\.[A-Za-z_]\w*|-[A-Za-z]\w*)+(?:\(\))?|\b[a-z]+[A-Z]\w*(?:\(\))?|"
    r"\b[A-Z]{2,}[A-Z0-9_]*\b|\b\w+\(\d?\)|--?[a-z][\w-]+)"
)


def candidates(question: str, sentences: Sequence[Sentence], kind: str | None = None) -> list[tuple[str, Sentence]]:
    """Answer-sized spans of ``sentences`` that fit the question's kind and do not just repeat it."""
    kind = kind or answer_type(question) or "name"
    asked = set(content_words(question))
    asked_tokens = set(tokens(question))
    found: list[tuple[str, Sentence]] = []
    seen: set[str] = set()
    for sentence in sentences:
        if kind in ("number", "date"):
            spans = _matches(_NUMBER, sentence.text)
        elif kind == "identifier":
            spans = [next(g for g in m.groups() if g) for m in _CODE.finditer(sentence.text)]
        elif kind == "choice":
            spans = [o for o in _options(question) if o.lower() in sentence.text.lower()]
        else:
            opener = _opener(sentence.text)
            spans = [x for x in _matches(_NAME, sentence.text) if len(x) > 1 and x != opener]
        for span in spans:
            span = span.strip(" ,.;:")
            words = content_words(span)
            key = span.lower()
            if not span or key in seen or span.startswith("<"):
                continue
            if kind == "identifier" and tokens(span) and set(tokens(span)) <= asked_tokens:
                continue  # the identifier the question names is not its answer
            if kind not in ("choice", "identifier") and (not words or set(words) <= asked):
                continue
            seen.add(key)
            found.append((span, sentence))
    if kind in ("number", "date"):  # a count is not a date, a date is not a count (unless nothing else fits)
        found = [(x, s) for x, s in found if bool(_DATE.search(x)) == (kind == "date")] or found
    noun = counted_noun(question)
    if noun:  # "how many boats": a number that counts boats ("forty boats"), where the evidence has one
        found = [(x, s) for x, s in found if _counts(x, s.text, stem(noun.lower()))] or found
    return found[:MAX_CANDIDATES]


def _opener(text: str) -> str | None:
    """The sentence's first word (outside markup) when it is capitalised only for opening it: a word of
    ``_OPENERS`` or a stopword."""
    bare = MARKUP.sub(" ", text)
    first = WORD.search(bare)
    if first is None:
        return None
    word = first.group(0)
    return word if word.lower() in _OPENERS or word.lower() in STOPWORDS else None


def words_outside_markup(text: str) -> int:
    """How many words ``text`` holds once tags are taken out ("<Th> Location </Th>" holds one)."""
    return len(WORD.findall(MARKUP.sub(" ", text)))


def _options(question: str) -> list[str]:
    """The two options of "Is it A or B?": the words on either side of the last "or"."""
    body = re.sub(r"[?.!]+$", "", question.strip())
    left, _, right = body.rpartition(" or ")
    before = [w for w in left.split() if w.lower() not in STOPWORDS][-2:]
    after = [w for w in right.split() if w.lower() not in STOPWORDS][:2]
    return [" ".join(x) for x in (before, after) if x]


def _counts(number: str, sentence: str, noun: str) -> bool:
    """``number`` stands right before ``noun`` in ``sentence`` (at most one word between: "forty fishing boats")."""
    for m in re.finditer(re.escape(number), sentence):
        after = WORD.findall(sentence[m.end() :])[:2]
        if any(stem(w.lower()) == noun for w in after):
            return True
    return False


def _matches(pattern: re.Pattern, text: str) -> list[str]:
    """``pattern``'s matches in ``text`` outside markup tags (L-Eval keeps Wikipedia's HTML)."""
    markup = [m.span() for m in MARKUP.finditer(text)]
    return [m.group(0) for m in pattern.finditer(text) if not any(a <= m.start() < b for a, b in markup)]


# choosing ------------------------------------------------------------------------
def fresh(question: str, options: Sequence[tuple[str, Sentence]]) -> np.ndarray:
    """1 for the candidates that share no content word with the question."""
    asked = set(content_words(question))
    return np.asarray([float(not set(content_words(span)) & asked) for span, _ in options], dtype=np.float32)


def near(question: str, options: Sequence[tuple[str, Sentence]]) -> np.ndarray:
    """1 / (1 + the words between each candidate and the closest of the question's words in its sentence);
    0 where the sentence holds none of them outside the candidate."""
    asked = set(content_words(question))
    out = []
    for span, sentence in options:
        at = max(sentence.text.find(span), 0)
        words = list(WORD.finditer(sentence.text))
        inside = [i for i, w in enumerate(words) if at <= w.start() < at + len(span)]
        if not inside:
            out.append(0.0)
            continue
        first, last = inside[0], inside[-1]
        gaps = [
            first - i - 1 if i < first else i - last - 1
            for i, w in enumerate(words)
            if not first <= i <= last and w.group(0).lower() not in STOPWORDS and stem(w.group(0).lower()) in asked
        ]
        out.append(1.0 / (1.0 + min(gaps)) if gaps else 0.0)
    return np.asarray(out, dtype=np.float32)


def likelihood(lm: LoadedModel, question: str, shown: Sequence[Sentence], options) -> np.ndarray:
    """Each candidate's mean log-probability per token as the reply to the question over the shown sentences,
    minus the best candidate's (so 0 for the likeliest)."""
    evidence = programs.format_evidence([s.text for s in shown])
    prompt = chat_prompt(lm.tokenizer, programs.PROMPTS["short_answer"].format(question=question, evidence=evidence))
    end = end_of_turn_ids(lm.tokenizer)
    ids = [lm.tokenizer(span, add_special_tokens=False)["input_ids"] + end for span, _ in options]
    value = np.asarray([sum(lp) / max(1, len(lp)) for lp in score_continuations(lm, None, prompt, ids)])
    return (value - value.max()).astype(np.float32)


def span_signals(
    lm: LoadedModel | None, question: str, shown: Sequence[Sentence], options, *, with_likelihood: bool = True
) -> dict[str, np.ndarray]:
    """Every signal for every candidate (``likelihood`` only with a model, more than one candidate, and
    ``with_likelihood``: it costs a prefill)."""
    found = {"fresh": fresh(question, options), "near": near(question, options)}
    scored = with_likelihood and lm is not None and len(options) > 1
    found["likelihood"] = likelihood(lm, question, shown, options) if scored else np.zeros(len(options))
    return found


def choose(found: dict[str, np.ndarray], weights: SpanWeights = DEFAULT_SPAN_WEIGHTS) -> int:
    """The candidate with the best weighted sum; the earliest among equals."""
    total = sum(w * found[name] for name, w in weights.as_dict().items() if w)
    return int(np.argmax(total)) if np.ndim(total) else 0


def mark_span(
    lm: LoadedModel | None,
    question: str,
    shown: Sequence[Sentence],
    weights: SpanWeights = DEFAULT_SPAN_WEIGHTS,
) -> Span | None:
    """The short answer inside the shown sentences, when the question asks for one."""
    kind = answer_type(question)
    if kind is None:
        return None
    options = candidates(question, shown, kind)
    if not options:
        return None
    chosen = 0
    if len(options) > 1:
        chosen = choose(span_signals(lm, question, shown, options, with_likelihood=bool(weights.likelihood)), weights)
    span, sentence = options[chosen]
    at = sentence.text.find(span)
    start = sentence.evidence.chunk.char_start + sentence.start + max(at, 0)
    return Span(span, start, start + len(span))
