"""The MemoRAG flow on one screen: memorize a document, answer a question.

memorize:  text -> chunks (each with its title > headings) -> embeddings + BM25 -> vector index
                -> windowed KV compression -> GlobalMemory -> MemoryStore
answer:    route to the knowledge base's most relevant documents (chunk votes: dense + BM25 over text and context)
                -> MemoryStore -> GlobalMemory (rebuilt from text if missing or stale)
                -> where heads were kept for the model: the question's attention over each memory ranks its chunks
                -> clue programs (spans, questions, draft) on each memory (MEMORAG_CLUES)
                -> retrieval over the whole knowledge base: question + clues anchored to it, fused
                   (with the fusion the loaded clue adapter was gated with, if any), re-ranked by the pointing
                -> reader: the documents' best sentence (its short span marked), or the best few for a
                   long answer, cited; or a decline. Generated text only where it passes the check -> Answer
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agent import adapters, programs, reader
from agent.backends import LocalBackend, generator_backend
from agent.choices import TASKS
from agent.memory import pointing
from agent.memory.formation import form_memory, tokenize_document
from agent.memory.types import GlobalMemory
from agent.models import LoadedModel, memory_storage
from agent.retrieval import DEFAULT_FUSION, Embedder, Evidence, chunk_document, retrieve
from core.settings import Settings, get_settings
from store.errors import MemoryProblem
from store.memories import Manifest, MemoryNotFound, MemoryStore
from store.vectors import VectorIndex, rrf


@dataclass
class Answer:
    text: str
    task: str
    clues: list[str] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    documents: list[str] = field(default_factory=list)  # whose memories wrote the clues
    rebuilt: list[str] = field(default_factory=list)  # memories rebuilt from text on the way
    adapter_version: str | None = None  # the clue adapter that wrote the evidence spans (None: base model)
    reading: reader.Reading | None = None  # how the answer was read from the evidence (None: memory only)


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
        storage_dtype=memory_storage(settings.memory_dtype, lm.device),
        on_progress=on_progress,
    )


def memorize_document(
    lm: LoadedModel,
    embedder: Embedder,
    store: MemoryStore,
    index: VectorIndex,
    kb: str,
    doc_id: str,
    text: str,
    *,
    settings: Settings | None = None,
    beta: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[GlobalMemory, int]:
    """Index the document's chunks and store its memory; returns the memory and chunk count."""
    n_chunks = index_document(lm, embedder, index, kb, doc_id, text)
    memory = memorize(lm, text, settings=settings, beta=beta, on_progress=on_progress)
    save_memory(store, kb, doc_id, memory)
    return memory, n_chunks


def index_document(
    lm: LoadedModel, embedder: Embedder, index: VectorIndex, kb: str, doc_id: str, text: str, name: str = ""
) -> int:
    """Replace the document's chunks (each with its title and headings) in the index; returns how many."""
    chunks = chunk_document(doc_id, text, lm.tokenizer, name=name)
    index.delete_document(kb, doc_id)
    index.upsert(kb, chunks, embedder.encode([c.searchable for c in chunks]))
    return len(chunks)


def save_memory(store: MemoryStore, kb: str, doc: str, memory: GlobalMemory) -> Manifest:
    return store.put(kb, doc, memory.to_bytes(), memory.meta.as_dict())


def rehydrate(store: MemoryStore, kb: str, doc: str, lm: LoadedModel) -> GlobalMemory:
    """Load and verify a stored memory for ``lm``; raises MemoryProblem or MemoryNotFound."""
    data, _ = store.get(kb, doc, fingerprint=lm.fingerprint)
    return GlobalMemory.from_bytes(data)


