"""DPO (with an optional supervised warm start) on the clue adapter, resumable."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from agent import adapters, programs
from agent.memory.decoding import logprobs_tensor
from agent.models import LoadedModel
from agent.rlgf.corpus import Corpus, Example, Progress, completion_ids, spans_prompt
from agent.rlgf.sampling import Pair


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
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
    corpus: Corpus,
    pairs: Sequence[Pair],
    config: TrainConfig,
    *,
    sft: Sequence[tuple[Example, str]] = (),
    checkpoint: Path | None = None,
    on_progress: Progress | None = None,
) -> TrainResult:
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
                loss = _sft_loss(corpus, *sft[i])
            else:
                if i not in refs:  # computed once per pair
                    refs[i] = _reference(corpus, pairs[i])
                loss = _dpo_loss(corpus, pairs[i], refs[i], config.dpo_beta)
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


def _sft_loss(corpus: Corpus, example: Example, target: str) -> torch.Tensor:
    """Mean negative log-likelihood of the target spans after the memory and the spans prompt."""
    lm = corpus.lm
    memory, prompt = corpus.memory(example.doc_id), spans_prompt(lm, example.question)
    return -logprobs_tensor(lm, memory, prompt, completion_ids(lm, target)).mean()


def _pair_logprobs(corpus: Corpus, pair: Pair) -> tuple[torch.Tensor, torch.Tensor]:
    lm = corpus.lm
    memory, prompt = corpus.memory(pair.example.doc_id), spans_prompt(lm, pair.example.question)
    chosen, rejected = completion_ids(lm, pair.chosen), completion_ids(lm, pair.rejected)
    return logprobs_tensor(lm, memory, prompt, chosen).sum(), logprobs_tensor(lm, memory, prompt, rejected).sum()


def _reference(corpus: Corpus, pair: Pair) -> tuple[float, float]:
    """The pair's log-likelihoods under the reference policy: the same model with the adapter off."""
    with torch.no_grad(), adapters.active(corpus.lm, False):
        chosen, rejected = _pair_logprobs(corpus, pair)
    return float(chosen), float(rejected)


def _dpo_loss(corpus: Corpus, pair: Pair, reference: tuple[float, float], beta: float) -> torch.Tensor:
    chosen, rejected = _pair_logprobs(corpus, pair)
    return dpo_loss(chosen, rejected, torch.tensor(reference[0]), torch.tensor(reference[1]), beta)


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
            optimizer.state[param] = {
                "step": torch.tensor(float(meta["step"])),
                "exp_avg": tensors[f"exp_avg.{key}"],
                "exp_avg_sq": tensors[f"exp_avg_sq.{key}"],
            }
    result.losses = json.loads(meta["losses"])
    result.resumed_from = result.steps = int(meta["step"])
    return result.steps


# gate -------------------------------------------------------------------------
