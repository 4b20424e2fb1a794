"""Evaluation: memorag against standard RAG, memory alone and full context, in one run.

Every mode answers the same questions over the same documents with the same
chunker, embedder, generator and k; only what reaches the generator differs:

    rag      question -> top-k chunks -> answer            (standard RAG)
    memorag  question + memory clues -> fused top-k -> answer
    qa       the compressed memory alone drafts the answer
    full     the document itself, cut in the middle to fit the window -> answer

Memories are cached in the memory store under a key made of the document's
hash and the memory settings, so a second mode or a second run reuses them.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from agent import programs, reader
from agent.backends import LocalBackend, generator_backend
from agent.datasets import Sample, load_kbqa, load_leval, load_longbench, load_longmemeval, load_needle, load_qmsum
from agent.memory.types import GlobalMemory
from agent.metrics import (
    answer_in,
    answer_recall,
    best_of,
    exact_match,
    gold_chunk_ids,
    hit_at_k,
    recall_at_k,
    rouge_l,
    token_f1,
)
from agent.models import LoadedModel
from agent.pipeline import answer, memorize, read, rehydrate, save_memory
from agent.retrieval import (
    DEFAULT_FUSION,
    FUSIONS,
    Embedder,
    chunk_document,
    order_evidence,
    retrieve,
)
from core.settings import Settings, get_settings
from store.errors import MemoryProblem
from store.memories import MemoryNotFound, MemoryStore
from store.vectors import VectorIndex

MODES = ("rag", "memorag", "qa", "full")
LOADERS = {
    "qmsum": load_qmsum,
    "leval": load_leval,
    "longbench": load_longbench,
    "needle": load_needle,
    "kbqa": load_kbqa,
    "longmemeval": load_longmemeval,
}
# LongBench caps answers per task (32-128 tokens); long-form QMSum answers need more room.
ANSWER_TOKENS = {"qmsum": 128, "leval": 64, "longbench": 64, "needle": 32, "kbqa": 64, "longmemeval": 32}
SHORT_ANSWERS = {"qmsum": False, "leval": True, "longbench": True, "needle": True, "kbqa": True, "longmemeval": True}
# The answer-quality rates, under the names the field uses (ALCE's citation precision and recall, RGB's
# negative rejection), each a mean over the questions it is defined on (None: none in the run).
RATES = (
    "right",  # answerable: a gold answer in what was shown
    "citation_recall",  # answerable: a gold answer in the cited sentences
    "citation_precision",  # answerable and shown: a gold answer in the cited sentences
    "answerable_declined",  # answerable: declined or withheld
    "offtopic_declined",  # off-topic (or asked of the wrong document): declined (negative rejection)
    "wrong_shown",  # every question: shown, and not right (an off-topic answer shown is wrong)
    "routed",  # answerable, knowledge-base mode: the answering document among the routed ones
)
CACHE_KB = "_eval"


def load_samples(fmt: str, path: str | Path, limit: int | None = None) -> list[Sample]:
    """The first ``limit`` documents of a file (or essay folder) in format ``fmt``, with a clear error."""
    if fmt not in LOADERS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(LOADERS)}")
    try:
        samples = list(LOADERS[fmt](path, limit=limit))
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a {fmt} file ({type(exc).__name__}: {exc})") from exc
    except (IsADirectoryError, FileNotFoundError) as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from exc
    if not any(s.questions for s in samples):
        raise ValueError(f"{path} holds no questions in the {fmt} format")
    return samples


class _Laps:
    """Seconds spent in each stage, measured from one mark to the next."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}
        self.mark = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.stages[stage], self.mark = now - self.mark, now


