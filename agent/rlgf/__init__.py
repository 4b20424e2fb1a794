"""RLGF: the clue writer learns which evidence spans lead the generator to the right answer.

For each feedback query the document's memory writes K sampled span sets
(the ``recall_spans`` program, with the current adapter); each is used to
retrieve, and scored by generation feedback: the generator's mean per-token
log-likelihood of the gold (or corrected) answer given what that candidate
retrieved, plus evidence recall@k where gold spans exist. The best and worst
candidates make a preference pair when their rewards differ by a margin.

A LoRA adapter on the memory model is then trained with the DPO loss. The
prompt is the frozen compressed memory (a fixed KV prefix, not text) plus the
clue prompt; the reference policy is the same model with the adapter off. A
supervised warm start on gold evidence text may come first. A gate compares
the new adapter with the promoted one on held-out feedback before promotion.
"""

from agent.rlgf.corpus import Corpus, Documents, Example, Progress, completion_ids, spans_prompt
from agent.rlgf.gate import Decision, evaluate, gate
from agent.rlgf.rewards import Candidate, RewardWeights, answer_loglik, recall_of, retrieve_with, score
from agent.rlgf.sampling import (
    SAMPLE_TEMPERATURE,
    Pair,
    PreferenceStats,
    make_pairs,
    preference_data,
    sample_candidates,
)
from agent.rlgf.training import TrainConfig, TrainResult, dpo_loss, evidence_text, gold_spans, train

__all__ = [
    "SAMPLE_TEMPERATURE",
    "Candidate",
    "Corpus",
    "Decision",
    "Documents",
    "Example",
    "Pair",
    "PreferenceStats",
    "Progress",
    "RewardWeights",
    "TrainConfig",
    "TrainResult",
    "answer_loglik",
    "completion_ids",
    "dpo_loss",
    "evaluate",
    "evidence_text",
    "gate",
    "gold_spans",
    "make_pairs",
    "preference_data",
    "recall_of",
    "retrieve_with",
    "sample_candidates",
    "score",
    "spans_prompt",
    "train",
]
