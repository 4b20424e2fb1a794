"""Generation feedback as a reward: how well what a span set retrieved lets the generator answer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent import adapters, programs
from agent.chat import chat_prompt
from agent.memory.decoding import token_logprobs
from agent.metrics import gold_chunk_ids, recall_at_k
from agent.retrieval import Evidence, retrieve
from agent.rlgf.corpus import Corpus, Example, completion_ids


@dataclass(frozen=True)
class RewardWeights:
    recall: float = 1.0  # evidence recall@k, in [0, 1]
    loglik: float = 0.2  # mean per-token log-likelihood of the answer (about -1 to -5 nats)


@dataclass
class Candidate:
    text: str
    recall: float | None
    loglik: float | None
    reward: float


def retrieve_with(
    corpus: Corpus, example: Example, spans: Sequence[str] = (), hints: Sequence[str] = ()
) -> list[Evidence]:
    """The corpus's fused retrieval with these span lines (one memory's quote) and other clues."""
    return retrieve(
        corpus.index,
        corpus.embedder,
        corpus.kb(example.doc_id),
        example.question,
        list(hints),
        spans=["\n".join(spans)],
        k=corpus.k,
        fusion=corpus.fusion,
    )


def answer_loglik(corpus: Corpus, example: Example, evidence: Sequence[Evidence]) -> float:
    """Mean log-probability per token of the gold answer, given the evidence, under the generator."""
    lm = corpus.lm
    passages = programs.format_evidence([e.chunk.text for e in evidence])
    prompt = chat_prompt(lm.tokenizer, programs.PROMPTS["answer"].format(question=example.question, evidence=passages))
    target = completion_ids(lm, example.answer)[:96]
    with adapters.active(lm, False):
        scores = token_logprobs(lm, None, prompt, target)
    return sum(scores) / max(1, len(scores))


def recall_of(corpus: Corpus, example: Example, evidence: Sequence[Evidence]) -> float | None:
    gold = gold_chunk_ids(corpus.chunks(example.doc_id), list(example.evidence))
    return recall_at_k(gold, [e.chunk.id for e in evidence], corpus.k) if gold else None


def score(corpus: Corpus, example: Example, text: str, weights: RewardWeights, cache: dict | None = None) -> Candidate:
    """Reward of one candidate span set: retrieve with it, then ask the generator and the gold spans."""
    found = retrieve_with(corpus, example, programs.clean_lines(text, example.question))
    recall = recall_of(corpus, example, found)
    loglik = None
    if weights.loglik:
        key = (example, frozenset(e.chunk.id for e in found))  # candidates that retrieve alike score alike
        cache = {} if cache is None else cache
        if key not in cache:
            cache[key] = answer_loglik(corpus, example, found)
        loglik = cache[key]
    reward = weights.recall * (recall or 0.0) + weights.loglik * (loglik or 0.0)
    return Candidate(text, recall, loglik, reward)
