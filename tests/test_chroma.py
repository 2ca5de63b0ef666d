"""The Chroma read model against the real chromadb package: equal to the fold of the log for
hypothesis histories, scoped search that never leaks and ranks like brute force, the real
offline embedder, crash convergence, and no text embedded twice."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import chromadb
import numpy as np
import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from memswarm_es import ChromaSharedMemory, HybridMemory, SQLiteSharedMemory
from memswarm_es.errors import InvalidInputError, InvalidValueError, NotSupportedError
from memswarm_es.memory import InMemorySharedMemory, SharedMemory
from memswarm_es.reembed import reembed
from memswarm_es.scopes import Scope
from projections.chroma import ChromaReadModel, text_of
from projections.embedding import CachedEmbedder, EmbeddingCache
from projections.fold import fold, select
from projections.projector import Projector

from .test_properties import SETTINGS, MemoryMachine


class HashingEmbedder:
    """A deterministic bag-of-words embedder: each word adds to one of 64 dimensions."""

    model_id = "hashing-64"

    def __init__(self) -> None:
        self.calls = 0
        self.seen: list[str] = []  # every text it was asked to embed

    def __call__(self, texts: Sequence[str]) -> list[np.ndarray]:
        self.calls += len(texts)
        self.seen.extend(texts)
        out = []
        for text in texts:
            v = np.zeros(64, dtype=np.float32)
            for word in text.lower().split():
                v[hashlib.sha256(word.encode()).digest()[0] % 64] += 1.0
            v[63] += 0.01  # never the zero vector
            out.append(v / np.linalg.norm(v))
        return out


def chroma_memory(path: Path, embedder: HashingEmbedder | None = None) -> SharedMemory:
    return ChromaSharedMemory(str(path), embedding_function=embedder or HashingEmbedder())


class ChromaMachine(MemoryMachine):
    """The property machine on a Chroma read model: every step its documents must equal the
    plain model, the fold of the log, and a replay."""

    def open(self) -> SharedMemory:
        return chroma_memory(Path(self.dir) / "chroma")


def test_chroma_view_equals_the_fold_for_any_history() -> None:
    run_state_machine_as_test(ChromaMachine, settings=settings(SETTINGS, max_examples=12,
                                                               stateful_step_count=15))


IDS = ["a", "ab", "a:b", "a/b", "%", "日本", "a b"]


def test_scoped_search_never_leaves_its_scope_and_ranks_like_brute_force(
        tmp_path: Path) -> None:
    embedder = HashingEmbedder()
    mem = chroma_memory(tmp_path / "c", embedder)
    words = ["bridge road river", "cake chocolate sugar", "road closed detour", "river boat",
             "fuel tank low", "weather rain road"]
    for agent in IDS:
        for j, text in enumerate(words):
            mem.write_scope(f"{text} {agent}", metadata={"agent_id": agent, "group_id": IDS[j % 3],
                                                         "n": j}, context_id=IDS[-1 - j % 2])
    for agent in IDS:
        for scope in (Scope(agent_id=agent), Scope(agent_id=agent, group_id="a"),
                      Scope(context_id=agent), Scope(group_id=agent)):
            hits = mem.search("road river", scope.agent_id, scope.group_id, scope.context_id, k=4)
            inside = mem.read_scope(**dict(scope.parts()))
            assert all(scope.matches(h.entry.scope) for h in hits)
            (q,) = embedder(["road river"])
            brute = sorted(inside, key=lambda e: (1 - float(embedder([text_of(e.value)])[0] @ q),
                                                  e.position))[:4]
            assert [round(h.distance, 4) for h in hits] == [
                round(1 - float(embedder([text_of(e.value)])[0] @ q), 4) for e in brute]
            assert len(hits) == min(4, len(inside))
    assert all(h.entry.metadata["n"] >= 3 for h in mem.search("road", where={"n": {"$gte": 3}},
                                                              k=50))


def test_search_input_errors(tmp_path: Path) -> None:
    mem = chroma_memory(tmp_path / "c")
    mem.write_scope("x", metadata={"agent_id": "a"})
    for bad in ({"query": ""}, {"query": "x", "k": 0}, {"query": "x", "where": {"$bad": 1}},
                {"query": "x", "where": {"n": {"$regex": "x"}}}):
        with pytest.raises(InvalidInputError):
            mem.search(**bad)
    with pytest.raises(NotSupportedError):
        InMemorySharedMemory().search("x")


def test_the_real_embedder_finds_a_paraphrase(tmp_path: Path) -> None:
    mem = HybridMemory(ChromaSharedMemory(str(tmp_path / "c")),
                       SQLiteSharedMemory(str(tmp_path / "log.db")))
    target = mem.write_scope("The bridge on route 7 is closed for repairs",
                             metadata={"agent_id": "scout", "group_id": "g"})
    for text in ("The quarterly budget was approved", "Chocolate cake needs three eggs",
                 "The printer on floor 2 is out of toner", "Our team won the football match"):
        mem.write_scope(text, metadata={"agent_id": "other", "group_id": "g"})
    hits = mem.search("Which road can we not drive over?", group_id="g", k=5)
    assert hits[0].entry.memory_id == target
    assert hits[0].distance < hits[1].distance - 0.1


def test_a_projection_that_dies_mid_batch_converges_and_replay_embeds_nothing_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log_mem = SQLiteSharedMemory(str(tmp_path / "log.db"))
    for i in range(30):
        m = log_mem.write_scope(f"note {i} about roads", metadata={"agent_id": f"a{i % 3}"})
        if i % 4 == 0:
            log_mem.update(m, f"note {i} revised")
        if i % 7 == 0:
            log_mem.delete(m)
    embedder = HashingEmbedder()
    client = chromadb.PersistentClient(str(tmp_path / "chroma"),
                                       settings=chromadb.Settings(anonymized_telemetry=False))
    cache = EmbeddingCache(tmp_path / "vectors.db")
    model = ChromaReadModel(client, CachedEmbedder(embedder, embedder.model_id, cache))

    def die(*_args: object) -> None:
        raise OSError("killed after the documents, before the checkpoint")

    monkeypatch.setattr(model, "_set_checkpoint", die)
    with pytest.raises(OSError):
        Projector(log_mem.log, model, batch_size=10).catch_up()
    monkeypatch.undo()
    assert model.checkpoint() == 0  # the documents of the batch are there, the checkpoint not
    Projector(log_mem.log, model, batch_size=10).catch_up()
    expected = select(fold(log_mem.log.read()).entries.values(), Scope())
    assert model.read_scope(Scope()) == expected

    embedded = embedder.calls
    Projector(log_mem.log, model, batch_size=10).replay()
    assert model.read_scope(Scope()) == expected
    assert embedder.calls == embedded  # every text came from the cache
    before = set(embedder.seen)
    Projector(log_mem.log, model, batch_size=7).replay()  # other batches: other interim texts
    assert model.read_scope(Scope()) == expected
    assert not before & set(embedder.seen[embedded:])  # none of them embedded twice


def test_chroma_memories_reopen_with_their_documents(tmp_path: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/c"
        mem = HybridMemory(chroma_memory(Path(path)), SQLiteSharedMemory(f"{tmp}/log.db"))
        m = mem.write_scope("kept", metadata={"agent_id": "a"})
        again = HybridMemory(chroma_memory(Path(path)), SQLiteSharedMemory(f"{tmp}/log.db"))
        assert again.get(m) == mem.get(m)
        assert again.read_model.checkpoint() == 1


class OtherEmbedder(HashingEmbedder):
    """A second deterministic model: words hash into other dimensions."""

    model_id = "hashing-64-v2"

    def __call__(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.roll(v, 7) for v in super().__call__(texts)]


def test_reembed_under_concurrent_writes_misses_nothing(tmp_path: Path) -> None:
    mem = chroma_memory(tmp_path / "c")
    for i in range(200):
        mem.write_scope(f"note {i} about the road", metadata={"agent_id": f"a{i % 4}"})
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        i = 0
        while not stop.is_set():
            try:
                mem.write_scope(f"late note {i}", metadata={"agent_id": "late"})
                i += 1
            except BaseException as exc:  # reported below
                errors.append(exc)
                return

    thread = threading.Thread(target=writer)
    thread.start()
    other = OtherEmbedder()
    old_name = mem.read_model.name  # type: ignore[attr-defined]
    reports: list[tuple[int, int]] = []
    new = reembed(mem, other, other.model_id, progress=lambda p, h: reports.append((p, h)))
    at_switch = new.checkpoint()
    stop.set()
    thread.join()
    assert errors == []
    assert reports and reports[-1][0] >= 200
    assert mem.read_model is new
    events = mem.log.read()
    assert at_switch >= 200
    expected = select(fold(events).entries.values(), Scope())
    assert mem.read_scope() == expected  # nothing missing, the late writes included
    hit = mem.search("late note 3", agent_id="late", k=1)[0]  # embedded by the new model
    assert hit.entry.value == "late note 3" and hit.distance < 1e-5
    assert old_name not in {c.name for c in new.client.list_collections()}  # dropped


def test_after_reembed_a_restart_opens_the_new_collection(tmp_path: Path) -> None:
    def open_memory(embedder: HashingEmbedder) -> SharedMemory:
        return HybridMemory(ChromaSharedMemory(str(tmp_path / "c"), embedding_function=embedder),
                            SQLiteSharedMemory(str(tmp_path / "log.db")))

    mem = open_memory(HashingEmbedder())
    m = mem.write_scope("road closed", metadata={"agent_id": "a"})
    other = OtherEmbedder()
    new = reembed(mem, other, other.model_id)
    mem.close()
    with pytest.raises(InvalidInputError):
        open_memory(HashingEmbedder())  # the old model no longer matches the collection
    again = open_memory(OtherEmbedder())
    assert again.read_model.name == new.name  # type: ignore[attr-defined]
    assert again.get(m).value == "road closed"
    assert again.read_model.embedder.calls == 0  # type: ignore[attr-defined]


def test_the_read_model_on_a_chroma_server(chroma_server: tuple[str, int], tmp_path: Path) -> None:
    host, port = chroma_server
    client = chromadb.HttpClient(host=host, port=port,
                                 settings=chromadb.Settings(anonymized_telemetry=False))
    mem = HybridMemory(ChromaSharedMemory(str(tmp_path / "c"), client=client,
                                          embedding_function=HashingEmbedder(),
                                          collection=f"t{tmp_path.name[-8:]}"),
                       SQLiteSharedMemory(str(tmp_path / "log.db")))
    for i, agent in enumerate(IDS):
        m = mem.write_scope(f"road note {i}", metadata={"agent_id": agent, "group_id": "g"})
        if i % 2:
            mem.update(m, f"river note {i}")
    mem.delete(mem.read_scope(agent_id="a")[0].memory_id)
    expected = select(fold(mem.log.read()).entries.values(), Scope())
    assert mem.read_scope() == expected
    assert all(h.entry.agent_id == "a:b" for h in mem.search("river", agent_id="a:b", k=5))
    mem.replay()
    assert mem.read_scope() == expected


PROJECTOR = """
import sys, chromadb
from memswarm_es.log import SQLEventLog
from projections.chroma import ChromaReadModel
from projections.embedding import CachedEmbedder, EmbeddingCache
from projections.projector import Projector
from tests.test_chroma import HashingEmbedder
settings = chromadb.Settings(anonymized_telemetry=False)
client = chromadb.PersistentClient(sys.argv[2], settings=settings)
embedder = HashingEmbedder()
cache = EmbeddingCache(sys.argv[3])
model = ChromaReadModel(client, CachedEmbedder(embedder, embedder.model_id, cache))
Projector(SQLEventLog(sys.argv[1]), model, batch_size=5).catch_up(
    progress=lambda position, head: print(position, flush=True))