@dataclass(frozen=True)
class EvalConfig:
    modes: tuple[str, ...] = MODES
    k: int = 5
    beta: int = 16
    chunk_tokens: int = 256
    overlap: int = 32
    answer_tokens: int = 64
    short_answers: bool = False  # ask for the answer alone (F1-scored sets) instead of a sentence or two
    questions: int | None = None  # most questions per document
    full_tokens: int | None = None  # document budget of `full`; None: the generator's window less the prompt
    fusion: str = DEFAULT_FUSION  # how memorag fuses question and clues (agent.retrieval.FUSIONS)
    evidence_order: str = "document"  # how rag and memorag lay passages out for the generator
    # How rag and memorag answer from their evidence: "none" is the generator's answer as written (unchecked);
    # auto, extract, generate are agent.reader's paths. Each reader is a row ("memorag/auto") on the same evidence.
    readers: tuple[str, ...] = ("none",)
    unanswerable: bool = False  # ask each document's questions of the next document: the answer is not there
    retrieval: str = "hybrid"  # "dense": the embedding alone; "hybrid": BM25 beside it (MEMORAG_RETRIEVAL)
    context: bool = True  # chunks carry their title > headings (False: the bare passage, as before)

    def __post_init__(self) -> None:
        unknown = [m for m in self.modes if m not in MODES]
        if unknown or not self.modes:
            raise ValueError(f"unknown mode(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(MODES)}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {self.fusion!r}; choose from {', '.join(FUSIONS)}")
        order_evidence([], self.evidence_order)  # refuses an unknown order before any work starts
        if self.retrieval not in ("dense", "hybrid"):
            raise ValueError(f"unknown retrieval {self.retrieval!r}; choose dense or hybrid")
        unknown = [r for r in self.readers if r not in ("none", *reader.READERS)]
        if unknown or not self.readers:
            raise ValueError(
                f"unknown reader(s) {', '.join(unknown) or '(none)'}; choose from none, {', '.join(reader.READERS)}"
            )


@dataclass
class Outcome:
    """One question answered in one mode."""

    mode: str
    doc_id: str
    question: str
    prediction: str
    answers: list[str]
    f1: float
    em: float
    rougeL: float
    recall: float | None  # None where the mode retrieves nothing or there is no gold evidence
    hit: float | None
    answer_found: float | None  # a gold answer in what the generator was given (None: memory-only mode)
    latency_s: float
    stages: dict[str, float] = field(default_factory=dict)
    retrieved: list[str] = field(default_factory=list)
    answer_recall: float = 0.0  # share of a gold answer's words the answer contains
    reader: str = "none"
    path: str | None = None  # the reader's path (extract, generate), None for an unchecked answer
    supported: float | None = None  # 1 answered, 0 declined (None: the mode never declines)
    citation_hit: float | None = None  # the cited sentence holds a gold answer (short answers, cited only)
    unsupported_shown: float | None = None  # shown as an answer while naming what the evidence lacks
    top_answer_found: float | None = None  # a gold answer in the best-scored chunk (what citation_hit must beat)
    answerable: bool = True  # the documents hold the answer (False: off-topic, or asked of another document)
    shown: bool = True  # an answer was shown (not declined or withheld)
    right: float | None = None  # a gold answer in what was shown (answerable only)
    cited: float | None = None  # a gold answer in the cited sentences (answerable only)
    routed: float | None = None  # the answering document among the routed ones (knowledge-base mode)
    split: str = ""
    support: float | None = None  # the reader's best sentence's support (what a decline threshold compares)


@dataclass
class Report:
    dataset: str
    config: EvalConfig
    model: str
    outcomes: list[Outcome] = field(default_factory=list)
    memory: dict = field(default_factory=lambda: {"built": 0, "cached": 0, "build_s": 0.0})

    def modes(self) -> dict[str, dict]:
        k = self.config.k
        table = {}
        for mode in dict.fromkeys(o.mode for o in self.outcomes):
            rows = [o for o in self.outcomes if o.mode == mode]
            recalls = [o.recall for o in rows if o.recall is not None]
            hits = [o.hit for o in rows if o.hit is not None]
            found = [o.answer_found for o in rows if o.answer_found is not None]
            stages = {s for o in rows for s in o.stages}
            table[mode] = {
                "n": len(rows),
                "f1": statistics.fmean(o.f1 for o in rows),
                "em": statistics.fmean(o.em for o in rows),
                "rougeL": statistics.fmean(o.rougeL for o in rows),
                f"recall@{k}": statistics.fmean(recalls) if recalls else None,
                f"hit@{k}": statistics.fmean(hits) if hits else None,
                "answer_in_evidence": statistics.fmean(found) if found else None,
                "answer_recall": statistics.fmean(o.answer_recall for o in rows),
                **{
                    name: statistics.fmean(values) if values else None
                    for name in ("supported", "citation_hit", "top_answer_found", "unsupported_shown")
                    for values in [[getattr(o, name) for o in rows if getattr(o, name) is not None]]
                },
                **rates(rows),
                "latency_s": statistics.fmean(o.latency_s for o in rows),
                "stages_s": {s: statistics.fmean(o.stages.get(s, 0.0) for o in rows) for s in sorted(stages)},
            }
        return table

    def to_json(self) -> dict:
        questions = {(o.doc_id, o.question) for o in self.outcomes}
        return {
            "dataset": self.dataset,
            "n": len(questions),
            "documents": len({doc for doc, _ in questions}),
            "model": self.model,
            "config": asdict(self.config),
            "memory": self.memory,
            "modes": self.modes(),
            "date": time.strftime("%Y-%m-%d"),
            "outcomes": [asdict(o) for o in self.outcomes],
        }


