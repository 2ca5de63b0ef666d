"""The scan: write a unique marker, forget it, and read the raw bytes of every file, key and
object this project wrote, looking for the marker, its base64 and its sha256 (hex and raw).

Each backend is one entry of ``PLACES``: a builder returning a :class:`Place` (a memory writing
through the backend, and a dump of everything the backend holds). Adding a backend is adding
one entry.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from google.cloud import storage

from memswarm_es import MemoryNotFoundError, SQLiteSharedMemory
from memswarm_es.log import SQLEventLog
from memswarm_es.log.copy import copy_log
from memswarm_es.log.gcs import GCSEventLog
from memswarm_es.memory import RedisSharedMemory, SharedMemory
from projections.in_memory import InMemoryReadModel
from tests.test_forget_files import found_in, sqlite_files

Dump = Callable[[], dict[str, bytes]]


@dataclass
class Place:
    """A backend under the scan: ``mem`` writes through it, ``dump`` returns every byte it
    holds by where it is; ``after_write`` / ``after_forget`` run after the writes and after the
    forget (a copy copies then)."""

    mem: SharedMemory
    dump: Dump
    after_write: Callable[[], object] = lambda: None
    after_forget: Callable[[], object] = lambda: None
    closers: list[Callable[[], object]] = field(default_factory=list)


def redis_keys(client: redis.Redis, prefix: str) -> dict[str, bytes]:
    """Every key under ``prefix`` with every byte of its value, whatever its type."""
    found = {}
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        kind = client.type(key).decode()
        if kind == "string":
            parts = [client.get(key) or b""]
        elif kind == "hash":
            parts = [b for pair in client.hgetall(key).items() for b in pair]
        elif kind == "zset":
            parts = [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == "set":
            parts = list(client.smembers(key))
        elif kind == "list":
            parts = client.lrange(key, 0, -1)
        else:
            raise AssertionError(f"key {key!r} of type {kind} is not scanned")
        found[f"redis:{key.decode()}"] = key + b"\0" + b"\0".join(parts)
    return found


def sqlite_place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    path = tmp_path / "swarm.db"
    mem = SQLiteSharedMemory(str(path), snapshot_every=1)
    return Place(mem, lambda: sqlite_files(path))


def redis_place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
    path = tmp_path / "swarm.db"
    mem = RedisSharedMemory(url, prefix=prefix, log=f"sqlite:///{path}", snapshot_every=1)
    client = redis.Redis.from_url(url)
    return Place(mem, lambda: {**sqlite_files(path), **redis_keys(client, prefix)},
                 closers=[client.close])


def gcs_place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    bucket, prefix = request.getfixturevalue("gcs_bucket"), request.getfixturevalue("gcs_prefix")
    client: storage.Client = request.getfixturevalue("gcs_client")
    mem = SharedMemory(GCSEventLog(bucket, prefix, client), InMemoryReadModel(), snapshot_every=1)

    def objects() -> dict[str, bytes]:
        return {f"gs:{b.name}": b.download_as_bytes()
                for b in client.list_blobs(bucket, prefix=prefix)}

    return Place(mem, objects)


def copy_place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    """A SQLite log copied to another before the forget, and the copy resumed after it."""
    source, target = tmp_path / "source.db", tmp_path / "copy.db"
    mem = SQLiteSharedMemory(str(source), snapshot_every=1)
    copy = SQLEventLog(f"sqlite:///{target}")
    return Place(mem, lambda: {**sqlite_files(source), **sqlite_files(target)},
                 after_write=lambda: copy_log(mem.log, copy),
                 after_forget=lambda: copy_log(mem.log, copy), closers=[copy.close])


def chroma_place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    """A Chroma collection (with its vector cache) projecting a SQLite log, embedded by the
    real offline model, so the cache and Chroma's queue hold real vectors of the text."""
    from memswarm_es import ChromaSharedMemory

    path, chroma = tmp_path / "swarm.db", tmp_path / "chroma"
    mem = ChromaSharedMemory(str(chroma), log=f"sqlite:///{path}", snapshot_every=1)
    return Place(mem, lambda: {**sqlite_files(path), **tree_files(chroma)})


def tree_files(root: Path) -> dict[str, bytes]:
    """Every byte of every file under ``root``."""
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


PLACES: dict[str, Callable[[pytest.FixtureRequest, Path], Place]] = {
    "sqlite": sqlite_place,
    "redis": redis_place,
    "gcs": gcs_place,
    "copy": copy_place,
    "chroma": chroma_place,
}


@pytest.mark.parametrize("backend", PLACES)
def test_a_forgotten_marker_is_nowhere(backend: str, request: pytest.FixtureRequest,
                                       tmp_path: Path) -> None:
    place = PLACES[backend](request, tmp_path)
    mem = place.mem
    marker = f"marker-{uuid.uuid4().hex}"
    keep = mem.write_scope("unrelated", metadata={"agent_id": "a"})
    m = mem.write_scope(marker, metadata={"agent_id": "a", "group_id": "g", "note": marker})
    mem.update(m, {"text": marker, "again": [marker]})
    mem.write_scope("later", metadata={"agent_id": "b"})
    assert mem.as_of(mem.log.head()).get(m).value["text"] == marker  # snapshots hold it
    assert [e.memory_id for e in mem.read_scope(agent_id="a")] == [keep, m]
    place.after_write()
    assert found_in(place.dump(), marker)  # the scan sees it where it is

    mem.forget(m, reason="erasure")
    place.after_forget()

    assert found_in(place.dump(), marker) == []
    with pytest.raises(MemoryNotFoundError):
        mem.get(m)
    assert mem.verify().ok
    mem.close()
    for close in place.closers:
        close()
    assert found_in(place.dump(), marker) == []
