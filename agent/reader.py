"""The reader: an answer read out of the evidence, cited, or declined.

A small generator handed good passages still writes names the passages do
not hold. So for a question with a short answer the reader picks the
sentences that answer it among the retrieved passages, proposes candidate
answers taken verbatim from them, ranks those with the model's likelihood
(the prompt read once, the candidates scored as one batch), and cites the
sentence the answer came from. Anything shown as an answer is checked:
names, numbers and dates it states must occur in the evidence, otherwise the
answer is withheld and the closest passage is shown instead. When nothing
in the evidence supports an answer well enough, the reader says so.

Long answers (summaries, "what did X say about Y") are generated from the
best passages by the generator, then checked and cited the same way.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from agent import programs
from agent.chat import chat_prompt, end_of_turn_ids
from agent.choices import READERS
from agent.memory.decoding import score_continuations
from agent.models import LoadedModel
from agent.retrieval import Evidence

# A best sentence covering less of the question's weight than this holds no answer: chosen on a
# dev split of L-Eval NQ (answerable questions vs. the same questions asked of another document).
MIN_SUPPORT = 0.4
SENTENCES_READ = 6  # the best sentences candidates are drawn from and the model reads
MAX_CANDIDATES = 24


def _set(words: str) -> frozenset[str]:
    return frozenset(words.split())


_SHORT = re.compile(  # anywhere: search-style questions put the topic first ("handmaid's tale how many ...")
    r"\b(who|whom|whose|when|where|which|what\s+(year|date|day|month|time|age|percentage|number|is\s+the\s+name|"
    r"was\s+the\s+name|are\s+the\s+names|city|country|team|company)|how\s+(many|much|long|old|far|tall|big|large)|"
    r"in\s+(what|which)|name\s+the)\b",
    re.IGNORECASE,
)
_LONG = re.compile(  # composed answers (QMSum-style "what did X say about Y"), whatever question word they hold
    r"\b(summari[sz]e|discuss\w*|describe|explain|why|how\s+(did|does|do|is|are|was|were)|what\s+(did|was\s+said)|"
    r"talk\w*\s+about|opinions?|think|thought|decid\w*|decision|agree\w*|propos\w*|suggest\w*)\b",
    re.IGNORECASE,
)
_WANTS_NUMBER = re.compile(
    r"\b(how\s+(many|much|long|old|far|tall|big|large)|when|what\s+(year|date|day|month|time|age|percentage|number)|"
    r"in\s+what\s+year)\b",
    re.IGNORECASE,
)
_WANTS_DATE = re.compile(r"\b(when|what\s+(year|date|day|month)|in\s+what\s+year)\b", re.IGNORECASE)
_WANTS_NAME = re.compile(r"\s*(who|whom|whose|where)\b", re.IGNORECASE)
_COUNTED = re.compile(r"\bhow\s+(?:many|much)\s+(\w+)", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)?")
# Sentence ends, blank lines and block-level tags (L-Eval keeps Wikipedia's); a single newline is line wrapping.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z0-9\"'(<\[])|\n\s*\n|(?=<(?:P|Tr|Li|H\d|Td|Th|Dd)>)")
_PRONOUN_START = re.compile(r"^(it|its|he|she|his|her|they|their|this|these|there)\b", re.IGNORECASE)
_NUMBER_WORDS = _set(
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen "
    "eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million billion"
)
_MONTHS = _set("january february march april may june july august september october november december")
_MONTH = "|".join(sorted(_MONTHS))
_COUNT = "|".join(sorted(_NUMBER_WORDS))
_NUMBER = re.compile(
    rf"\b(?:\d{{1,2}}\s+(?:{_MONTH})\s*,?\s*\d{{4}}|(?:{_MONTH})\s+\d{{1,2}}\s*,?\s*\d{{4}}|(?:{_MONTH})\s+\d{{4}}"
    rf"|\d[\d,.]*(?:\s*%)?(?:\s+(?:hundred|thousand|million|billion))?|(?:{_COUNT})(?:[\s-]+(?:{_COUNT}))*)\b",
    re.IGNORECASE,
)
_DATE = re.compile(rf"\b(?:{_MONTH})\b|^\s*(?:1[0-9]|20)\d\d\s*$", re.IGNORECASE)
_TAG = re.compile(r"</?[A-Za-z][^<>]{0,40}>")
_NAME = re.compile(r"\b[A-Z][\w'’.-]*(?:\s+(?:of|the|de|van|von|da|and|&)?\s*[A-Z][\w'’.-]*)*")
STOPWORDS = _set(
    "a an the of in on at to for from by with and or but is are was were be been being do does did has have had "
    "it its this that these those there their they them he she his her him we our you your i me my what which who "
    "whom whose when where why how many much as into about over under after before than then so not no yes can "
    "could would should will shall may might must also if up out one first last name names"
)
_CASUAL = _set("the a an i he she it we they this that there in on at of and but or if when")


@dataclass(frozen=True)
class Citation:
    """Where an answer stands in the documents: the chunk, its document and the sentence's characters."""

    chunk_id: str
    doc_id: str
    char_start: int
    char_end: int
    quote: str

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Reading:
    """What the reader shows, how it got there, and why when it withheld an answer."""

    text: str
    path: str  # "extract" or "generate"
    supported: bool
    citation: Citation | None
    reason: str | None = None  # why the answer is not shown as fact
    proposed: str | None = None  # the answer the model proposed, when it was withheld