def rates(rows: list[Outcome]) -> dict[str, float | None]:
    """``RATES`` over one mode's outcomes."""
    answerable = [o for o in rows if o.answerable]
    shown = [o for o in answerable if o.shown]

    def mean(values: list[float | None]) -> float | None:
        kept = [v for v in values if v is not None]
        return statistics.fmean(kept) if kept else None

    return {
        "right": mean([o.right for o in answerable]),
        "citation_recall": mean([o.cited for o in answerable]),
        "citation_precision": mean([o.cited for o in shown]),
        "answerable_declined": mean([float(not o.shown) for o in answerable]),
        "offtopic_declined": mean([float(not o.shown) for o in rows if not o.answerable]),
        "wrong_shown": mean([float(o.shown and not (o.answerable and o.right)) for o in rows]),
        "routed": mean([o.routed for o in answerable]),
    }


Progress = Callable[[str, int, int], None]  # (what is happening, units done, units in all)


class Harness:
    """Shared pieces of every mode: one index, one embedder, one generator, one k."""

    def __init__(
        self,
        lm: LoadedModel,
        embedder: Embedder,
        index: VectorIndex,
        store: MemoryStore,
        config: EvalConfig,
        settings: Settings | None = None,
    ) -> None:
        self.lm, self.embedder, self.index, self.store = lm, embedder, index, store
        self.config = config
        self.settings = settings or get_settings()
        self.generator = generator_backend(lm, self.settings)
        self.answer_program = programs.short_answer if config.short_answers else programs.answer

    # documents -------------------------------------------------------------
    def memory_key(self, text: str) -> str:
        digest = hashlib.sha256(text.encode()).hexdigest()[:20]
        s = self.settings
        return f"{digest}-b{self.config.beta}-w{s.window}-{s.scorer}"

    def memory_for(self, sample: Sample, report: Report, on_progress: Callable[[int, int], None] | None = None):
        """The sample's memory from the cache, or formed now (and cached) when missing or stale."""
        key = self.memory_key(sample.text)
        try:
            memory = rehydrate(self.store, CACHE_KB, key, self.lm)
            report.memory["cached"] += 1
            return memory
        except (MemoryNotFound, MemoryProblem):
            pass
        started = time.perf_counter()
        memory = memorize(self.lm, sample.text, settings=self.settings, beta=self.config.beta, on_progress=on_progress)
        report.memory["build_s"] += time.perf_counter() - started
        report.memory["built"] += 1
        save_memory(self.store, CACHE_KB, key, memory)
        return memory

    def index_document(self, sample: Sample) -> tuple[str, list]:
        kb = f"{CACHE_KB}-{self.memory_key(sample.text).split('-')[0]}"
        kb += f"-{self.config.retrieval}-{'ctx' if self.config.context else 'bare'}"
        chunks = self.chunks_of(sample)
        self.index.drop(kb)
        self.index.upsert(kb, chunks, self.embedder.encode([c.searchable for c in chunks]))
        return kb, chunks

    def chunks_of(self, sample: Sample) -> list:
        """The sample's chunks as the configuration cuts them (with or without their context)."""
        cut = chunk_document(
            sample.doc_id, sample.text, self.lm.tokenizer, self.config.chunk_tokens, self.config.overlap,
            name=sample.doc_id,
        )  # fmt: skip
        return cut if self.config.context else [replace(c, context="") for c in cut]

    def full_context(self, text: str, question: str) -> str:
        """The document cut in the middle to what fits the generator's window, as LongBench does."""
        budget = self.config.full_tokens
        if budget is None:
            frame = programs.PROMPTS[self.answer_program.func.__name__].format(question=question, evidence="")
            overhead = len(self.lm.tokenizer(frame, add_special_tokens=False)["input_ids"]) + 64
            budget = self.lm.max_positions - self.config.answer_tokens - overhead
        return truncate_middle(self.lm.tokenizer, text, budget)

    # modes -----------------------------------------------------------------
    def ask(
        self, mode: str, sample: Sample, question, kb: str, chunks: list, memory: GlobalMemory | None
    ) -> list[Outcome]:
        """One outcome per reader for the retrieving modes (same evidence), one for qa and full."""
        clock = _Laps()
        if mode in ("qa", "full"):
            if mode == "qa":  # the memory alone drafts the answer
                backend, tokens = LocalBackend(self.lm, memory), self.config.answer_tokens
                draft = programs.execute(programs.draft_answer, backend, question=question.text, max_tokens=tokens)
                prediction, given = draft["answer"], None
            else:
                given = self.full_context(sample.text, question.text)
                prediction = self._generate(question.text, given)
            clock.lap("answer")
            return [self._outcome(mode, sample, question, chunks, prediction, given, [], clock.stages)]
        clues = programs.Clues([], [], "")
        if mode == "memorag":
            clues = programs.write_clues(LocalBackend(self.lm, memory), question.text)
            clock.lap("clues")
        spans, k, fusion, hybrid = [clues.quote()], self.config.k, self.config.fusion, self.config.retrieval == "hybrid"
        found = retrieve(
            self.index, self.embedder, kb, question.text, clues.hints(), spans=spans, k=k, fusion=fusion, hybrid=hybrid
        )
        clock.lap("retrieval")
        return [self._read(mode, name, sample, question, chunks, found, clock.stages) for name in self.config.readers]

    def _read(self, mode: str, name: str, sample: Sample, question, chunks, found, stages) -> Outcome:
        """Answer from the retrieved passages: the generator unchecked (``none``), or the grounded reader."""
        started = time.perf_counter()
        ordered = order_evidence(found, self.config.evidence_order)
        passages = [e.chunk.text for e in ordered]
        reading = None
        if name == "none":
            prediction = self._generate(question.text, programs.format_evidence(passages))
        else:
            write = lambda ev: self._generate(question.text, ev)  # noqa: E731
            text_of = {sample.doc_id: sample.text}.__getitem__
            reading = read(
                self.lm, question.text, ordered, settings=self.settings, how=name, write=write,
                embedder=self.embedder, text_of=text_of,
            )  # fmt: skip
            prediction = reading.short if reading.supported else ""
        timed = {**stages, "answer": time.perf_counter() - started}
        label = mode if name == "none" else f"{mode}/{name}"
        retrieved, given = [e.chunk.id for e in found], "\n".join(passages)
        return self._outcome(
            label, sample, question, chunks, prediction, given, retrieved, timed,
            reading=reading, reader_name=name, evidence=found,
        )  # fmt: skip

    def _generate(self, question: str, evidence: str) -> str:
        return programs.execute(
            self.answer_program,
            self.generator,
            question=question,
            evidence=evidence,
            max_tokens=self.config.answer_tokens,
        )["answer"].strip()

    def _outcome(
        self,
        mode: str,
        sample: Sample,
        question,
        chunks: list,
        prediction: str,
        given: str | None,
        retrieved: list[str],
        stages: dict[str, float],
        *,
        reading: reader.Reading | None = None,
        reader_name: str = "none",
        evidence: list | None = None,
    ) -> Outcome:
        prediction = prediction.strip()
        golds = list(question.answers)
        gold = gold_chunk_ids(chunks, question.evidence) if retrieved else set()
        k = self.config.k
        cited = reading.citation if reading is not None and reading.supported else None
        shown_terms = reader.unsupported_terms(prediction, given) if given is not None and prediction else []
        answerable = bool(golds) and not self.config.unanswerable
        shown = reading.supported if reading is not None else bool(prediction)
        quotes = " ".join(c.quote for c in reading.citations) if reading is not None and shown else ""
        shown_text = f"{reading.text} {prediction}" if reading is not None and shown else prediction
        return Outcome(
            mode=mode,
            doc_id=sample.doc_id,
            question=question.text,
            prediction=prediction,
            answers=golds,
            f1=best_of(token_f1, prediction, golds),
            em=best_of(exact_match, prediction, golds),
            rougeL=best_of(rouge_l, prediction, golds),
            recall=recall_at_k(gold, retrieved, k) if gold else None,
            hit=hit_at_k(gold, retrieved, k) if gold else None,
            answer_found=answer_in(given, golds) if given is not None else None,
            latency_s=sum(stages.values()),
            stages=stages,
            retrieved=retrieved,
            answer_recall=best_of(answer_recall, prediction, golds),
            reader=reader_name,
            path=reading.path if reading else None,
            supported=float(reading.supported) if reading is not None else None,
            citation_hit=answer_in(cited.quote, golds) if cited and self.config.short_answers else None,
            unsupported_shown=float(bool(shown_terms)) if given is not None else None,
            top_answer_found=answer_in(max(evidence, key=lambda e: e.score).chunk.text, golds)
            if evidence and self.config.short_answers
            else None,
            answerable=answerable,
            shown=shown,
            right=answer_in(shown_text, golds) if answerable else None,
            cited=(answer_in(quotes, golds) if quotes else 0.0) if answerable and reading is not None else None,
            split=getattr(question, "split", ""),
            support=reading.support if reading is not None else None,
        )

    def evaluate(self, dataset: str, samples: Iterable[Sample], on_progress: Progress | None = None) -> Report:
        samples = list(samples)
        if self.config.unanswerable:
            if len(samples) < 2:
                raise ValueError("unanswerable questions need at least two documents (each is asked of the next)")
            nxt = samples[1:] + samples[:1]
            samples = [
                Sample(s.doc_id, s.text, [replace(q, evidence=[]) for q in o.questions])
                for s, o in zip(nxt, samples, strict=True)
            ]
        report = Report(dataset, self.config, self.lm.name)
        total = sum(len(self._questions(s)) for s in samples) * len(self.config.modes)
        done = 0

        def say(what: str) -> None:
            if on_progress:
                on_progress(what, done, total)

        needs_memory = any(m in ("memorag", "qa") for m in self.config.modes)
        for sample in samples:
            questions = self._questions(sample)
            if not questions:
                continue
            say(f"{sample.doc_id}: indexing")
            kb, chunks = self.index_document(sample)
            memory = None
            if needs_memory:
                say(f"{sample.doc_id}: memory")
                memory = self.memory_for(
                    sample, report, lambda a, b, doc=sample.doc_id: say(f"{doc}: memory {100 * a // max(1, b)}%")
                )
            try:
                for question in questions:
                    for mode in self.config.modes:
                        say(f"{sample.doc_id}: {mode}")
                        report.outcomes.extend(self.ask(mode, sample, question, kb, chunks, memory))
                        done += 1
            finally:
                self.index.drop(kb)
        say("done")
        return report

    def _questions(self, sample: Sample) -> list:
        return sample.questions[: self.config.questions] if self.config.questions else list(sample.questions)

    # knowledge-base mode --------------------------------------------------
    def evaluate_kb(
        self, dataset: str, samples: Iterable[Sample], on_progress: Progress | None = None, split: str | None = None
    ) -> Report:
        """Every document in one knowledge base and every question asked of all of it, through the path ``ask``
        takes (route -> memories -> clues -> retrieval -> reader); a sample with no text holds off-topic ones."""
        samples = list(samples)
        documents = [s for s in samples if s.text]
        if not documents:
            raise ValueError("a knowledge base needs at least one document")
        asked = [
            (q, s.doc_id if s.text else None)
            for s in samples
            for q in self._questions(s)
            if split is None or getattr(q, "split", "") == split
        ]
        report = Report(dataset, self.config, self.lm.name)
        modes = [m for m in self.config.modes if m in ("rag", "memorag")]
        if not modes:
            raise ValueError("knowledge-base mode answers with rag and memorag only")
        total, done = len(asked) * len(modes), 0

        def say(what: str) -> None:
            if on_progress:
                on_progress(what, done, total)

        texts = {s.doc_id: s.text for s in documents}
        digest = hashlib.sha256("\n".join(f"{d}:{self.memory_key(t)}" for d, t in texts.items()).encode())
        kb = f"{CACHE_KB}kb-{digest.hexdigest()[:16]}-c{self.config.chunk_tokens}-o{self.config.overlap}"
        kb += f"-{self.config.retrieval}-{'ctx' if self.config.context else 'bare'}"
        say(f"indexing {len(documents)} documents")
        chunks = self._index_kb(kb, documents)
        if "memorag" in modes:
            for sample in documents:
                say(f"{sample.doc_id}: memory")
                memory = self.memory_for(sample, report)
                save_memory(self.store, kb, sample.doc_id, memory)
        settings = self.settings.model_copy(update={"top_k": self.config.k, "retrieval": self.config.retrieval})
        doc_ids = list(texts)
        try:
            for question, doc in asked:
                for mode in modes:
                    say(f"{mode}: {question.text[:40]}")
                    report.outcomes.extend(self._ask_kb(mode, kb, doc_ids, texts, chunks, question, doc, settings))
                    done += 1
        finally:
            self.index.drop(kb)
            for d in doc_ids if "memorag" in modes else []:
                self.store.delete(kb, d)  # the memories stay cached by content under the harness's own key
        say("done")
        return report

    def _index_kb(self, kb: str, documents: list[Sample]) -> dict[str, list]:
        self.index.drop(kb)
        chunks = {}
        for sample in documents:
            cut = self.chunks_of(sample)
            self.index.upsert(kb, cut, self.embedder.encode([c.searchable for c in cut]))
            chunks[sample.doc_id] = cut
        return chunks

    def _ask_kb(self, mode, kb, doc_ids, texts, chunks, question, doc, settings) -> list[Outcome]:
        started = time.perf_counter()
        first = self.config.readers[0]
        how = "auto" if first == "none" else first
        result = answer(
            self.lm, self.embedder, self.store, self.index, kb, doc_ids, question.text, k=self.config.k,
            settings=settings.model_copy(update={"reader": how}), text_of=texts.__getitem__,
            clues=None if mode == "memorag" else False, memory_evidence=mode == "memorag",
        )  # fmt: skip
        stages = {s: v for s, v in result.timings.items() if s != "answer"}
        sample = Sample(doc or "", texts.get(doc or "", ""), [question])
        doc_chunks = chunks.get(doc or "", [])
        out = []
        for name in self.config.readers:
            if name == first and name != "none":
                outcome = self._read_kb(mode, name, sample, question, doc_chunks, result, result.reading, stages)
                outcome.stages["answer"] = result.timings.get("answer", 0.0)
                outcome.latency_s = time.perf_counter() - started
            else:
                outcome = self._read(mode, name, sample, question, doc_chunks, result.evidence, stages)
            outcome.routed = float(doc in result.documents) if doc else None
            out.append(outcome)
        return out

    def _read_kb(self, mode, name, sample, question, chunks, result, reading, stages) -> Outcome:
        """The outcome of the reading ``answer`` already made."""
        ordered = order_evidence(result.evidence, self.config.evidence_order)
        given = "\n".join(e.chunk.text for e in ordered)
        prediction = reading.short if reading.supported else ""
        return self._outcome(
            f"{mode}/{name}", sample, question, chunks, prediction, given, [e.chunk.id for e in result.evidence],
            dict(stages), reading=reading, reader_name=name, evidence=result.evidence,
        )  # fmt: skip


def truncate_middle(tokenizer, text: str, budget: int) -> str:
    """Keep the first and last ``budget // 2`` tokens of ``text`` when it is longer than ``budget``."""
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    if len(ids) <= budget:
        return text
    half = max(1, budget // 2)
    return tokenizer.decode(ids[:half]) + tokenizer.decode(ids[-half:])
