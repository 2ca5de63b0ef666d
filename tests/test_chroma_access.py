"""Access in the Chroma read model (issue 12), in a directory and on a server: an agent reads and
searches only what it may read, filtered inside Chroma; permission changes and leaving a group
take effect at once; principals of one kind never grant as the other; memberships are part of
the view through crashes, replay, a re-embedding switch and reopening."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from memswarm_es.events import EventType, NewEvent, new_id
from memswarm_es.log import InProcessLog
from memswarm_es.memory import SharedMemory
from memswarm_es.reembed import reembed
from memswarm_es.scopes import Scope
from projections import open_read_model
from projections.chroma import ChromaReadModel, text_of
from projections.chroma_open import open_chroma
from projections.fold import fold
from projections.projector import Projector
from tests.histories import AGENTS, assert_is_fold, fill

from .test_chroma import HashingEmbedder, OtherEmbedder

Opener = Callable[[], ChromaReadModel]


@pytest.fixture(params=["dir", "server"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens the Chroma view under test again each time it is called (the same data)."""
    if request.param == "dir":
        url = f"chroma:///{tmp_path / 'chroma'}?collection=access"
    else:
        host, port = request.getfixturevalue("chroma_server")
        url = f"chroma+http://{host}:{port}?collection=a{uuid.uuid4().hex[:12]}"
    opened: list[ChromaReadModel] = []

    def open_model() -> ChromaReadModel:
        model = open_read_model(url, embedding_function=HashingEmbedder())
        assert isinstance(model, ChromaReadModel)
        opened.append(model)
        return model

    yield open_model
    opened[-1].drop()
    for model in opened:
        model.close()


@pytest.fixture
def model(opener: Opener) -> ChromaReadModel:
    return opener()


class History:
    """Events appended to an in-process log, and projected into ``model`` by :meth:`sync`."""

    def __init__(self, model: ChromaReadModel) -> None:
        self.log = InProcessLog()
        self.model = model
        self.versions: dict[str, tuple[Scope, int]] = {}

    def write(self, agent: str, text: str, group: str | None = None, **data: Any) -> str:
        memory_id = new_id()
        scope = Scope(agent, group)
        self.versions[memory_id] = (scope, 1)
        self.log.append([NewEvent.create(EventType.MEMORY_WRITTEN, scope, agent,
                                         {"value": text, **data}, memory_id=memory_id,
                                         version=1, event_id=memory_id)])
        return memory_id

    def write_many(self, agent: str, texts: list[str], **data: Any) -> list[str]:
        events = []
        for text in texts:
            memory_id = new_id()
            self.versions[memory_id] = (Scope(agent), 1)
            events.append(NewEvent.create(EventType.MEMORY_WRITTEN, Scope(agent), agent,
                                          {"value": text, **data}, memory_id=memory_id,
                                          version=1, event_id=memory_id))
        self.log.append(events)
        return [e.memory_id for e in events if e.memory_id is not None]

    def update(self, memory_id: str, **data: Any) -> None:
        scope, version = self.versions[memory_id]
        self.versions[memory_id] = (scope, version + 1)
        self.log.append([NewEvent.create(EventType.MEMORY_UPDATED, scope, "operator", data,
                                         memory_id=memory_id, version=version + 1)])

    def join(self, agent: str, group: str, admin: bool = False) -> None:
        self.log.append([NewEvent.create(EventType.GROUP_JOINED, Scope(agent, group),
                                         "operator", {"admin": admin})])

    def leave(self, agent: str, group: str) -> None:
        self.log.append([NewEvent.create(EventType.GROUP_LEFT, Scope(agent, group),
                                         "operator", {})])

    def sync(self) -> None:
        Projector(self.log, self.model, batch_size=500).catch_up()


def ids_read(model: ChromaReadModel, reader: str | None, query: str = "note") -> set[str]:
    """What ``reader`` finds of every memory by each path: a scoped read, get_many, search."""
    everything = [e.memory_id for e in model.read_scope(Scope())]
    read = {e.memory_id for e in model.read_scope(Scope(), reader)}
    assert set(model.get_many(everything, reader)) == read
    found = {h.entry.memory_id for h in model.search(query, Scope(), k=100, reader=reader)}
    assert found == read
    return read


