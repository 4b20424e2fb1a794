"""The reader: the documents' own sentence that answers, cited exactly, or a decline.

A 135M generator handed good passages still writes prose the passages do not
hold, and free generation loses the signal its likelihood keeps. So the
default answer is the evidence's best sentence (two when one is cut), quoted
with its characters in the document, and when the question asks for a typed
answer (a number, a date, a name, an identifier, one of two options it names)
the short span inside that sentence is marked, chosen by the model's
likelihood. Long answers ("what was said about X", summaries) are the best
few sentences across the evidence, each cited. Sentences are ranked by the
signals in ``agent.ranking`` read together with the headings above them; a
question whose best sentence is not supported well enough is declined with
the closest passage named.

Generated text (``MEMORAG_READER=generate``, or a stronger remote generator)
is shown only where every sentence of it passes ``check``: one evidence
sentence covers its words and means the same, and it names no name, number
or date the evidence lacks. Otherwise the documents' sentence is shown.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from agent import ranking
from agent.choices import READERS
from agent.models import LoadedModel
from agent.outline import outline
from agent.ranking import WORD, content_words
from agent.retrieval import Evidence
from agent.spans import (
    MONTHS,
    NUMBER_WORDS,
    Span,
    answer_type,
    candidates,
    counted_noun,
    mark_span,
    words_outside_markup,
)

# The best sentence's support (mean of cosine and coverage) below which the documents do not answer:
# chosen on the technical-documents dev split (docs/evaluation.md), reported on its test split.
MIN_SUPPORT = 0.43
# The same for a long answer (a summary of what was said): chosen on QMSum train by ROUGE-L, reported on val.
MIN_SUPPORT_LONG = 0.25
# A generated sentence is supported when one evidence sentence holds this share of its content words
# and its embedding is this close (chosen on the same dev split).
MIN_COVERED = 0.6
MIN_SIMILAR = 0.6
KEY_SENTENCES = 3  # a long answer's sentences
KEY_SHARE = 0.8  # ... each supported at least this share of the best one
KEY_WORDS = 90  # ... and at most about this many words

TextOf = Callable[[str], str]  # document id -> its text (for the headings above a passage)


def _set(words: str) -> frozenset[str]:
    return frozenset(words.split())


_LONG = re.compile(  # composed answers (QMSum-style "what did X say about Y"), whatever question word they hold
    r"\b(summari[sz]e|discuss\w*|describe|explain|why|how\s+(did|was|were)|what\s+(did|was\s+said)|"
    r"talk\w*\s+about|opinions?|think|thought|decid\w*|decision|agree\w*|propos\w*|suggest\w*)\b",
    re.IGNORECASE,
)
# Sentence ends, blank lines and block-level tags (L-Eval keeps Wikipedia's); a single newline is line wrapping.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z0-9\"'(<\[`])|\n\s*\n|(?=<(?:P|Tr|Li|H\d|Td|Th|Dd)>)")
_PRONOUN_START = re.compile(r"^(it|its|he|she|his|her|they|their|this|these|there|that|such)\b", re.IGNORECASE)
_NOISE = re.compile(r"^(<!--|-->|\* `\w+` \{|added: v|changes:|- version:|pr-url:|description:)")
_CASUAL = _set("the a an i he she it we they this that there in on at of and but or if when")


@dataclass(frozen=True)
class Citation:
    """Where an answer stands in the documents: the chunk, its document and the sentence's characters."""

    chunk_id: str
    doc_id: str
    char_start: int
    char_end: int
    quote: str
    context: str = ""  # the document's title and the headings above the sentence
    span: Span | None = None  # the short answer inside the quote, when the question asks for one

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Reading:
    """What the reader shows, how it got there, and why when it withheld an answer."""

    text: str
    path: str  # "sentence", "sentences" (a long answer) or "generate"
    supported: bool
    citation: Citation | None
    reason: str | None = None  # why the answer is not shown as fact, or what was left out
    proposed: str | None = None  # what the generator wrote, when it was not shown
    citations: tuple[Citation, ...] = ()  # every sentence shown (a long answer cites each)
    support: float | None = None  # the best sentence's support (agent.ranking.support)

    @property
    def short(self) -> str:
        """The short answer where one was marked, else the text (what F1-scored benchmarks compare)."""
        span = self.citation.span if self.citation and self.supported else None
        return span.text if span else self.text


