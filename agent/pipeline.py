"""The MemoRAG flow on one screen: memorize a document, answer a question.

    memorize:  text -> chunks -> embeddings -> vector index
                    -> windowed KV compression -> GlobalMemory -> MemoryStore
    answer:    MemoryStore -> GlobalMemory -> clue programs (spans, questions, draft)
                    -> retrieval with question + clues (RRF) -> answer program -> Answer
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agent import programs
from agent.backends import LocalBackend, generator_backend
from agent.memory.formation import form_memory, tokenize_document
from agent.memory.types import GlobalMemory
from agent.models import LoadedModel, resolve_dtype
from agent.retrieval import Embedder, Evidence, chunk_document, retrieve
from agent.settings import Settings, get_settings
from store.memories import Manifest, MemoryStore
from store.vectors import VectorIndex

TASKS = ("qa", "memorag", "summarize")
# Dense retrieval fused over question + clues. Adding BM25 lowered recall@5 on
# QMSum val (0.288 vs 0.384 dense, 16 queries; docs/benchmarks.md).
HYBRID_RETRIEVAL = False


@dataclass
class Answer:
    text: str
    task: str
    clues: list[str] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def memorize(
    lm: LoadedModel,
    text: str,
    *,
    settings: Settings | None = None,
    beta: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> GlobalMemory:
    settings = settings or get_settings()
    return form_memory(
        lm,
        tokenize_document(lm, text),
        beta=beta or settings.beta,
        window=settings.window,
        scorer=settings.scorer,
        storage_dtype=resolve_dtype(settings.memory_dtype, lm.device),
        on_progress=on_progress,
    )


def memorize_document(
    lm: LoadedModel, embedder: Embedder, store: MemoryStore, index: VectorIndex,
    kb: str, doc_id: str, text: str, *, settings: Settings | None = None, beta: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[GlobalMemory, int]:  # fmt: skip
    """Index the document's chunks and store its memory; returns the memory and chunk count."""
    chunks = chunk_document(doc_id, text, lm.tokenizer)
    index.delete_document(kb, doc_id)
    index.upsert(kb, chunks, embedder.encode([c.text for c in chunks]))
    memory = memorize(lm, text, settings=settings, beta=beta, on_progress=on_progress)
    save_memory(store, kb, doc_id, memory)
    return memory, len(chunks)


def save_memory(store: MemoryStore, kb: str, doc: str, memory: GlobalMemory) -> Manifest:
    return store.put(kb, doc, memory.to_bytes(), memory.meta.as_dict())


def rehydrate(store: MemoryStore, kb: str, doc: str, lm: LoadedModel) -> GlobalMemory:
    """Load and verify a stored memory for ``lm``; raises MemoryProblem or MemoryNotFound."""
    data, _ = store.get(kb, doc, fingerprint=lm.fingerprint)
    return GlobalMemory.from_bytes(data)


def answer(
    lm: LoadedModel, embedder: Embedder, store: MemoryStore, index: VectorIndex,
    kb: str, doc_ids: list[str], question: str, *, task: str = "memorag", k: int = 5,
    settings: Settings | None = None,
) -> Answer:  # fmt: skip
    """Answer ``question`` from the memories of ``doc_ids`` and the knowledge base's chunks."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = timings.get(stage, 0.0) + now - clock
        clock = now

    memories = [rehydrate(store, kb, doc, lm) for doc in doc_ids]
    lap("rehydrate")
    if task == "qa":
        drafts = [_run(programs.draft_answer, LocalBackend(lm, m), question=question)["answer"] for m in memories]
        lap("answer")
        return Answer(drafts[0].strip() if drafts else "", task, timings=timings)
    clues: list[str] = []
    for memory in memories:
        backend = LocalBackend(lm, memory)
        if task == "summarize":
            clues += programs.clean_lines(_run(programs.key_points, backend)["clues"])
        else:
            clues += programs.write_clues(backend, question).queries()
    lap("clues")
    query = question if task == "memorag" else "key points of the document"
    evidence = retrieve(index, embedder, kb, query, clues, k=k, hybrid=HYBRID_RETRIEVAL)
    lap("retrieval")
    passages = programs.format_evidence([e.chunk.text for e in evidence])
    generator = generator_backend(lm, settings)
    if task == "summarize":
        text = _run(programs.summary, generator, evidence=passages)["answer"]
    else:
        text = _run(programs.answer, generator, question=question, evidence=passages)["answer"]
    lap("answer")
    return Answer(text.strip(), task, clues, evidence, timings)


def _run(program, backend, **arguments):
    state = program.run(backend=backend, **arguments)
    if state.error():
        raise state.error()
    return state


def chat_prompt(lm: LoadedModel, user: str) -> list[int]:
    """Token ids of one user turn in the model's own chat template, ready for the reply."""
    return lm.tokenizer.apply_chat_template(
        [{"role": "user", "content": user}], add_generation_prompt=True, tokenize=True, return_dict=False
    )
