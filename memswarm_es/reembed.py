"""Changing the embedding model without downtime: project the log into a new collection with
the new model while the old collection keeps serving, then switch and drop the old one."""

from __future__ import annotations

import re
from typing import Protocol

from projections.base import ReadModel
from projections.chroma import ChromaReadModel, point
from projections.embedding import CachedEmbedder, Embedder
from projections.projector import Progress, Projector

from .errors import NotSupportedError
from .events import new_id
from .log.base import EventLog


class Reembeddable(Protocol):
    """What :func:`reembed` needs of a memory (a ``SharedMemory`` is one): its log, the read
    model serving it, and a way to switch that read model."""

    @property
    def log(self) -> EventLog: ...

    @property
    def read_model(self) -> ReadModel: ...

    def replace_read_model(self, new: ReadModel) -> ReadModel: ...


def reembed(memory: Reembeddable, embedder: Embedder, model_id: str,
            progress: Progress | None = None) -> ChromaReadModel:
    """Re-embed ``memory``'s Chroma view with ``embedder`` (named ``model_id``); return the new
    read model, now serving. Vectors already cached for ``model_id`` are not computed again."""
    old = memory.read_model
    if not isinstance(old, ChromaReadModel):
        raise NotSupportedError("reembed needs a memory whose read model is Chroma")
    slug = re.sub(r"[^A-Za-z0-9_-]", "-", model_id)[:40]
    base = old.name.split("--")[0]
    name = f"{base}--{slug}-{new_id()[-8:]}"
    new = ChromaReadModel(old.client, CachedEmbedder(embedder, model_id, old.embedder.cache),
                          name)
    Projector(memory.log, new, batch_size=500).catch_up(progress=progress)  # old still serves
    memory.replace_read_model(new)  # the events written meanwhile, then the switch
    point(old.client, base, name, model_id)  # so that a restart opens the new collection
    old.drop()
    return new
