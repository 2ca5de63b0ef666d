"""The :class:`ReadModel` interface: where projected memories live and are queried."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence

from memswarm_es.errors import StorageError
from memswarm_es.events import Event
from memswarm_es.scopes import Scope

from .fold import Change, MemoryEntry, changes


class ReadModel(ABC):
    """Memories folded from a log, with the position of the last event applied (the checkpoint).

    A backend implements the storage half (``checkpoint``, ``get_many``, ``commit``, ``clear``
    and the queries); :meth:`apply` is the same for all: fold the batch with the pure fold and
    commit the changes together with the new checkpoint, in one atomic step.
    """

    @abstractmethod
    def checkpoint(self) -> int:
        """Position of the last event applied (0 when empty)."""

    @abstractmethod
    def get_many(self, memory_ids: Iterable[str]) -> dict[str, MemoryEntry]:
        """The live entries among ``memory_ids``."""

    @abstractmethod
    def commit(self, changes: Sequence[Change], expected_checkpoint: int, checkpoint: int) -> None:
        """Apply ``changes`` and set the checkpoint atomically, if it is still ``expected``.

        Raises :class:`CheckpointConflictError` (and changes nothing) otherwise.
        """

    @abstractmethod
    def clear(self) -> None:
        """Drop every entry and reset the checkpoint to 0."""

    @abstractmethod
    def read_scope(self, scope: Scope) -> list[MemoryEntry]:
        """Live entries inside ``scope``, ordered by position."""

    def get(self, memory_id: str) -> MemoryEntry | None:
        return self.get_many([memory_id]).get(memory_id)

    def apply(self, events: Sequence[Event]) -> int:
        """Apply the events after the checkpoint (they must follow it without a gap).

        Returns the new checkpoint. Events at or before the checkpoint are skipped, so applying
        a batch twice has the effect of applying it once.
        """
        start = self.checkpoint()
        fresh = [e for e in events if e.position > start]
        if not fresh:
            return start
        if fresh[0].position != start + 1:
            raise StorageError(
                f"events start at {fresh[0].position}, but the checkpoint is {start}")
        touched = {e.memory_id for e in fresh if e.memory_id is not None}
        batch = changes(self.get_many(touched), fresh)
        self.commit(batch, start, fresh[-1].position)
        return fresh[-1].position

    def close(self) -> None:
        """Release resources; the default holds none."""
