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

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from agent import adapters, programs
from agent.backends import LocalBackend
from agent.chat import chat_prompt, end_of_turn_ids
from agent.memory.decoding import logprobs_tensor, token_logprobs
from agent.memory.types import GlobalMemory
from agent.metrics import gold_chunk_ids, hit_at_k, recall_at_k
from agent.models import LoadedModel
from agent.retrieval import DEFAULT_FUSION, Embedder, Evidence, retrieve
from store.vectors import Chunk, VectorIndex

Progress = Callable[[str, int, int], None]
SAMPLE_TEMPERATURE = 0.7  # candidate clue sets: diverse enough to differ, still mostly on topic (docs/benchmarks.md)
# The fusion a trained span writer is rewarded, gated and then queried with: its spans search
# as one quote weighing twice the question, so what it learns is not diluted by the base
# model's other clues. Chosen on QMSum train for the highest ceiling of span writing (gold
# spans +0.056 recall@5 over rag, against +0.002 with DEFAULT_FUSION; docs/benchmarks.md).
ADAPTER_FUSION = "anchored_spans2_share1"


@dataclass(frozen=True)
class Example:
    """One piece of feedback: a question about a document and the answer it should get."""

    doc_id: str
    question: str
    answer: str
    evidence: tuple[tuple[int, int], ...] = ()  # gold character spans of the document, where known


class Corpus(Protocol):
    """What RLGF needs of the documents feedback is about."""

    lm: LoadedModel
    embedder: Embedder
    index: VectorIndex
    k: int
    fusion: str  # how clues and question are fused, as in agent.retrieval.FUSIONS

    def memory(self, doc_id: str) -> GlobalMemory: ...
    def kb(self, doc_id: str) -> str: ...
    def chunks(self, doc_id: str) -> list[Chunk]: ...


@dataclass
class Documents:
    """A ``Corpus`` over documents this process holds: memories, chunks and the knowledge base of each."""

    lm: LoadedModel
    embedder: Embedder
    index: VectorIndex
    k: int
    fusion: str = DEFAULT_FUSION  # the pipeline's, so rewards and the gate see what queries will
    memories: dict[str, GlobalMemory] = field(default_factory=dict)
    kbs: dict[str, str] = field(default_factory=dict)
    chunk_lists: dict[str, list[Chunk]] = field(default_factory=dict)

    def add(self, doc_id: str, kb: str, memory: GlobalMemory, chunks: list[Chunk]) -> None:
        self.memories[doc_id], self.kbs[doc_id], self.chunk_lists[doc_id] = memory, kb, chunks

    def memory(self, doc_id: str) -> GlobalMemory:
        return self.memories[doc_id]

    def kb(self, doc_id: str) -> str:
        return self.kbs[doc_id]

    def chunks(self, doc_id: str) -> list[Chunk]:
        return self.chunk_lists[doc_id]


# rewards ----------------------------------------------------------------------
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


def spans_prompt(lm: LoadedModel, question: str) -> list[int]:
    """The ``recall_spans`` program's prompt, as the adapter sees it after the memory."""
    return chat_prompt(lm.tokenizer, programs.PROMPTS["recall_spans"].format(question=question))


def completion_ids(lm: LoadedModel, text: str) -> list[int]:
    """A reply's tokens followed by the end-of-turn token, so the model also learns where to stop."""
    ids = lm.tokenizer(text.strip(), add_special_tokens=False)["input_ids"]
    return [*ids, *end_of_turn_ids(lm.tokenizer)]


def retrieve_with(
    corpus: Corpus, example: Example, spans: Sequence[str] = (), hints: Sequence[str] = ()
) -> list[Evidence]:
    """The corpus's fused retrieval with these span lines (one memory's quote) and other clues."""
    return retrieve(corpus.index, corpus.embedder, corpus.kb(example.doc_id), example.question, list(hints),
                    spans=["\n".join(spans)], k=corpus.k, fusion=corpus.fusion)  # fmt: skip


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