WORDS = ["road", "cake", "fuel", "rain", "boat", "tank", "sugar", "detour", "river"]
QUERIES = ["road river bridge", "bridge", "river road", "detour road"]


def crowded(model: ChromaReadModel, seed: int, near: int = 4000) -> list[str]:
    """``near`` memories near the :data:`QUERIES` (many of them the same vector) that only
    their owner may read, and the ids of 15 farther ones that ``reader`` may read, projected."""
    rng = random.Random(seed)
    texts = [(f"road river bridge {rng.randrange(10**6)}", False) for _ in range(near)]
    texts += [(f"{rng.choice(WORDS)} {rng.choice(WORDS)} {i}", True) for i in range(15)]
    rng.shuffle(texts)  # the readable ones enter the vector index among the others
    history = History(model)
    readable = [history.write("owner", text, readable_by=["agent:reader"]) if shared
                else history.write("owner", text) for text, shared in texts]
    history.sync()
    return [m for m, (_, shared) in zip(readable, texts, strict=True) if shared]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_search_by_an_agent_is_the_true_top_k_among_what_it_may_read(
        model: ChromaReadModel, seed: int) -> None:
    """Chroma's vector index, filtering, misses some of a few readable memories among
    thousands of nearer ones; a filter that keeps few documents ranks them exactly."""
    readable = crowded(model, seed)
    embedder = HashingEmbedder()
    entries = model.get_many(readable)
    for query in QUERIES:
        (vector,) = embedder([query])
        brute = sorted(1 - float(embedder([text_of(e.value)])[0] @ vector)
                       for e in entries.values())[:10]
        hits = model.search(query, Scope(), k=10, reader="reader")
        assert {h.entry.memory_id for h in hits} <= set(readable)
        assert [round(h.distance, 4) for h in hits] == [round(d, 4) for d in brute], query
        assert len(model.search(query, Scope(agent_id="owner"), k=100,
                                reader="reader")) == 15  # never fewer when k exist
    nearest = model.search("road river bridge", Scope(), k=1)[0]
    assert nearest.entry.memory_id not in readable  # the operator ranks them all


def test_a_search_above_the_exact_limit_never_returns_fewer_than_k_when_k_exist(
        model: ChromaReadModel) -> None:
    """Above :attr:`exact_search` documents the vector index ranks; where it finds fewer than
    ``k``, all that the filter keeps are ranked exactly (a few at a time)."""
    model.exact_search = 4
    readable = crowded(model, seed=3)
    for query in QUERIES:
        for k in (10, 15, 100):
            hits = model.search(query, Scope(), k=k, reader="reader")
            assert len(hits) == min(k, 15), (query, k)
            assert {h.entry.memory_id for h in hits} <= set(readable)
            assert [h.distance for h in hits] == sorted(h.distance for h in hits)


def test_a_memory_made_unreadable_while_a_search_ranks_is_passed_over(
        model: ChromaReadModel, monkeypatch: pytest.MonkeyPatch) -> None:
    """An exact search ranks the vectors, then reads the nearest with the reader's filter: one
    that a commit in between made unreadable is not returned, and the next one takes its place."""
    history = History(model)
    for i in range(12):
        history.write("owner", f"road note {i}", readable_by=["agent:reader"])
    history.sync()
    nearest = model.search("road note 0", Scope(), k=1, reader="reader")[0].entry.memory_id
    real = model._docs.get

    def get_then_revoke(*args: Any, **kwargs: Any) -> Any:
        found = real(*args, **kwargs)
        if kwargs.get("include") == ["embeddings"]:  # the vectors are read: now commit
            monkeypatch.setattr(model._docs, "get", real)
            history.update(nearest, readable_by=["agent:owner"])
            history.sync()
        return found

    monkeypatch.setattr(model._docs, "get", get_then_revoke)
    hits = model.search("road note 0", Scope(), k=10, reader="reader")
    assert model._docs.get == real  # the commit came between the two reads
    assert len(hits) == 10 and nearest not in {h.entry.memory_id for h in hits}