@dataclass(frozen=True)
class Sentence:
    text: str
    evidence: Evidence
    rank: int  # the passage's retrieval rank, 0 = best
    start: int  # characters in the passage
    end: int

    def citation(self) -> Citation:
        chunk = self.evidence.chunk
        start = chunk.char_start + self.start
        return Citation(chunk.id, chunk.doc_id, start, start + (self.end - self.start), self.text)


# questions ---------------------------------------------------------------------
def choose_path(question: str, reader: str = "auto") -> str:
    """``extract`` for questions with a short answer (who, when, how many...), ``generate`` otherwise."""
    if reader not in READERS:
        raise ValueError(f"unknown reader {reader!r}; choose one of {', '.join(READERS)}")
    if reader != "auto":
        return reader
    return "extract" if _SHORT.search(question) and not _LONG.search(question) else "generate"


def content_words(text: str) -> list[str]:
    return [_stem(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


def _stem(word: str) -> str:
    """Words cut to four letters: built, builder and building meet (crude, but it needs no lexicon)."""
    return word.replace("’", "'").removesuffix("'s")[:4]


# sentences ---------------------------------------------------------------------
def split_sentences(evidence: Sequence[Evidence]) -> list[Sentence]:
    """Every sentence of the passages, best-ranked passage first (``evidence`` is in any order)."""
    ranked = sorted(range(len(evidence)), key=lambda i: -evidence[i].score)
    out: list[Sentence] = []
    for rank, i in enumerate(ranked):
        text, start = evidence[i].chunk.text, 0
        for cut in [*(m.start() for m in _SENTENCE_END.finditer(text)), len(text)]:
            piece = text[start:cut]
            stripped = piece.strip()
            if len(_WORD.findall(stripped)) >= 3 and not stripped.startswith("#"):  # headings answer nothing
                lead = start + piece.index(stripped)
                out.append(Sentence(stripped, evidence[i], rank, lead, lead + len(stripped)))
            start = max(start, cut)
    return out


def rank_sentences(question: str, sentences: Sequence[Sentence]) -> list[tuple[float, Sentence]]:
    """Sentences by the share of the question's words they hold (rarer words weigh more), then by passage rank."""
    asked = set(content_words(question))
    if not asked or not sentences:
        return [(0.0, s) for s in sentences]
    holds = [set(content_words(s.text)) for s in sentences]
    frequency = Counter(w for words in holds for w in words & asked)
    weight = {w: math.log(1 + len(sentences) / (1 + frequency[w])) for w in asked}
    counted = _COUNTED.search(question)
    if counted and _stem(counted.group(1).lower()) in weight:  # "how many boats": the answer counts boats
        weight[_stem(counted.group(1).lower())] *= 2
    total = sum(weight.values())
    own = [sum(weight[w] for w in asked & words) / total for words in holds]
    scored = []
    for i, s in enumerate(sentences):
        score = own[i]
        follows = i > 0 and sentences[i - 1].evidence is s.evidence
        if follows and _PRONOUN_START.match(s.text):  # "Its builder was ...": it continues the sentence before
            score = max(score, 0.9 * own[i - 1])
        scored.append((score, s))
    return sorted(scored, key=lambda item: (-item[0], item[1].rank))


# candidates --------------------------------------------------------------------
def candidates(question: str, sentences: Sequence[Sentence]) -> list[tuple[str, Sentence]]:
    """Answer-sized spans of ``sentences`` that fit the question's kind and do not just repeat it."""
    asked = set(content_words(question))
    wants_number = _WANTS_NUMBER.search(question)
    wants_date = _WANTS_DATE.search(question)
    wants_name = _WANTS_NAME.match(question)
    found: list[tuple[str, Sentence]] = []
    seen: set[str] = set()
    for sentence in sentences:
        spans = [] if wants_name else _matches(_NUMBER, sentence.text)
        if not wants_number:
            spans += [x for x in _matches(_NAME, sentence.text) if len(x) > 1]
        for span in spans:
            span = span.strip(" ,.;:-")
            words = content_words(span)
            key = " ".join(words)
            if not words or key in seen or set(words) <= asked or span.startswith("<"):
                continue
            seen.add(key)
            found.append((span, sentence))
    if wants_number:  # a count is not a date, a date is not a count (unless nothing else fits)
        found = [(x, s) for x, s in found if bool(_DATE.search(x)) == bool(wants_date)] or found
    counted = _COUNTED.search(question)
    if counted:  # "how many boats": a number that counts boats ("forty boats"), where the evidence has one
        noun = _stem(counted.group(1).lower())
        found = [(x, s) for x, s in found if _counts(x, s.text, noun)] or found
    return found[:MAX_CANDIDATES]


def _counts(number: str, sentence: str, noun: str) -> bool:
    """``number`` stands right before ``noun`` in ``sentence`` (at most one word between: "forty fishing boats")."""
    for m in re.finditer(re.escape(number), sentence):
        after = _WORD.findall(sentence[m.end() :])[:2]
        if any(_stem(w.lower()) == noun for w in after):
            return True
    return False


def _matches(pattern: re.Pattern, text: str) -> list[str]:
    """``pattern``'s matches in ``text`` outside markup tags (L-Eval keeps Wikipedia's HTML)."""
    markup = [m.span() for m in _TAG.finditer(text)]
    return [m.group(0) for m in pattern.finditer(text) if not any(a <= m.start() < b for a, b in markup)]


# support -----------------------------------------------------------------------
_SENTENCES = re.compile(r"(?<=[.!?:;])\s+|\n+")  # how an answer splits into sentences


def unsupported_terms(answer: str, evidence_text: str) -> list[str]:
    """Names, numbers and dates in ``answer`` that the evidence does not contain."""
    held = {_exact(w) for w in _WORD.findall(evidence_text.lower())}  # whole words: "HandmaiDad" is no "handmaid"
    missing: list[str] = []
    for sentence in _SENTENCES.split(answer):
        for i, word in enumerate(_WORD.findall(sentence)):
            lower = word.lower()
            named = word[0].isupper() and i > 0 and lower not in _CASUAL  # a sentence's first word is no evidence
            if (any(c.isdigit() for c in word) or named or lower in _NUMBER_WORDS or lower in _MONTHS) and not (
                {_exact(lower), _exact(lower).removesuffix("s")} & held
            ):
                missing.append(word)
    return list(dict.fromkeys(missing))


def _exact(word: str) -> str:
    return word.replace("’", "'").removesuffix("'s")


def best_sentence_for(answer: str, sentences: Sequence[Sentence]) -> Sentence | None:
    """The sentence sharing the most of the answer's words (a passage rank breaks ties)."""
    words = set(content_words(answer))
    if not sentences:
        return None
    return max(sentences, key=lambda s: (len(words & set(content_words(s.text))), -s.rank))


NOT_ANSWERED = "The documents do not answer this question."
NOT_SUPPORTED = "The answer the model wrote names things the documents do not contain, so it is not shown."


def decline(closest: Sentence | None, why: str = NOT_ANSWERED) -> str:
    if closest is None:
        return why
    cited = closest.citation()
    quote = " ".join(cited.quote.split())
    return f'{why} The closest passage is {cited.chunk_id} (characters {cited.char_start}-{cited.char_end}): "{quote}"'


# reading -----------------------------------------------------------------------
def extract(
    lm: LoadedModel, question: str, evidence: Sequence[Evidence], *, min_support: float = MIN_SUPPORT
) -> Reading:
    """A short answer copied from the best sentences, ranked by the model, cited; or a decline."""
    ranked = rank_sentences(question, split_sentences(evidence))
    if not ranked:
        return Reading(decline(None), "extract", False, None, "no evidence was retrieved")
    support, best = ranked[0]
    if support < min_support:
        reason = f"no passage holds enough of the question (best sentence covers {support:.2f} < {min_support})"
        return Reading(decline(best), "extract", False, best.citation(), reason)
    top = [s for _, s in ranked[:SENTENCES_READ]]
    options = candidates(question, top)
    if not options:
        return Reading(best.text, "extract", True, best.citation())  # no short span fits: the sentence answers
    prompt = chat_prompt(
        lm.tokenizer,
        programs.PROMPTS["short_answer"].format(
            question=question, evidence=programs.format_evidence([s.text for s in top])
        ),
    )
    end = end_of_turn_ids(lm.tokenizer)
    ids = [lm.tokenizer(span, add_special_tokens=False)["input_ids"] + end for span, _ in options]
    scores = score_continuations(lm, None, prompt, ids)
    # Mean log-probability per token alone: adding the sentence's rank or support as a prior
    # picked fewer right answers on L-Eval NQ dev (6 of 41 vs 1-3; docs/evaluation.md).
    value = [sum(lp) / max(1, len(lp)) for lp in scores]
    chosen = max(range(len(options)), key=value.__getitem__)
    span, sentence = options[chosen]
    return Reading(span, "extract", True, sentence.citation())


def check(text: str, path: str, evidence: Sequence[Evidence]) -> Reading:
    """A generated answer shown only when what it names is in the evidence; cited by its closest sentence."""
    sentences = split_sentences(evidence)
    closest = best_sentence_for(text, sentences)
    citation = closest.citation() if closest else None
    held = "\n".join(e.chunk.text for e in evidence)
    missing = unsupported_terms(text, held)
    if not text.strip():
        return Reading(decline(closest), path, False, citation, "the generator wrote nothing")
    if missing:
        reason = f"names what the evidence does not contain: {', '.join(missing[:8])}"
        kept = [line for line in _SENTENCES.split(text) if line.strip() and not unsupported_terms(line, held)]
        if kept:  # a long answer keeps the sentences the evidence supports; what was left out is recorded
            shown = " ".join(line.strip() for line in kept)
            closest = best_sentence_for(shown, sentences)
            cited = closest.citation() if closest else None
            return Reading(shown, path, True, cited, f"left out sentences that {reason}", proposed=text)
        return Reading(decline(closest, NOT_SUPPORTED), path, False, citation, reason, proposed=text)
    return Reading(text, path, True, citation)