@dataclass(frozen=True)
class Sentence:
    text: str
    evidence: Evidence
    rank: int  # the passage's retrieval rank, 0 = best
    start: int  # characters in the passage
    end: int
    context: str = ""  # title > headings above it, when the document's text was at hand

    def citation(self, span: Span | None = None, until: Sentence | None = None) -> Citation:
        """This sentence's citation (through ``until``, a later sentence of the same passage)."""
        chunk, end = self.evidence.chunk, (until or self).end
        start = chunk.char_start + self.start
        quote = chunk.text[self.start : end]
        return Citation(chunk.id, chunk.doc_id, start, start + len(quote), quote, self.context, span)

    @property
    def scored_text(self) -> str:
        return f"{self.context}: {self.text}" if self.context else self.text


# questions ---------------------------------------------------------------------
def choose_path(question: str, reader: str = "auto") -> str:
    """``sentences`` for composed answers (summaries, what was said about X), ``sentence`` otherwise;
    ``generate`` when asked for (checked, with the sentence reading to fall back on)."""
    if reader not in READERS:
        raise ValueError(f"unknown reader {reader!r}; choose one of {', '.join(READERS)}")
    if reader == "generate":
        return "generate"
    return "sentences" if reader == "auto" and _LONG.search(question) else "sentence"


# sentences ---------------------------------------------------------------------
def split_sentences(evidence: Sequence[Evidence], text_of: TextOf | None = None) -> list[Sentence]:
    """Every sentence of the passages, best-ranked passage first (``evidence`` is in any order).

    ``text_of`` gives a document's text, for the headings above each sentence.
    """
    ranked = sorted(range(len(evidence)), key=lambda i: -evidence[i].score)
    outlines: dict[str, object] = {}
    out: list[Sentence] = []
    for rank, i in enumerate(ranked):
        chunk = evidence[i].chunk
        text, start = chunk.text, 0
        where = None
        if text_of is not None:
            if chunk.doc_id not in outlines:
                try:
                    outlines[chunk.doc_id] = outline(text_of(chunk.doc_id))
                except LookupError:  # deleted meanwhile: no headings
                    outlines[chunk.doc_id] = None
            where = outlines[chunk.doc_id]
        for cut in [*(m.start() for m in _SENTENCE_END.finditer(text)), len(text)]:
            piece = text[start:cut]
            stripped = piece.strip()
            if words_outside_markup(stripped) >= 3 and not stripped.startswith("#") and not _NOISE.match(stripped):
                lead = start + piece.index(stripped)
                context = where.context_at(chunk.char_start + lead) if where else ""
                out.append(Sentence(stripped, evidence[i], rank, lead, lead + len(stripped), context))
            start = max(start, cut)
    return out


def signals(
    question: str, sentences: Sequence[Sentence], embedder=None, *, context: bool = True, answer_kind: bool = True
) -> dict[str, np.ndarray]:
    """Every ranking signal for every sentence (``dense`` only with an embedder; ``typed`` only when
    ``answer_kind``: it scans every sentence for candidates, wasted where its weight is 0)."""
    texts = [s.scored_text if context else s.text for s in sentences]
    for i in range(1, len(sentences)):  # "Its builder was ...": read with the sentence it continues
        if _continues(sentences, i):
            texts[i] = f"{texts[i]} {sentences[i - 1].text}"
    counted = counted_noun(question)
    out = {
        "lexical": ranking.lexical(question, texts),
        "coverage": ranking.coverage(question, texts, counted),
        "rank": ranking.rank_prior([s.rank for s in sentences]),
    }
    out["dense"] = ranking.dense(embedder, question, texts) if embedder is not None else np.zeros(len(texts))
    if answer_kind:
        out["typed"] = typed(question, sentences)
    return out


def typed(question: str, sentences: Sequence[Sentence]) -> np.ndarray:
    """1 for the sentences that hold an answer of the kind the question asks for (a number, a date, an
    identifier, one of its options); 1 for all when the question is not typed that way (names are
    everywhere) or no sentence holds one."""
    kind = answer_type(question)
    if kind not in ("number", "date", "identifier", "choice"):
        return np.ones(len(sentences), dtype=np.float32)
    holds = np.asarray([bool(candidates(question, [s], kind)) for s in sentences], dtype=np.float32)
    return holds if holds.any() else np.ones(len(sentences), dtype=np.float32)


@dataclass
class Ranked:
    """Sentences best first, with the signals that put them there."""

    sentences: list[Sentence]
    score: np.ndarray
    support: np.ndarray
    order: list[int] = field(default_factory=list)

    def best(self, n: int = 1) -> list[int]:
        return self.order[:n]


