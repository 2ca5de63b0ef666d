"""The ReadModel contract, run against every read model, each opened by its URL: in-memory,
Redis, Chroma in a directory, Chroma on a server, and the SQL view in SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import json
import pickle
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from memswarm_es.errors import CheckpointConflictError, InvalidInputError, LogMismatchError
from memswarm_es.events import encode
from memswarm_es.log import InProcessLog
from memswarm_es.scopes import Scope
from projections import open_read_model
from projections.base import LeaseProvider, ReadModel, SearchableReadModel
from projections.fold import changes
from projections.frozen import FrozenDict, freeze, is_frozen
from projections.in_memory import InMemoryReadModel
from projections.projector import Projector
from tests.histories import assert_is_fold, fill

from .test_chroma import HashingEmbedder

EVENTS = 150  # Chroma embeds every text: kept small

Opener = Callable[[], ReadModel]


@pytest.fixture(params=["memory", "redis", "chroma", "chroma-server", "sql", "sql-postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens the read model under test again each time it is called (every call sees the same
    data, except for ``memory://``, which is a new model each time)."""
    options: dict[str, object] = {}
    if request.param == "memory":
        url = "memory://"
    elif request.param == "redis":
        url = (f"{request.getfixturevalue('redis_url')}"
               f"?prefix={request.getfixturevalue('redis_prefix')}")
    elif request.param == "sql":  # the SQL view in a SQLite log's file
        url = f"sql+sqlite:///{tmp_path / 'view.db'}"
    elif request.param == "sql-postgres":  # and in a PostgreSQL log's database
        url = f"sql+{request.getfixturevalue('postgres_url')}"
        options["prefix"] = f"t{uuid.uuid4().hex[:12]}"
    elif request.param == "chroma":
        url = f"chroma:///{tmp_path / 'chroma'}?collection=contract"
        options["embedding_function"] = HashingEmbedder()
    else:
        host, port = request.getfixturevalue("chroma_server")
        url = f"chroma+http://{host}:{port}?collection=t{uuid.uuid4().hex[:12]}"
        options["embedding_function"] = HashingEmbedder()
    opened: list[ReadModel] = []

    def open_model() -> ReadModel:
        opened.append(open_read_model(url, **options))
        return opened[-1]

    yield open_model
    opened[-1].drop()
    for model in opened:
        model.close()


@pytest.fixture
def model(opener: Opener) -> ReadModel:
    return opener()


def filled_log(seed: int = 0) -> InProcessLog:
    log = InProcessLog()
    fill(log, EVENTS, seed=seed, batch=50)
    return log


def test_a_new_model_is_empty_and_follows_no_log(model: ReadModel) -> None:
    assert model.checkpoint() == 0
    assert model.followed_log() is None
    assert model.read_scope(Scope()) == []
    assert model.get_many(["nothing"]) == {}


def test_apply_folds_the_log_and_moves_the_checkpoint(model: ReadModel) -> None:
    log = filled_log()
    events = log.read(0, EVENTS)
    assert model.apply(events[:60]) == 60
    assert_is_fold(model, log, 60)  # scoped reads: every combination of the scope parts
    assert model.apply(events[40:]) == EVENTS  # what is at or before the checkpoint is skipped
    assert model.apply(events) == EVENTS  # applying a batch again changes nothing
    assert_is_fold(model, log)
    live = model.read_scope(Scope())
    assert model.get_many([e.memory_id for e in live[:5]] + ["nothing"]) == {
        e.memory_id: e for e in live[:5]}
    assert model.get(live[0].memory_id) == live[0]


def test_a_batch_that_does_not_follow_the_checkpoint_is_refused(model: ReadModel) -> None:
    events = filled_log().read(0, EVENTS)
    with pytest.raises(CheckpointConflictError):
        model.apply(events[10:20])  # a gap after the checkpoint
    assert model.checkpoint() == 0
    assert model.read_scope(Scope()) == []


def test_a_commit_against_a_checkpoint_that_moved_changes_nothing(model: ReadModel) -> None:
    log = filled_log()
    events = log.read(0, EVENTS)
    model.apply(events[:50])
    late = changes(model.get_many(e.memory_id for e in events[50:60] if e.memory_id),
                   events[50:60])
    with pytest.raises(CheckpointConflictError) as conflict:
        model.commit(late, 40, 60, events[50:60])  # folded against an older checkpoint
    assert (conflict.value.expected, conflict.value.actual) == (40, 50)
    assert_is_fold(model, log, 50)


def test_a_model_records_its_log_and_refuses_another(model: ReadModel) -> None:
    mine, other = filled_log(1), filled_log(2)
    Projector(mine, model).catch_up()
    assert model.followed_log() == mine.identity()
    model.follow(other.identity())  # a projector of the other log, past its own check
    with pytest.raises(LogMismatchError):
        model.commit(changes({}, other.read(0, 1)), EVENTS, EVENTS + 1)
    assert model.followed_log() == mine.identity()
    assert_is_fold(model, mine)


def test_the_same_url_opens_the_same_view(opener: Opener, model: ReadModel,
                                          request: pytest.FixtureRequest) -> None:
    log = filled_log()
    Projector(log, model).catch_up()
    again = opener()
    if "memory" in request.node.callspec.id:  # a view in this object alone: a new one is empty
        assert (again.checkpoint(), again.followed_log()) == (0, None)
        return
    assert again.followed_log() == log.identity()
    assert_is_fold(again, log)


