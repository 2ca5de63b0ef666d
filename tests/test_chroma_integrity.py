"""Issue 10 on the Chroma read model: vectors that do not fit are refused at the door and
never stop projection, forget leaves no trace in any file, projectors racing on one collection
converge to the fold, the view records its log, no leaked handles, no name collisions."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import chromadb
import pytest
from hypothesis import given
from hypothesis import strategies as st

from memswarm_es import ChromaSharedMemory, HybridMemory, SQLiteSharedMemory
from memswarm_es.errors import InvalidInputError, InvalidValueError, LogMismatchError
from memswarm_es.events import EventType, NewEvent, encode
from memswarm_es.log import SQLEventLog
from memswarm_es.scopes import Scope
from projections.chroma import ChromaReadModel, check_name, meta_name, pointer_name
from projections.chroma_guard import SERVER_RESIDUE
from projections.embedding import CachedEmbedder, EmbeddingCache
from projections.fold import Change, MemoryEntry, fold, select
from projections.projector import Projector

from .test_chroma import HashingEmbedder


def settings() -> chromadb.Settings:
    return chromadb.Settings(anonymized_telemetry=False)  # one each: clients change them

BAD_VECTORS: list[Any] = [
    [0.5] * 63, [0.5] * 65, [], "123", "0" * 64, b"\x00" * 64, 7, None.__class__,
    [True] * 64, ["1"] * 64, [float("nan")] * 64, [float("inf")] + [0.0] * 63,
    {"a": 1}, [[0.1]] * 64,
]


def hybrid(tmp: Path, embedder: HashingEmbedder | None = None) -> HybridMemory:
    return HybridMemory(ChromaSharedMemory(str(tmp / "chroma"),
                                           embedding_function=embedder or HashingEmbedder()),
                        SQLiteSharedMemory(str(tmp / "log.db")))


def model_on(path: Path, log: Any = None, name: str = "memswarm") -> ChromaReadModel:
    embedder = HashingEmbedder()
    path.mkdir(parents=True, exist_ok=True)
    client = chromadb.PersistentClient(str(path), settings=settings())
    return ChromaReadModel(client, CachedEmbedder(embedder, embedder.model_id,
                                                  EmbeddingCache(path / "vectors.db")), name)


def the_fold(log: Any) -> list[MemoryEntry]:
    return select(fold(log.read()).entries.values(), Scope())


# --- 1. vectors -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", BAD_VECTORS, ids=lambda v: repr(v)[:20])
def test_a_vector_that_does_not_fit_is_refused_and_nothing_is_written(
        tmp_path: Path, bad: Any) -> None:
    mem = hybrid(tmp_path)
    m = mem.write_scope("road closed", metadata={"agent_id": "a"}, embedding=[0.0] * 63 + [1.0])
    head = mem.log.head()
    with pytest.raises(InvalidValueError):
        mem.write_scope("x", metadata={"agent_id": "a"}, embedding=bad)
    with pytest.raises(InvalidValueError):
        mem.update(m, "y", embedding=bad)
    assert mem.log.head() == head
    mem.write_scope("road open", metadata={"agent_id": "a"})  # the store still works
    assert len(mem.search("road", k=5)) == 2


def test_the_projection_is_total_for_unusable_vectors_already_in_the_log(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = SQLEventLog(f"sqlite:///{tmp_path / 'log.db'}")
    bad = [[0.5] * 3, "123", [float("nan")] * 64, ["x"] * 64, {"k": 1}, [None] * 64, 12]
    # Recorded as another program (or an older version) could have: not checked at the door.
    log.append([NewEvent(type=EventType.MEMORY_WRITTEN, scope=Scope("a"), actor="a",
                         payload=encode({"value": f"note {i} road", "embedding": v,
                                         "metadata": {"big": (1 << 64) - 1, "ok": i}}),
                         memory_id=f"m{i}", version=1) for i, v in enumerate(bad)])
    model = model_on(tmp_path / "chroma")
    Projector(log, model, batch_size=3).catch_up()
    assert model.read_scope(Scope()) == the_fold(log)
    assert "embedding its text instead" in caplog.text
    hits = model.search("note 2 road", Scope("a"), k=1)
    assert hits[0].entry.memory_id == "m2"  # embedded from its text
    assert model.search("road", Scope(), k=3, where={"ok": {"$gte": 5}})


def test_a_damaged_entry_projects(tmp_path: Path) -> None:
    model = model_on(tmp_path / "chroma")
    damaged = MemoryEntry("m1", None, {}, "a", None, None, 1, 1, 1, 0, 0, "a", "a",
                          damaged="payload could not be decoded")
    model.commit([Change("m1", None, damaged)], 0, 1)
    assert model.read_scope(Scope()) == [damaged]
    assert model.search("anything", Scope("a"), k=1)[0].entry == damaged


# --- 2. forget --------------------------------------------------------------------------------


def traces(marker: str) -> list[bytes]:
    raw = marker.encode()
    found = [raw, hashlib.sha256(raw).hexdigest().encode(), hashlib.sha256(raw).digest()]
    for shift in range(3):  # base64 at each alignment inside a longer encoding
        encoded = base64.b64encode(b"\x00" * shift + raw)
        found.append(encoded[4:-4] if shift else encoded)
    return found


def files_holding(root: Path, needles: list[bytes]) -> list[str]:
    out: list[str] = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            data = (Path(dirpath) / name).read_bytes()
            out.extend(f"{name}: {n!r}" for n in needles if n in data)
    return out


def test_forget_leaves_no_trace_in_any_file_of_the_chroma_directory(tmp_path: Path) -> None:
    mem = hybrid(tmp_path)
    marker = "zebra-quartz-7f3e91-secret"
    earlier = "okapi-lumen-22c8d4-secret"
    for i in range(20):
        mem.write_scope(f"unrelated note {i}", metadata={"agent_id": "a"})
    m = mem.write_scope(earlier, metadata={"agent_id": "a", "tag": earlier})
    mem.update(m, marker, metadata={"tag": marker})
    gone = mem.write_scope(f"{marker} copy", metadata={"agent_id": "b"})
    mem.delete(gone)  # deleted first, forgotten later
    assert mem.search(marker, k=1)[0].entry.memory_id == m
    chroma = tmp_path / "chroma"
    assert files_holding(chroma, traces(marker))  # the scan sees what is there
    mem.forget(m, reason="erasure request")
    mem.forget(gone, reason="erasure request")
    assert mem.read_scope(agent_id="a")
    for needle in (marker, earlier, f"{marker} copy"):
        assert files_holding(chroma, traces(needle)) == [], needle
    mem.write_scope("after the forget", metadata={"agent_id": "a"})  # still works
    assert mem.read_scope() == the_fold(mem.log)
    mem.replay()
    assert mem.read_scope() == the_fold(mem.log)


# --- 3. projectors racing ---------------------------------------------------------------------


def race(tmp_path: Path, make_model: Any, memories: int) -> None:
    """Three projectors (batches of 1, 3, 7) catch one collection up while a writer writes,
    updates, deletes and forgets; the collection must end equal to the fold."""
    writer = SQLiteSharedMemory(str(tmp_path / "log.db"))
    url = f"sqlite:///{tmp_path / 'log.db'}"
    stop = threading.Event()
    errors: list[BaseException] = []

    def project(batch: int, model: ChromaReadModel) -> None:
        try:
            projector = Projector(SQLEventLog(url), model, batch_size=batch)
            while not stop.is_set():
                projector.catch_up()
            projector.catch_up()
        except BaseException as exc:  # reported below
            errors.append(exc)

    models = [make_model() for _ in range(3)]  # chromadb clients are not made thread-safely
    threads = [threading.Thread(target=project, args=(b, m))
               for b, m in zip((1, 3, 7), models, strict=True)]
    for t in threads:
        t.start()
    for i in range(memories):
        m = writer.write_scope(f"note {i}", metadata={"agent_id": f"a{i % 3}"})
        writer.update(m, f"note {i} revised")
        if i % 3 == 0:
            writer.delete(m)
        if i % 4 == 0:
            writer.forget(m, reason="test")
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    model = make_model()
    assert model.checkpoint() == writer.log.head()
    assert model.read_scope(Scope()) == the_fold(writer.log)
    assert model._docs.count() == len(the_fold(writer.log))


def test_projectors_racing_on_one_collection_converge_to_the_fold(tmp_path: Path) -> None:
    race(tmp_path, lambda: model_on(tmp_path / "chroma"), 60)


def test_projectors_racing_on_a_chroma_server_converge_to_the_fold(
        chroma_server: tuple[str, int], tmp_path: Path) -> None:
    host, port = chroma_server
    name = f"race{tmp_path.name[-8:]}"

    def make_model() -> ChromaReadModel:
        embedder = HashingEmbedder()
        client = chromadb.HttpClient(host=host, port=port, settings=settings())
        return ChromaReadModel(client, CachedEmbedder(
            embedder, embedder.model_id, EmbeddingCache(tmp_path / "vectors.db")), name)

    race(tmp_path, make_model, 15)
    assert make_model().forget_residue() == SERVER_RESIDUE


def test_forget_residue_names_what_stays(tmp_path: Path) -> None:
    assert "not their text" in (model_on(tmp_path / "c").forget_residue() or "")
    embedder = HashingEmbedder()
    memory = ChromaReadModel(chromadb.EphemeralClient(settings=settings()), CachedEmbedder(
        embedder, embedder.model_id, EmbeddingCache(tmp_path / "vectors.db")), "mem")
    assert memory.forget_residue() is None


# --- 4. log identity --------------------------------------------------------------------------


def test_the_collection_records_its_log_and_refuses_another(tmp_path: Path) -> None:
    one = SQLiteSharedMemory(str(tmp_path / "one.db"))
    other = SQLiteSharedMemory(str(tmp_path / "other.db"))
    for i in range(5):
        one.write_scope(f"one {i}", metadata={"agent_id": "a"})
        other.write_scope(f"other {i}", metadata={"agent_id": "a"})
    other.write_scope("other 5", metadata={"agent_id": "a"})
    model = model_on(tmp_path / "chroma")
    Projector(one.log, model).catch_up()
    assert model_on(tmp_path / "chroma").followed_log() == one.log.identity()
    before = model.read_scope(Scope())
    with pytest.raises(LogMismatchError):
        Projector(other.log, model_on(tmp_path / "chroma")).catch_up()
    stranger = model_on(tmp_path / "chroma")
    stranger.follow(other.log.identity())
    with pytest.raises(LogMismatchError):  # the commit itself refuses, changing nothing
        stranger.apply(other.log.read())
    assert model.read_scope(Scope()) == before and model.checkpoint() == 5
    model.clear()
    assert model.followed_log() is None
    Projector(other.log, model).catch_up()
    assert model.read_scope(Scope()) == the_fold(other.log)


# --- 5. handles -------------------------------------------------------------------------------


def test_open_and_close_leak_no_file_handles(tmp_path: Path) -> None:
    def cycle() -> None:
        mem = HybridMemory(ChromaSharedMemory(str(tmp_path / "c"),
                                              embedding_function=HashingEmbedder()),
                           SQLiteSharedMemory(str(tmp_path / "log.db")))
        mem.write_scope("x", metadata={"agent_id": "a"})
        mem.close()
        ChromaSharedMemory(str(tmp_path / "c"), embedding_function=HashingEmbedder()).close()

    def ours() -> list[str]:  # handles on our files (vector cache, locks, log), not chroma's
        found = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            name = os.path.basename(target)
            if target.startswith(str(tmp_path)) and (
                    name.startswith(("vectors.db", "log.db")) or name.endswith(".lock")):
                found.append(target)
        return sorted(found)

    cycle()
    start, held = len(os.listdir("/proc/self/fd")), ours()
    cycles = 25
    for _ in range(cycles):
        cycle()
    assert ours() == held
    assert len(os.listdir("/proc/self/fd")) - start < cycles  # less than one per cycle


# --- 6. names ---------------------------------------------------------------------------------


NAMES = st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9._-]{1,30}[a-zA-Z0-9]", fullmatch=True)


@given(NAMES, NAMES)
def test_no_user_collection_name_is_a_bookkeeping_name(a: str, b: str) -> None:
    try:
        check_name(b)
    except InvalidInputError:
        return
    assert b not in (meta_name(a) if "._" not in a else "", )
    for reserved in (meta_name, pointer_name):
        if "._" not in a:
            with pytest.raises(InvalidInputError):
                check_name(reserved(a))


def test_collections_x_and_x_meta_live_side_by_side(tmp_path: Path) -> None:
    log_x = SQLiteSharedMemory(str(tmp_path / "x.db"))
    log_y = SQLiteSharedMemory(str(tmp_path / "y.db"))
    x = HybridMemory(ChromaSharedMemory(str(tmp_path / "c"), embedding_function=HashingEmbedder(),
                                        collection="xxx"), log_x)
    y = HybridMemory(ChromaSharedMemory(str(tmp_path / "c"), embedding_function=HashingEmbedder(),
                                        collection="xxx-meta"), log_y)
    for i in range(4):
        x.write_scope(f"x {i}", metadata={"agent_id": "a"})
        y.write_scope(f"y {i}", metadata={"agent_id": "a"})
        y.write_scope(f"y {i} again", metadata={"agent_id": "a"})
    assert x.read_scope() == the_fold(x.log) and y.read_scope() == the_fold(y.log)
    assert x.read_model.checkpoint() == 4 and y.read_model.checkpoint() == 8
    with pytest.raises(InvalidInputError):
        ChromaSharedMemory(str(tmp_path / "c"), embedding_function=HashingEmbedder(),
                           collection="xxx._meta")


def test_documents_without_bookkeeping_are_rebuilt_not_trusted(tmp_path: Path) -> None:
    log = SQLiteSharedMemory(str(tmp_path / "log.db"))
    ids = [log.write_scope(f"note {i}", metadata={"agent_id": "a"}) for i in range(6)]
    model = model_on(tmp_path / "chroma")
    Projector(log.log, model).catch_up()
    log.delete(ids[0])
    log.forget(ids[1], reason="test")
    model.client.delete_collection(meta_name("memswarm"))  # lost, or kept under an old name
    again = model_on(tmp_path / "chroma")
    assert again.checkpoint() == 0 and again._docs.count() == 0
    Projector(log.log, again).catch_up()
    assert again.read_scope(Scope()) == the_fold(log.log)