"""


def test_a_projector_killed_with_sigkill_resumes_to_exactly_the_fold(tmp_path: Path) -> None:
    log_mem = SQLiteSharedMemory(str(tmp_path / "log.db"), synchronous="OFF")
    for i in range(600):
        m = log_mem.write_scope(f"note {i}", metadata={"agent_id": f"a{i % 5}"})
        if i % 3 == 0:
            log_mem.update(m, f"note {i} revised")
        if i % 11 == 0:
            log_mem.delete(m)
    url = f"sqlite:///{tmp_path / 'log.db'}"
    root = Path(__file__).resolve().parent.parent
    child = subprocess.Popen(
        [sys.executable, "-c", PROJECTOR, url, str(tmp_path / "chroma"),
         str(tmp_path / "vectors.db")], cwd=root, stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(root)))
    assert child.stdout is not None
    seen = [child.stdout.readline() for _ in range(4)]
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert all(line.strip().isdigit() for line in seen)

    client = chromadb.PersistentClient(str(tmp_path / "chroma"),
                                       settings=chromadb.Settings(anonymized_telemetry=False))
    embedder = HashingEmbedder()
    model = ChromaReadModel(client, CachedEmbedder(embedder, embedder.model_id,
                                                   EmbeddingCache(tmp_path / "vectors.db")))
    assert 0 < model.checkpoint() < log_mem.log.head()
    Projector(log_mem.log, model, batch_size=7).catch_up()
    assert model.read_scope(Scope()) == select(fold(log_mem.log.read()).entries.values(),
                                               Scope())


def make_other_embedder() -> OtherEmbedder:
    """A factory for `memswarm reembed --model tests.test_chroma:make_other_embedder`."""
    return OtherEmbedder()


def test_memswarm_reembed_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from memswarm_es.cli import main

    chroma = ChromaSharedMemory(str(tmp_path / "c"), embedding_function=HashingEmbedder())
    mem = HybridMemory(chroma, SQLiteSharedMemory(str(tmp_path / "log.db")))
    m = mem.write_scope("road closed", metadata={"agent_id": "a"})
    mem.close()
    assert main(["reembed", "--log", f"sqlite:///{tmp_path / 'log.db'}", "--path",
                 str(tmp_path / "c"), "--model", "tests.test_chroma:make_other_embedder"]) == 0
    out = capsys.readouterr().out
    assert "switched memswarm to memswarm--hashing-64-v2" in out
    chroma = ChromaSharedMemory(str(tmp_path / "c"), embedding_function=OtherEmbedder())
    again = HybridMemory(chroma, SQLiteSharedMemory(str(tmp_path / "log.db")))
    assert again.search("road", k=1)[0].entry.memory_id == m


def test_a_write_may_carry_its_own_vector_and_replay_keeps_it(tmp_path: Path) -> None:
    embedder = HashingEmbedder()
    mem = chroma_memory(tmp_path / "c", embedder)
    own = [0.0] * 63 + [1.0]
    m = mem.write_scope("a text the embedder never sees", metadata={"agent_id": "a"},
                        embedding=own)
    other = mem.write_scope("embedded by the model", metadata={"agent_id": "a"})
    assert "a text the embedder never sees" not in embedder.seen

    def stored(memory_id: str) -> list[float]:
        docs = mem.read_model._docs  # type: ignore[attr-defined]
        return [float(x) for x in docs.get(ids=[memory_id], include=["embeddings"])
                ["embeddings"][0]]

    assert stored(m) == own
    mem.replay()
    assert stored(m) == own and stored(other) != own
    with pytest.raises(InvalidValueError):
        mem.write_scope("x", embedding=[float("nan")])
    with pytest.raises(InvalidValueError):
        mem.write_scope("x", embedding="not a vector")  # type: ignore[arg-type]


def test_opening_chroma_reads_no_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """chromadb's settings read ``.env`` from the working directory unless told not to."""
    (tmp_path / ".env").write_text("ALLOW_RESET=True\nCHROMA_SERVER_HOST=evil.example\n")
    monkeypatch.chdir(tmp_path)
    from projections.chroma_open import settings

    opened = settings()
    assert opened.allow_reset is False and opened.chroma_server_host is None
