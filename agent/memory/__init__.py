"""Global memory: a document compressed into a causal LM's key/value space.

Submodules: ``types`` (the memory value and its bytes), ``formation``
(windowed compression), ``scorers`` (which KV pairs to keep), ``rope``
(re-rotation), ``reading`` (the cache a memory is read from),
``decoding`` (generation and scoring after a memory),
``capture`` (query capture inside attention), ``errors``.
"""

from store.errors import CorruptMemory, IncompatibleMemory, MemoryProblem

__all__ = ["CorruptMemory", "IncompatibleMemory", "MemoryProblem"]
