"""What RLGF learns from: feedback examples and the documents their answers are found in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from agent import programs
from agent.chat import chat_prompt, end_of_turn_ids
from agent.memory.types import GlobalMemory
from agent.models import LoadedModel
from agent.retrieval import DEFAULT_FUSION, Embedder, Fusion
from store.vectors import Chunk, VectorIndex

Progress = Callable[[str, int, int], None]


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
    fusion: str | Fusion = DEFAULT_FUSION  # the pipeline's, so rewards and the gate see what queries will
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


def spans_prompt(lm: LoadedModel, question: str) -> list[int]:
    """The ``recall_spans`` program's prompt, as the adapter sees it after the memory."""
    return chat_prompt(lm.tokenizer, programs.PROMPTS["recall_spans"].format(question=question))


def completion_ids(lm: LoadedModel, text: str) -> list[int]:
    """A reply's tokens followed by the end-of-turn token, so the model also learns where to stop."""
    ids = lm.tokenizer(text.strip(), add_special_tokens=False)["input_ids"]
    return [*ids, *end_of_turn_ids(lm.tokenizer)]