def rank_sentences(
    question: str,
    sentences: Sequence[Sentence],
    embedder=None,
    *,
    weights: ranking.Weights = ranking.DEFAULT_WEIGHTS,
    context: bool = True,
) -> Ranked:
    sentences = list(sentences)
    if not sentences:
        return Ranked([], np.zeros(0), np.zeros(0), [])
    found = signals(question, sentences, embedder, context=context, answer_kind=bool(weights.typed))
    score = ranking.combine(found, weights)
    support = np.asarray([ranking.support(d, c) for d, c in zip(found["dense"], found["coverage"], strict=True)])
    if embedder is None:  # no cosine: coverage alone decides
        support = found["coverage"].astype(np.float32)
    order = sorted(range(len(sentences)), key=lambda i: (-score[i], sentences[i].rank, i))
    return Ranked(sentences, score, support, order)


def _continues(sentences: Sequence[Sentence], i: int) -> bool:
    """Whether sentence ``i`` opens with a pronoun for something in the sentence before it."""
    same_passage = i > 0 and sentences[i - 1].evidence is sentences[i].evidence
    return same_passage and bool(_PRONOUN_START.match(sentences[i].text))


def extent(sentences: Sequence[Sentence], i: int) -> tuple[int, int]:
    """The sentence with the one before it when it continues it (a pronoun) and the one after when it is cut
    (ends with a colon, or the passage ends mid-sentence)."""
    first, last = i, i
    s = sentences[i]
    same = lambda j: 0 <= j < len(sentences) and sentences[j].evidence is s.evidence  # noqa: E731
    if _continues(sentences, i):
        first = i - 1
    if s.text.rstrip().endswith(":") and same(i + 1):
        last = i + 1
    return first, last


# reading -----------------------------------------------------------------------
NOT_ANSWERED = "The documents do not answer this question."
NOT_SUPPORTED = "The answer the model wrote is not supported by the documents, so it is not shown."


def decline(closest: Sentence | None, why: str = NOT_ANSWERED) -> str:
    if closest is None:
        return why
    cited = closest.citation()
    quote = " ".join(cited.quote.split())
    return f'{why} The closest passage is {cited.chunk_id} (characters {cited.char_start}-{cited.char_end}): "{quote}"'


def read_sentences(
    lm: LoadedModel | None,
    question: str,
    evidence: Sequence[Evidence],
    *,
    embedder=None,
    text_of: TextOf | None = None,
    long: bool = False,
    min_support: float | None = None,
    weights: ranking.Weights = ranking.DEFAULT_WEIGHTS,
) -> Reading:
    """The best sentence (``long``: the best few, across passages), cited, with its short span marked; or a
    decline naming the closest passage."""
    path = "sentences" if long else "sentence"
    if min_support is None:
        min_support = MIN_SUPPORT_LONG if long else MIN_SUPPORT
    ranked = rank_sentences(question, split_sentences(evidence, text_of), embedder, weights=weights)
    if not ranked.sentences:
        return Reading(decline(None), path, False, None, "no evidence was retrieved")
    top = ranked.best()[0]
    best, support = ranked.sentences[top], float(ranked.support[top])
    if support < min_support:
        reason = f"no passage answers the question well enough (best sentence's support {support:.2f} < {min_support})"
        return Reading(decline(best), path, False, best.citation(), reason, support=support)
    if long:
        return _key_sentences(ranked, support)
    first, last = extent(ranked.sentences, top)
    shown = ranked.sentences[first : last + 1]
    cited = ranked.sentences[first].citation(mark_span(lm, question, shown), until=ranked.sentences[last])
    return Reading(" ".join(cited.quote.split()), path, True, cited, citations=(cited,), support=support)


def _key_sentences(ranked: Ranked, support: float) -> Reading:
    """The best sentences, at most two from one passage, in document order, each cited."""
    chosen: list[Sentence] = []
    per_chunk: dict[str, int] = {}
    words = 0
    for i in ranked.order:
        s = ranked.sentences[i]
        if len(chosen) >= KEY_SENTENCES or words >= KEY_WORDS:
            break
        if ranked.support[i] < support * KEY_SHARE or per_chunk.get(s.evidence.chunk.id, 0) >= 2:
            continue
        if any(s.evidence is c.evidence and s.start == c.start for c in chosen):
            continue
        chosen.append(s)
        per_chunk[s.evidence.chunk.id] = per_chunk.get(s.evidence.chunk.id, 0) + 1
        words += len(s.text.split())
    chosen.sort(key=lambda s: (s.evidence.chunk.doc_id, s.evidence.chunk.char_start + s.start))
    citations = tuple(s.citation() for s in chosen)
    text = " ".join(" ".join(c.quote.split()) for c in citations)
    return Reading(text, "sentences", True, citations[0], citations=citations, support=support)


# support -----------------------------------------------------------------------
_SENTENCES = re.compile(r"(?<=[.!?:;])\s+|\n+")  # how an answer splits into sentences