def sample_candidates(corpus: Corpus, example: Example, n: int, *, temperature: float, seed: int,
                      max_tokens: int = 96) -> list[str]:  # fmt: skip
    """``n`` span sets sampled from the memory with the current adapter (reproducible for a seed)."""
    backend = LocalBackend(corpus.lm, corpus.memory(example.doc_id), adapter=True, seed=seed)
    texts = []
    for _ in range(n):
        state = programs.execute(programs.recall_spans, backend, question=example.question, heat=temperature,
                                 max_tokens=max_tokens)  # fmt: skip
        texts.append(state["clues"])
    return texts


@dataclass(frozen=True)
class Pair:
    example: Example
    chosen: str
    rejected: str
    gap: float


def make_pairs(scored: Sequence[tuple[Example, Sequence[Candidate]]], margin: float) -> list[Pair]:
    """(best, worst) of each example's candidates, kept where the reward gap exceeds ``margin``."""
    pairs = []
    for example, candidates in scored:
        if len(candidates) < 2:
            continue
        ranked = sorted(candidates, key=lambda c: c.reward, reverse=True)
        best, worst = ranked[0], ranked[-1]
        if best.reward - worst.reward > margin and best.text.strip() != worst.text.strip():
            pairs.append(Pair(example, best.text, worst.text, best.reward - worst.reward))
    return pairs


@dataclass
class PreferenceStats:
    examples: int = 0
    candidates: int = 0
    pairs: int = 0
    seconds: float = 0.0


def preference_data(
    corpus: Corpus, examples: Sequence[Example], *, n: int = 4, temperature: float = SAMPLE_TEMPERATURE,
    margin: float = 0.05, weights: RewardWeights = RewardWeights(), seed: int = 0, budget_s: float | None = None,
    on_progress: Progress | None = None,
) -> tuple[list[Pair], PreferenceStats]:  # fmt: skip
    """Sample, score and pair candidates for each example (stops early at ``budget_s``)."""
    started, stats, scored = time.monotonic(), PreferenceStats(), []
    cache: dict = {}
    for i, example in enumerate(examples):
        if budget_s is not None and time.monotonic() - started > budget_s:
            break
        if on_progress:
            on_progress("sampling clues", i, len(examples))
        texts = sample_candidates(corpus, example, n, temperature=temperature, seed=seed + 1000 * i)
        scored.append((example, [score(corpus, example, t, weights, cache) for t in texts]))
        stats.examples += 1
        stats.candidates += len(texts)
    pairs = make_pairs(scored, margin)
    stats.pairs, stats.seconds = len(pairs), time.monotonic() - started
    return pairs, stats


# training ---------------------------------------------------------------------
def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> torch.Tensor:  # fmt: skip
    """-log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))), the DPO objective (Rafailov et al.)."""
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -F.logsigmoid(beta * margin).mean()


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 40
    sft_steps: int = 0  # supervised warm start on gold evidence text, before preference steps
    lr: float = 5e-4
    dpo_beta: float = 0.1
    seed: int = 0
    budget_s: float | None = None  # stop (and keep what was learned) after this long
    checkpoint_every: int = 10


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    resumed_from: int = 0
    stopped_early: bool = False


def evidence_text(document: str, example: Example, max_chars: int = 600) -> str:
    """Gold evidence as the clue writer should have quoted it (the warm start's target)."""
    return "\n".join(document[s:e].strip() for s, e in example.evidence)[:max_chars].strip()


def gold_spans(document: str, example: Example) -> list[str]:
    """What a perfect span writer would write: the gold evidence, parsed as the model's spans are."""
    return programs.clean_lines(evidence_text(document, example), example.question)