def recall(
    store: MemoryStore,
    kb: str,
    doc: str,
    lm: LoadedModel,
    *,
    text_of: Callable[[str], str] | None = None,
    settings: Settings | None = None,
) -> tuple[GlobalMemory, bool]:
    """The document's memory, rebuilt from its text when missing, corrupt or from another model."""
    try:
        return rehydrate(store, kb, doc, lm), False
    except (MemoryNotFound, MemoryProblem):
        if text_of is None:
            raise
    memory = memorize(lm, text_of(doc), settings=settings)
    save_memory(store, kb, doc, memory)
    return memory, True


def route_documents(
    index: VectorIndex,
    embedder: Embedder,
    kb: str,
    question: str,
    doc_ids: list[str],
    *,
    limit: int,
    depth: int = 50,
    hybrid: bool = False,
) -> list[str]:
    """The ``limit`` documents among ``doc_ids`` whose chunks (titles and headings with them) rank highest."""
    if len(doc_ids) <= limit:
        return list(doc_ids)
    hits = index.search(kb, embedder.encode([question]), depth, texts=[question] if hybrid else None)[0]
    position = {doc: i for i, doc in enumerate(doc_ids)}
    ranking = [chunk.doc_id for chunk, _ in hits if chunk.doc_id in position]
    votes = rrf([ranking])  # a document collects the reciprocal ranks of its chunks
    return sorted(position, key=lambda d: (-votes.get(d, 0.0), position[d]))[:limit]