def unsupported_terms(answer: str, evidence_text: str) -> list[str]:
    """Names, numbers and dates in ``answer`` that the evidence does not contain."""
    held = {_exact(w) for w in WORD.findall(evidence_text.lower())}  # whole words: "HandmaiDad" is no "handmaid"
    missing: list[str] = []
    for sentence in _SENTENCES.split(answer):
        for i, word in enumerate(WORD.findall(sentence)):
            lower = word.lower()
            named = word[0].isupper() and i > 0 and lower not in _CASUAL  # a sentence's first word is no evidence
            if (any(c.isdigit() for c in word) or named or lower in NUMBER_WORDS or lower in MONTHS) and not (
                {_exact(lower), _exact(lower).removesuffix("s")} & held
            ):
                missing.append(word)
    return list(dict.fromkeys(missing))


def _exact(word: str) -> str:
    return word.replace("’", "'").removesuffix("'s")


@dataclass(frozen=True)
class Verdict:
    """One generated sentence against the evidence sentence closest to it."""

    sentence: str
    closest: Sentence | None
    covered: float  # share of its content words that sentence holds
    similar: float  # cosine between the two
    missing: tuple[str, ...]  # names, numbers and dates the evidence lacks

    @property
    def supported(self) -> bool:
        return not self.missing and self.covered >= MIN_COVERED and self.similar >= MIN_SIMILAR

    def why(self) -> str:
        if self.missing:
            return f"names what the evidence does not contain: {', '.join(self.missing[:8])}"
        parts = []
        if self.covered < MIN_COVERED:
            parts.append(f"no evidence sentence holds its words (best {self.covered:.2f} < {MIN_COVERED})")
        if self.similar < MIN_SIMILAR:
            parts.append(f"none means the same (closest {self.similar:.2f} < {MIN_SIMILAR})")
        return "; ".join(parts)


def verdicts(text: str, sentences: Sequence[Sentence], embedder=None) -> list[Verdict]:
    """Each sentence of ``text`` checked against the evidence sentence that covers it best."""
    held = "\n".join(dict.fromkeys(s.evidence.chunk.text for s in sentences))
    lines = [line.strip() for line in _SENTENCES.split(text) if len(WORD.findall(line)) >= 2]
    if not lines or not sentences:
        return [Verdict(line, None, 0.0, 0.0, tuple(unsupported_terms(line, held))) for line in lines]
    evidence_words = [set(content_words(s.text)) for s in sentences]
    similar = np.zeros((len(lines), len(sentences)))
    if embedder is not None:
        vectors = embedder.encode([*lines, *(s.text for s in sentences)])
        similar = vectors[: len(lines)] @ vectors[len(lines) :].T
    out = []
    for n, line in enumerate(lines):
        words = set(content_words(line))
        shares = [len(words & held_words) / max(1, len(words)) for held_words in evidence_words]
        closeness = [shares[j] + (similar[n, j] if embedder is not None else 0.0) for j in range(len(sentences))]
        j = int(np.argmax(closeness))
        cosine = float(similar[n, j]) if embedder is not None else 1.0  # without an embedder: words alone
        out.append(Verdict(line, sentences[j], shares[j], cosine, tuple(unsupported_terms(line, held))))
    return out


def check(
    text: str,
    evidence: Sequence[Evidence],
    *,
    embedder=None,
    text_of: TextOf | None = None,
    fallback: Callable[[], Reading] | None = None,
) -> Reading:
    """A generated answer shown only where every sentence of it is supported; the supported sentences alone
    when some are not; otherwise ``fallback`` (the documents' sentence) or a decline, with the reason."""
    sentences = split_sentences(evidence, text_of)
    checked = verdicts(text, sentences, embedder)
    kept = [v for v in checked if v.supported]
    failed = [v for v in checked if not v.supported]
    if kept and not failed:
        cited = tuple(v.closest.citation() for v in kept if v.closest)
        return Reading(text, "generate", True, cited[0] if cited else None, citations=cited)
    reason = f"the generated answer {failed[0].why()}" if failed else "the generator wrote nothing"
    if kept:  # a long answer keeps the sentences the evidence supports; what was left out is recorded
        shown = " ".join(v.sentence for v in kept)
        cited = tuple(v.closest.citation() for v in kept if v.closest)
        return Reading(shown, "generate", True, cited[0], f"left out sentences: {reason}", text, cited)
    if fallback is not None:
        read = fallback()
        return Reading(
            read.text, read.path, read.supported, read.citation, f"{reason}; the documents' sentence is shown",
            text, read.citations, read.support,
        )  # fmt: skip
    closest = checked[0].closest if checked else None
    return Reading(decline(closest, NOT_SUPPORTED), "generate", False, None, reason, proposed=text)