def train(
    corpus: Corpus, pairs: Sequence[Pair], config: TrainConfig, *,
    sft: Sequence[tuple[Example, str]] = (), checkpoint: Path | None = None, on_progress: Progress | None = None,
) -> TrainResult:  # fmt: skip
    """Train the clue adapter in place: ``sft_steps`` on (example, target text), then DPO on ``pairs``.

    Seeded and resumable: with ``checkpoint``, weights, optimizer moments and
    the step are saved every ``checkpoint_every`` steps and picked up again.
    """
    lm = corpus.lm
    adapters.ensure_slot(lm)
    torch.manual_seed(config.seed)
    params = adapters.trainable_parameters(lm)
    optimizer = torch.optim.AdamW(params.values(), lr=config.lr, weight_decay=0.0)
    result = TrainResult()
    start = _resume(checkpoint, lm, optimizer, config, result) if checkpoint else 0
    if start == 0:
        adapters.clear(lm, config.seed)
    adapters.mark(lm, "training")
    plan = _schedule(len(sft) if config.sft_steps else 0, config.sft_steps, len(pairs), config.steps, config.seed)
    refs: dict[int, tuple[float, float]] = {}
    began = time.monotonic()
    lm.model.train(False)  # no dropout; gradients still flow
    for step in range(start, len(plan)):
        if config.budget_s is not None and time.monotonic() - began > config.budget_s:
            result.stopped_early = True
            break
        phase, i = plan[step]
        with torch.enable_grad(), adapters.active(lm, True):
            if phase == "sft":
                example, target = sft[i]
                ids = completion_ids(lm, target)
                loss = -logprobs_tensor(
                    lm, corpus.memory(example.doc_id), spans_prompt(lm, example.question), ids
                ).mean()
            else:
                pair = pairs[i]
                memory, prompt = corpus.memory(pair.example.doc_id), spans_prompt(lm, pair.example.question)
                chosen, rejected = completion_ids(lm, pair.chosen), completion_ids(lm, pair.rejected)
                if i not in refs:
                    with torch.no_grad(), adapters.active(lm, False):
                        refs[i] = (float(logprobs_tensor(lm, memory, prompt, chosen).sum()),
                                   float(logprobs_tensor(lm, memory, prompt, rejected).sum()))  # fmt: skip
                loss = dpo_loss(logprobs_tensor(lm, memory, prompt, chosen).sum(),
                                logprobs_tensor(lm, memory, prompt, rejected).sum(),
                                torch.tensor(refs[i][0]), torch.tensor(refs[i][1]), config.dpo_beta)  # fmt: skip
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
            optimizer.step()
        result.losses.append(float(loss.detach()))
        result.steps = step + 1
        if on_progress:
            on_progress(f"training ({phase}) loss {result.losses[-1]:.3f}", step + 1, len(plan))
        if checkpoint and (step + 1) % config.checkpoint_every == 0:
            _save(checkpoint, lm, optimizer, config, result)
    if checkpoint:
        _save(checkpoint, lm, optimizer, config, result)
    result.seconds = time.monotonic() - began
    return result


def _schedule(n_sft: int, sft_steps: int, n_pairs: int, steps: int, seed: int) -> list[tuple[str, int]]:
    """Which example each step uses: shuffled epochs, warm start first."""
    rng = random.Random(seed)
    plan: list[tuple[str, int]] = []
    for phase, size, count in (("sft", n_sft, sft_steps), ("dpo", n_pairs, steps)):
        order: list[int] = []
        while size and len(order) < count:
            epoch = list(range(size))
            rng.shuffle(epoch)
            order += epoch
        plan += [(phase, i) for i in order[:count]]
    return plan


def _save(path: Path, lm: LoadedModel, optimizer: torch.optim.Optimizer, config: TrainConfig, result: TrainResult):
    tensors = {f"w.{n}": t for n, t in adapters.state(lm).items()}
    names = {id(p): adapters.portable_name(n) for n, p in adapters.trainable_parameters(lm).items()}
    for param, moments in optimizer.state.items():
        for key in ("exp_avg", "exp_avg_sq"):
            tensors[f"{key}.{names[id(param)]}"] = moments[key].detach().cpu().contiguous()
    meta = {"config": json.dumps(asdict(config)), "step": str(result.steps), "losses": json.dumps(result.losses)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)


