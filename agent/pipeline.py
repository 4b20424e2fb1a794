"""The MemoRAG flow: memorize a document, re-hydrate its memory, answer from it.

    text --form_memory--> GlobalMemory --to_bytes--> MemoryStore (Redis)
    MemoryStore --rehydrate--> GlobalMemory --LocalBackend + draft_answer--> answer
"""

from __future__ import annotations

from collections.abc import Callable

from agent import programs
from agent.backends import LocalBackend
from agent.memory.formation import form_memory, tokenize_document
from agent.memory.types import GlobalMemory
from agent.models import LoadedModel
from agent.settings import Settings, get_settings
from store.memories import Manifest, MemoryStore


def memorize(
    lm: LoadedModel,
    text: str,
    *,
    settings: Settings | None = None,
    beta: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> GlobalMemory:
    from agent.models import resolve_dtype

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


def save_memory(store: MemoryStore, kb: str, doc: str, memory: GlobalMemory) -> Manifest:
    return store.put(kb, doc, memory.to_bytes(), memory.meta.as_dict())


def rehydrate(store: MemoryStore, kb: str, doc: str, lm: LoadedModel) -> GlobalMemory:
    """Load and verify a stored memory for ``lm``; raises MemoryProblem or MemoryNotFound."""
    data, _ = store.get(kb, doc, fingerprint=lm.fingerprint)
    return GlobalMemory.from_bytes(data)


def chat_prompt(lm: LoadedModel, user: str) -> list[int]:
    """Token ids of one user turn in the model's own chat template, ready for the reply."""
    return lm.tokenizer.apply_chat_template(
        [{"role": "user", "content": user}], add_generation_prompt=True, tokenize=True, return_dict=False
    )


def answer_from_memory(lm: LoadedModel, memory: GlobalMemory, question: str, max_new_tokens: int = 96) -> str:
    """The ``qa`` task: the draft-answer program on the memory alone."""
    state = programs.draft_answer.run(question=question, max_tokens=max_new_tokens, backend=LocalBackend(lm, memory))
    if state.error():
        raise state.error()
    return state["answer"].strip()