def test_a_permission_change_removes_a_memory_from_reads_and_search(
        model: ChromaReadModel) -> None:
    history = History(model)
    history.join("member", "g")
    shared = history.write("owner", "note shared", readable_by=["agent:reader", "group:g"],
                           metadata={"topic": "roads"})
    history.sync()
    assert ids_read(model, "reader") == ids_read(model, "member") == {shared}
    assert model.search("note", Scope(), where={"topic": "roads"}, reader="reader")
    history.update(shared, readable_by=["agent:owner"], metadata={})
    history.sync()
    assert ids_read(model, "reader") == ids_read(model, "member") == set()
    assert ids_read(model, "owner") == ids_read(model, None) == {shared}
    assert model.get(shared, "reader") is None
    assert model.search("note", Scope(), where={"topic": "roads"}) == []  # the key went too
    stored = model._docs.get(ids=[shared], include=["metadatas"])["metadatas"][0]
    assert {k for k in stored if k.startswith(("r:", "md:"))} == {"r:agent:owner"}
    assert type(stored["r:agent:owner"]) is int  # Chroma indexes ints, not bools
    history.update(shared, readable_by=["*"])
    history.sync()
    assert ids_read(model, "anyone") == {shared}
    assert model.get(shared, "anyone") == model.get(shared)


def test_leaving_a_group_removes_access_at_once(model: ChromaReadModel) -> None:
    history = History(model)
    history.join("c", "g1")
    history.join("c", "g2", admin=True)
    by_g1 = history.write("owner", "note one", group="g1")  # default: its agent and group
    by_g2 = history.write("owner", "note two", readable_by=["group:g2"])
    own = history.write("c", "note three")
    history.sync()
    assert model.groups_of("c") == {"g1": False, "g2": True}
    assert ids_read(model, "c") == {by_g1, by_g2, own}
    history.leave("c", "g1")
    history.sync()
    assert model.members("g1") == {}
    assert model.groups_of("c") == {"g2": True}
    assert ids_read(model, "c") == {by_g2, own}
    history.leave("c", "g2")
    history.join("c", "g1")
    history.sync()
    assert ids_read(model, "c") == {by_g1, own}


def test_a_group_id_equal_to_an_agent_id_never_grants_access(model: ChromaReadModel) -> None:
    history = History(model)
    history.join("a", "b")  # agent a in group b; agent b in group a:b; agent a:b in group a
    history.join("b", "a:b")
    history.join("a:b", "a")
    history.join("b:b", "a")  # (group, agent) pairs that read alike if joined with ":"
    to_group_a = history.write("w", "note for group a", readable_by=["group:a"])
    to_agent_a = history.write("w", "note for agent a", readable_by=["agent:a"])
    to_group_b_c = history.write("w", "note for group b:c", readable_by=["group:b:c"])
    history.sync()
    assert ids_read(model, "a") == {to_agent_a}  # not a member of group a
    assert ids_read(model, "a:b") == ids_read(model, "b:b") == {to_group_a}  # group a's
    assert ids_read(model, "b") == set()
    assert ids_read(model, "c") == set()  # group b:c is no agent c in group b
    assert model.members("a") == {"a:b": False, "b:b": False}
    assert model.members("a:b") == {"b": False}
    assert model.members("b") == {"a": False}
    assert model.groups_of("b") == {"a:b": False}
    assert (model.members("b:c"), model.groups_of("c")) == ({}, {})
    assert to_group_b_c in {e.memory_id for e in model.read_scope(Scope())}