def test_clear_empties_the_view_and_forgets_the_log(model: ReadModel) -> None:
    log = filled_log()
    Projector(log, model).catch_up()
    model.clear()
    assert model.checkpoint() == 0
    assert model.followed_log() is None
    assert model.read_scope(Scope()) == []
    other = filled_log(3)
    Projector(other, model).catch_up()  # a cleared model may follow any log
    assert_is_fold(model, other)


def test_drop_deletes_everything_the_model_holds(opener: Opener, model: ReadModel) -> None:
    log = filled_log()
    Projector(log, model).catch_up()
    model.drop()
    again = opener()
    assert (again.checkpoint(), again.followed_log(), again.read_scope(Scope())) == (0, None, [])


def test_a_replay_rebuilds_the_view_beside_or_in_place(model: ReadModel) -> None:
    log = filled_log()
    Projector(log, model).catch_up()
    staged = model.staging()
    if staged is None:  # no room for two views: replay clears it and rebuilds it, marked
        with pytest.raises(NotImplementedError):
            model.switch_to(model)
    else:
        try:
            Projector(log, staged).catch_up(until=EVENTS // 2)
            assert not model.switch_to(staged)  # the served view is ahead: nothing changes
            assert_is_fold(model, log)
            Projector(log, staged).catch_up()
            assert model.switch_to(staged)
            assert_is_fold(model, log)
        finally:
            staged.close()
    assert Projector(log, model).replay() == EVENTS
    assert_is_fold(model, log)


def test_a_wait_ends_when_a_commit_reaches_the_position(model: ReadModel) -> None:
    events = filled_log().read(0, EVENTS)
    model.apply(events[:10])
    assert model.wait(9, 0.0)
    assert not model.wait(10, 0.05)
    later = threading.Timer(0.1, model.apply, [events[10:20]])
    later.start()
    try:
        assert model.wait(19, 30.0)
    finally:
        later.join()
    assert model.checkpoint() == 20


def test_capabilities_are_typed(model: ReadModel, request: pytest.FixtureRequest) -> None:
    searches = "chroma" in request.node.callspec.id
    assert isinstance(model, SearchableReadModel) == searches
    assert isinstance(model, LeaseProvider) == ("redis" in request.node.callspec.id)
    if isinstance(model, SearchableReadModel):
        log = filled_log()
        Projector(log, model).catch_up()
        hits = model.search("v", Scope(agent_id="a"), k=3)
        assert 0 < len(hits) <= 3
        assert all(h.entry.agent_id == "a" for h in hits)
    if isinstance(model, LeaseProvider):
        lease = model.lease(5.0)
        assert lease.acquire("one") and not lease.acquire("two")
        assert lease.holder() == "one"
        lease.release("one")
        assert lease.holder() is None


@pytest.mark.parametrize("url", ["", "memory", "sqlite:///x.db", "memory://x", "chroma://",
                                 "chroma://host/x", "chroma+http://?collection=c",
                                 "chroma:///x?collection=a._b", "chroma:///x?other=1"])
def test_a_url_that_names_no_read_model_is_refused(url: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInputError):
        open_read_model(url, embedding_function=HashingEmbedder())


def test_a_redis_prefix_is_given_once(redis_url: str, redis_prefix: str) -> None:
    with pytest.raises(InvalidInputError):
        open_read_model(f"{redis_url}?prefix={redis_prefix}", prefix="other")


# --- read-only content (projections.frozen) -------------------------------------------------


def test_frozen_content_equals_what_it_freezes_and_refuses_every_change() -> None:
    content = {"a": [1, {"b": [2, 3]}], "c": {"d": None}, "e": "text"}
    held = freeze(content)
    assert held == content and isinstance(held, dict) and isinstance(held["a"], list)
    assert encode(held) == encode(content) and json.dumps(held) == json.dumps(content)
    for copied in (copy.deepcopy(held), pickle.loads(pickle.dumps(held)), copy.copy(held)):
        assert copied == content and type(copied) is FrozenDict
    assert freeze(held) is held  # frozen already: kept as it is
    inner = held["a"][1]["b"]
    changes: list[Callable[[], object]] = [
        lambda: held.__setitem__("x", 1), lambda: held.pop("a"), lambda: held.update(x=1),
        lambda: held.setdefault("x", 1), lambda: held.popitem(), lambda: held.clear(),
        lambda: held.__delitem__("a"), lambda: held.__ior__({"x": 1}),
        lambda: inner.append(4), lambda: inner.extend([4]), lambda: inner.insert(0, 4),
        lambda: inner.pop(), lambda: inner.remove(2), lambda: inner.sort(),
        lambda: inner.reverse(), lambda: inner.clear(), lambda: inner.__setitem__(0, 9),
        lambda: inner.__delitem__(0), lambda: inner.__iadd__([4]), lambda: inner.__imul__(2),
        lambda: held.__init__(x=1), lambda: inner.__init__([7, 7])]  # type: ignore[misc]
    for change in changes:
        with pytest.raises(TypeError, match="read-only"):
            change()
    assert held == content
    assert dict(held) == content and type(dict(held)) is dict  # a copy to change


def test_the_in_memory_model_hands_out_its_entries_uncopied_and_read_only() -> None:
    model = InMemoryReadModel()
    log = InProcessLog()
    fill(log, 60)
    Projector(log, model).catch_up()
    first = model.read_scope(Scope())
    assert first and all(is_frozen(e) for e in first)
    again = model.read_scope(Scope())
    assert all(a is b for a, b in zip(first, again, strict=True))
    by_id = model.get_many([e.memory_id for e in first])
    assert all(by_id[e.memory_id] is e for e in first)
    assert_is_fold(model, log)  # equal to the fold, frozen or not