def answer(
    lm: LoadedModel,
    embedder: Embedder,
    store: MemoryStore,
    index: VectorIndex,
    kb: str,
    doc_ids: list[str],
    question: str,
    *,
    task: str = "memorag",
    k: int = 5,
    settings: Settings | None = None,
    text_of: Callable[[str], str] | None = None,
    clues: bool | None = None,
    memory_evidence: bool = True,
) -> Answer:
    """Answer ``question`` from the most relevant memories among ``doc_ids`` and the knowledge base's chunks.

    ``clues``: write clues from the memories (None: as ``MEMORAG_CLUES`` says for this model).
    ``memory_evidence``: let the memories' attention re-rank the evidence where heads were chosen for the
    model. With neither, it is standard RAG: no memory is read.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    settings = settings or get_settings()
    clues = writes_clues(lm, settings) if clues is None else clues
    heads = pointing_heads(lm, settings) if memory_evidence and task == "memorag" and text_of else None
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = timings.get(stage, 0.0) + now - clock
        clock = now

    hybrid = settings.retrieval == "hybrid"
    docs = route_documents(index, embedder, kb, question, doc_ids, limit=settings.route_docs, hybrid=hybrid)
    lap("route")
    reads_memory = clues or task == "qa" or heads is not None
    recalled = [recall(store, kb, doc, lm, text_of=text_of, settings=settings) for doc in docs] if reads_memory else []
    memories = [memory for memory, _ in recalled]
    rebuilt = [doc for doc, (_, fresh) in zip(docs, recalled, strict=True) if fresh] if reads_memory else []
    lap("rehydrate")
    if task == "qa":  # memory only: the most relevant document's memory drafts the answer
        draft = programs.execute(programs.draft_answer, LocalBackend(lm, memories[0]), question=question)["answer"]
        lap("answer")
        return Answer(draft.strip(), task, timings=timings, documents=docs[:1], rebuilt=rebuilt)
    pointed: list[list[str]] = []
    if heads is not None:  # the memories point where heads were kept for this model
        pointed = [point(lm, memory, doc, question, text_of, heads) for doc, memory in zip(docs, memories, strict=True)]
        pointed = [ranking for ranking in pointed if ranking]
        lap("pointing")
    hints: list[str] = []
    quotes: list[str] = []  # each memory's evidence spans
    for memory in memories if clues else []:
        backend = LocalBackend(lm, memory)
        if task == "summarize":
            hints += programs.clean_lines(programs.execute(programs.key_points, backend)["clues"])
        else:
            written = programs.write_clues(backend, question)
            quotes.append(written.quote())
            hints += written.hints()
    if clues:
        lap("clues")
    # A summary of what the user asked about retrieves for that; an empty request, for the key points.
    query = question if question.strip() or task == "memorag" else "key points of the document"
    fusion = adapters.loaded_fusion(lm) or DEFAULT_FUSION  # a trained span writer brings the fusion it was gated with
    weight = heads.weight if heads else 0.0
    evidence = retrieve(
        index, embedder, kb, query, hints, spans=quotes, k=k, fusion=fusion, hybrid=hybrid, pointed=pointed,
        pointed_weight=weight,
    )  # fmt: skip
    hints = [*(line for quote in quotes for line in quote.splitlines()), *hints]
    lap("retrieval")
    reading = read(lm, query, evidence, task=task, settings=settings, embedder=embedder, text_of=text_of)
    lap("answer")
    version = adapters.loaded_version(lm)
    return Answer(reading.text, task, hints, evidence, timings, docs, rebuilt, version, reading)


def writes_clues(lm: LoadedModel, settings: Settings) -> bool:
    """Whether the memories write clues (``MEMORAG_CLUES``)."""
    return settings.clues == "on"


def pointing_heads(lm: LoadedModel, settings: Settings) -> pointing.Heads | None:
    """The heads whose attention points at evidence, where they were chosen for this model and not turned off."""
    return pointing.load_heads(lm.name) if settings.memory_evidence == "auto" else None


def point(
    lm: LoadedModel,
    memory: GlobalMemory,
    doc: str,
    question: str,
    text_of: Callable[[str], str] | None,
    heads: pointing.Heads | None,
) -> list[str]:
    """The document's chunk ids as its memory's attention ranks them, best first; none where it cannot point.

    Only a memory read at its own positions points (no longer than ``lm.read_span``): one spread over the span
    was measured to point nowhere (docs/benchmarks.md, evidence from the memory's attention).
    """
    if heads is None or text_of is None or (lm.read_span and len(memory) > lm.read_span):
        return []
    ids, spans = _chunk_spans(lm.tokenizer, doc, text_of(doc))
    scores = pointing.chunk_scores(pointing.chunk_attention(lm, memory, question, spans), heads)
    return [ids[i] for i in scores.argsort(descending=True).tolist()]


@functools.lru_cache(maxsize=64)
def _chunk_spans(tokenizer, doc: str, text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Chunk ids and token spans as the index holds them (the context line does not move them)."""
    chunks = chunk_document(doc, text, tokenizer)
    return [c.id for c in chunks], [(c.token_start, c.token_end) for c in chunks]


def read(
    lm: LoadedModel,
    question: str,
    evidence: list[Evidence],
    *,
    task: str = "memorag",
    settings: Settings | None = None,
    how: str | None = None,
    write: Callable[[str], str] | None = None,
    embedder: Embedder | None = None,
    text_of: Callable[[str], str] | None = None,
) -> reader.Reading:
    """The answer step: the documents' sentences, or the generator's text where it passes the check.

    ``how`` overrides ``MEMORAG_READER``; ``write`` (formatted passages -> text) replaces the generator's
    answer program, as the evaluation harness does with its own program and evidence order.
    """
    settings = settings or get_settings()
    path = reader.choose_path(question, how or settings.reader)
    composed = reader.choose_path(question) == "sentences"  # what a failed generation falls back on
    long = task == "summarize" or path == "sentences" or (path == "generate" and composed)

    def sentences() -> reader.Reading:
        return reader.read_sentences(lm, question, evidence, embedder=embedder, text_of=text_of, long=long)

    if path != "generate":
        return sentences()
    passages = programs.format_evidence([e.chunk.text for e in evidence])
    if write is not None:
        text = write(passages)
    elif task == "summarize":
        text = programs.execute(programs.summary, generator_backend(lm, settings), evidence=passages)["answer"]
    else:
        generator = generator_backend(lm, settings)
        text = programs.execute(programs.answer, generator, question=question, evidence=passages)["answer"]
    return reader.check(text.strip(), evidence, embedder=embedder, text_of=text_of, fallback=sentences)