def test_memberships_survive_replay_a_crash_and_reopening(opener: Opener,
                                                           model: ChromaReadModel,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    log = InProcessLog()
    fill(log, 150, seed=4, batch=50)
    assert fold(log.read()).members  # the history holds memberships

    def die(*_args: object) -> None:
        raise OSError("killed after the documents and memberships, before the checkpoint")

    Projector(log, model, batch_size=40).catch_up(until=40)
    monkeypatch.setattr(model, "_set_checkpoint", die)
    with pytest.raises(OSError):
        Projector(log, model, batch_size=40).catch_up()
    monkeypatch.undo()
    assert model.checkpoint() == 40
    Projector(log, model, batch_size=30).catch_up()
    assert_is_fold(model, log)
    Projector(log, model).replay()
    assert_is_fold(model, log)
    assert_is_fold(opener(), log)
    model.clear()
    assert all(model.groups_of(agent) == {} for agent in AGENTS)


def test_memberships_without_a_checkpoint_are_not_trusted(tmp_path: Path) -> None:
    model = open_chroma(str(tmp_path / "c"), embedding_function=HashingEmbedder())
    log = InProcessLog()
    log.append([NewEvent.create(EventType.GROUP_JOINED, Scope("a", "g"), "operator",
                                {"admin": True})])
    Projector(log, model).catch_up()
    model._meta.delete(ids=["checkpoint"])  # the bookkeeping lost its checkpoint
    model.close()
    again = open_chroma(str(tmp_path / "c"), embedding_function=HashingEmbedder())
    assert (again.checkpoint(), again.members("g")) == (0, {})
    again.close()


def test_memberships_follow_a_reembedding_switch_and_a_restart(tmp_path: Path) -> None:
    log = InProcessLog()
    fill(log, 150, seed=5, batch=50)
    model = open_chroma(str(tmp_path / "c"), embedding_function=HashingEmbedder())
    memory = SharedMemory(log, model)
    assert_is_fold(model, log)
    other = OtherEmbedder()
    new = reembed(memory, other, other.model_id)
    assert new.name != model.name
    assert_is_fold(new, log)
    memory.read_model.close()
    again = open_chroma(str(tmp_path / "c"), embedding_function=OtherEmbedder())
    assert again.name == new.name
    assert_is_fold(again, log)
    again.close()


def test_no_moment_of_a_commit_grants_more_than_its_end(model: ChromaReadModel,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch where B leaves G and a memory for G is written, killed between its documents
    and its joins: a reader meanwhile (or after the crash) sees no more than the batch allows."""
    history = History(model)
    history.join("b", "g")
    history.sync()
    history.leave("b", "g")
    history.write("a", "after b left", group="g")
    history.join("c", "g")
    real = model._put_memberships

    def die_at_joins(batch: Any) -> None:
        if any(c.admin is not None for c in batch):
            raise OSError("killed before the joins")
        real(batch)

    monkeypatch.setattr(model, "_put_memberships", die_at_joins)
    with pytest.raises(OSError):
        history.sync()
    monkeypatch.undo()
    assert model.read_scope(Scope(), "b") == [] and model.read_scope(Scope(), "c") == []
    history.sync()
    assert model.read_scope(Scope(), "b") == [] and len(model.read_scope(Scope(), "c")) == 1


def test_a_collection_of_an_older_format_is_rebuilt_by_replay(opener: Opener,
                                                              model: ChromaReadModel) -> None:
    """Format 1 flagged readers with bools, which the readers' filter no longer matches: such a
    collection is cleared when opened, not read as if nobody could read anything."""
    log = InProcessLog()
    fill(log, 150, seed=6, batch=50)
    Projector(log, model).catch_up()
    found = model._docs.get(include=["metadatas"])
    model._docs.update(ids=found["ids"], metadatas=[
        {k: True if k.startswith("r:") else v for k, v in meta.items()}
        for meta in found["metadatas"]])
    record = model._meta.get(ids=["checkpoint"], include=["metadatas"])["metadatas"][0]
    model._meta.upsert(ids=["checkpoint"], embeddings=[[0.0]], metadatas=[
        {"position": record["position"], "log_id": record["log_id"], "format": None}])
    again = opener()
    assert again.checkpoint() == 0 and again.read_scope(Scope()) == []
    Projector(log, again).catch_up()
    assert_is_fold(again, log)


def test_a_clear_killed_midway_is_finished_by_the_next_open(opener: Opener,
                                                            model: ChromaReadModel,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    log = InProcessLog()
    fill(log, 150, seed=5, batch=50)
    Projector(log, model).catch_up()
    real = model.client.delete_collection

    def die(*_args: object) -> None:
        raise OSError("killed after the checkpoint and the memberships went")

    monkeypatch.setattr(model.client, "delete_collection", die)
    with pytest.raises(OSError):
        model.clear()
    monkeypatch.setattr(model.client, "delete_collection", real)
    again = opener()  # documents without a checkpoint: cleared, then rebuilt from the log
    assert again.checkpoint() == 0
    Projector(log, again).catch_up()
    assert_is_fold(again, log)