def _resume(path: Path, lm: LoadedModel, optimizer, config: TrainConfig, result: TrainResult) -> int:
    if not path.exists():
        return 0
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
    saved = json.loads(meta["config"])
    same = {k: v for k, v in asdict(config).items() if k != "budget_s"}
    if {k: v for k, v in saved.items() if k != "budget_s"} != same:
        return 0  # another run's checkpoint: start afresh
    tensors = load_file(str(path))
    adapters.load(lm, {n[2:]: t for n, t in tensors.items() if n.startswith("w.")}, "training")
    for name, param in adapters.trainable_parameters(lm).items():
        key = adapters.portable_name(name)
        if f"exp_avg.{key}" in tensors:
            optimizer.state[param] = {"step": torch.tensor(float(meta["step"])), "exp_avg": tensors[f"exp_avg.{key}"],
                                      "exp_avg_sq": tensors[f"exp_avg_sq.{key}"]}  # fmt: skip
    result.losses = json.loads(meta["losses"])
    result.resumed_from = result.steps = int(meta["step"])
    return result.steps


# gate -------------------------------------------------------------------------
def evaluate(corpus: Corpus, examples: Sequence[Example], *, adapter: bool, loglik: bool = True,
             spans_only: bool = False, hints: dict | None = None,
             on_progress: Progress | None = None) -> dict[str, float]:  # fmt: skip
    """Recall@k and hit@k of the pipeline's fused retrieval, and the answer's log-likelihood, per example mean.

    ``spans_only`` retrieves with the question and the evidence spans alone (the
    program the adapter is trained on), leaving out the base model's other clues.
    ``hints`` keeps those other clues per example between calls: the base model
    writes them greedily, so two writers compared on the same examples share them.
    """
    recalls, hits, logliks = [], [], []
    hints = {} if hints is None else hints
    for i, example in enumerate(examples):
        if on_progress:
            on_progress("evaluating", i, len(examples))
        backend = LocalBackend(corpus.lm, corpus.memory(example.doc_id))
        spans = programs.write_spans(backend, example.question, adapter=adapter)
        if spans_only:
            found = retrieve_with(corpus, example, spans)
        else:
            if example not in hints:
                hints[example] = programs.Clues([], *programs.write_hints(backend, example.question)).hints()
            found = retrieve_with(corpus, example, spans, hints[example])
        gold = gold_chunk_ids(corpus.chunks(example.doc_id), list(example.evidence))
        if gold:
            ids = [e.chunk.id for e in found]
            recalls.append(recall_at_k(gold, ids, corpus.k))
            hits.append(hit_at_k(gold, ids, corpus.k))
        if loglik:
            logliks.append(answer_loglik(corpus, example, found))
    k = corpus.k
    out = {"n": float(len(examples))}
    if recalls:
        out |= {f"recall@{k}": sum(recalls) / len(recalls), f"hit@{k}": sum(hits) / len(hits)}
    if logliks:
        out["answer_loglik"] = sum(logliks) / len(logliks)
    return out


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def gate(candidate: dict[str, float], current: dict[str, float], *, k: int = 5, margin: float = 0.01,
         loglik_tolerance: float = 0.05) -> Decision:  # fmt: skip
    """Promote when recall@k (or, without gold spans, the answer log-likelihood) gains ``margin``
    and the answer log-likelihood does not fall by more than ``loglik_tolerance``."""
    key = f"recall@{k}" if f"recall@{k}" in candidate and f"recall@{k}" in current else "answer_loglik"
    if key not in candidate or key not in current:
        return Decision(False, "no held-out metric to compare")
    gain = candidate[key] - current[key]
    if gain < margin:
        return Decision(False, f"{key} {candidate[key]:.4f} vs {current[key]:.4f}: gain {gain:+.4f} < margin {margin}")
    drop = current.get("answer_loglik", 0.0) - candidate.get("answer_loglik", 0.0)
    if key != "answer_loglik" and drop > loglik_tolerance:
        return Decision(False, f"{key} gains {gain:+.4f} but answer log-likelihood falls {drop:.4f}")
    return Decision(True, f"{key} {candidate[key]:.4f} vs {current[key]:.4f}: gain {gain:+.4f} >= margin {margin}")
