"""Why a stored memory cannot be used; callers rebuild it from the text. Raised by the store and by
the memory format itself, so it sits at the bottom of the house."""


class MemoryProblem(Exception):
    """Base class: the memory must be rebuilt, the request itself is fine."""


class CorruptMemory(MemoryProblem):
    """Bytes are missing or do not match their checksum."""


class IncompatibleMemory(MemoryProblem):
    """The memory was built by another model (or an older format)."""
