"""A misconfigured agent cannot wipe the shared view: a read model records the identity of the
log it follows, and projectors, runners and ``memswarm project``/``replay`` refuse (touching
nothing) the view of another log; read commands never create a log; taking a view over is an
explicit operator action."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memswarm_es import RedisSharedMemory, SharedMemory
from memswarm_es.cli import main
from memswarm_es.errors import LogMismatchError
from memswarm_es.log import InProcessLog, SQLEventLog
from memswarm_es.scopes import Scope
from projections.base import ReadModel, link_at, link_text
from projections.fold import MemoryEntry, changes
from projections.in_memory import InMemoryReadModel
from projections.projector import Projector
from projections.redis import RedisReadModel
from projections.runner import ProjectorRunner
from tests.histories import assert_is_fold, fill
from tests.test_chroma_integrity import model_on
from tests.test_runner import spawn_projector, sqlite_log


@pytest.fixture(params=["in-memory", "redis"])
def model(request: pytest.FixtureRequest, redis_url: str, redis_prefix: str) -> ReadModel:
    if request.param == "in-memory":
        return InMemoryReadModel()
    return RedisReadModel(redis_url, prefix=redis_prefix)


def snapshot(model: ReadModel) -> tuple[int, str | None, list[MemoryEntry]]:
    return model.checkpoint(), model.followed_log(), model.read_scope(Scope())


def test_a_model_records_its_log_and_refuses_every_other(model: ReadModel) -> None:
    mine, other = InProcessLog(), InProcessLog()
    fill(mine, 400, seed=1)
    fill(other, 600, seed=2)
    Projector(mine, model).catch_up()
    assert model.followed_log() == mine.identity()
    before = snapshot(model)
    stranger = Projector(other, model)  # following another log does not touch the model yet
    for attempt in (stranger.catch_up, stranger.replay, lambda: stranger.catch_up(until=10)):
        with pytest.raises(LogMismatchError) as refused:
            attempt()
        assert (refused.value.expected, refused.value.actual) == (other.identity(),
                                                                  mine.identity())
        assert snapshot(model) == before
    # A commit made behind the projector's back (a projector of an older version, a race
    # past the check) is refused by the model itself, atomically.
    batch = changes({}, other.read(0, 1))
    with pytest.raises(LogMismatchError):
        model.commit(batch, model.checkpoint(), model.checkpoint() + 1)
    assert snapshot(model) == before
    # Only an explicit take-over replaces it.
    assert stranger.replay(take_over=True) == 600
    assert model.followed_log() == other.identity()
    assert_is_fold(model, other)
    model.clear()
    assert model.followed_log() is None and model.checkpoint() == 0


def test_a_typo_in_the_log_url_leaves_the_shared_view_whole(redis_url: str, redis_prefix: str,
                                                            tmp_path: Path) -> None:
    good = f"sqlite:///{tmp_path / 'swarm.db'}"
    mem = RedisSharedMemory(redis_url, prefix=redis_prefix, log=good)
    for i in range(200):
        mem.write_scope(i, metadata={"agent_id": "a", "group_id": "g"})
    view = mem.read_scope(group_id="g")
    typo = f"sqlite:///{tmp_path / 'swarm.bd'}"
    with pytest.raises(LogMismatchError):
        RedisSharedMemory(redis_url, prefix=redis_prefix, log=typo)  # its inline projector
    model = RedisReadModel(redis_url, prefix=redis_prefix)
    runner = ProjectorRunner(SQLEventLog(typo), model, lease_ttl=1)
    with pytest.raises(LogMismatchError):
        runner.step()
    runner.lease.release(runner.owner)
    assert mem.read_scope(group_id="g") == view and len(view) == 200
    assert model.checkpoint() == 200 and model.followed_log() == mem.log.identity()
    mem.close()


def test_read_commands_never_create_a_log(redis_url: str, redis_prefix: str,
                                          tmp_path: Path) -> None:
    typo = tmp_path / "swarm.bd"
    args = ["--log", f"sqlite:///{typo}", "--into", redis_url, "--prefix", redis_prefix]
    assert main(["project", *args, "--once"]) == 2
    assert main(["replay", *args]) == 2
    assert not typo.exists()
    assert RedisReadModel(redis_url, prefix=redis_prefix).checkpoint() == 0


def test_project_and_replay_refuse_the_view_of_another_log_until_taken_over(
        redis_url: str, redis_prefix: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    mine = sqlite_log(tmp_path, 700, seed=1)
    (tmp_path / "other").mkdir()
    other = sqlite_log(tmp_path / "other", 300, seed=2)
    into = ["--into", redis_url, "--prefix", redis_prefix]
    assert main(["project", "--log", mine, *into, "--once"]) == 0
    model = RedisReadModel(redis_url, prefix=redis_prefix)
    before = snapshot(model)
    capsys.readouterr()
    assert main(["project", "--log", other, *into, "--once"]) == 2
    assert main(["replay", "--log", other, *into]) == 2
    err = capsys.readouterr().err
    assert "--take-over" in err and "another log" in err
    assert snapshot(model) == before
    child = spawn_projector(other, redis_url, redis_prefix, "--lease-ttl", "1")
    assert child.wait(60) == 1  # the running projector stops, non-zero, for its supervisor
    assert "another log" in child.stderr.read()  # type: ignore[union-attr]
    assert snapshot(model) == before
    assert main(["replay", "--log", other, *into, "--take-over"]) == 0
    assert_is_fold(model, SQLEventLog(other))
    assert model.followed_log() == SQLEventLog(other).identity()


def test_a_view_ahead_of_its_own_log_is_rebuilt(redis_url: str, redis_prefix: str,
                                                tmp_path: Path) -> None:
    """The same log restored from an older copy (same identity, shorter): rebuilt."""
    log_url = sqlite_log(tmp_path, 100, seed=1)
    shutil.copy(tmp_path / "log.db", tmp_path / "older.db")
    log = SQLEventLog(log_url)
    fill(log, 200, seed=2)
    model = RedisReadModel(redis_url, prefix=redis_prefix)
    Projector(log, model).catch_up()
    older = SQLEventLog(f"sqlite:///{tmp_path / 'older.db'}")
    assert older.identity() == log.identity() and older.head() == 100
    runner = ProjectorRunner(older, model, batch_size=30)
    assert runner.step() == 100
    assert runner.rebuilds == 1
    assert_is_fold(model, older)
    Projector(log, model).catch_up()
    mem = SharedMemory(older, model)  # the facade's inline projector rebuilds as well
    assert mem.read_model.checkpoint() == 100
    assert_is_fold(model, older)


@pytest.fixture(params=["in-memory", "redis", "chroma"])
def any_model(request: pytest.FixtureRequest, tmp_path: Path) -> ReadModel:
    if request.param == "chroma":
        return model_on(tmp_path / "chroma")
    if request.param == "redis":
        return RedisReadModel(request.getfixturevalue("redis_url"),
                              prefix=request.getfixturevalue("redis_prefix"))
    return InMemoryReadModel()


@pytest.mark.parametrize("longer", [0, 40])
def test_a_view_of_another_history_of_its_log_is_rebuilt(any_model: ReadModel, tmp_path: Path,
                                                          longer: int) -> None:
    """The same log put back from a copy of another history (same identity; as long as the
    view's checkpoint, or longer): the event at the view's checkpoint is not the one it
    applied there, and the view is rebuilt, by a projector and through the facade."""
    model = any_model
    log_url = sqlite_log(tmp_path, 100, seed=1)
    shutil.copy(tmp_path / "log.db", tmp_path / "other.db")
    log = SQLEventLog(log_url)
    fill(log, 100, seed=2)
    other = SQLEventLog(f"sqlite:///{tmp_path / 'other.db'}")
    fill(other, 100 + longer, seed=3)
    assert other.identity() == log.identity()
    assert Projector(log, model, batch_size=30).catch_up() == 200
    position, link = model.checkpoint_and_hash()
    assert (position, link) == (200, log.read(199, 1)[0].hash)
    assert Projector(other, model, batch_size=30).catch_up() == 200 + longer
    assert_is_fold(model, other)
    assert model.checkpoint_and_hash() == (200 + longer, other.read(199 + longer)[0].hash)
    Projector(log, model).replay()  # (a replay switching to a twin keeps the hash too)
    assert model.checkpoint_and_hash() == (200, log.read(199, 1)[0].hash)
    runner = ProjectorRunner(other, model, batch_size=30)  # a runner too, counting it
    assert runner.step() == 200 + longer and runner.rebuilds == 1
    assert_is_fold(model, other)
    Projector(log, model).replay()
    SharedMemory(other, model).read_scope()  # the facade's inline projector rebuilds as well
    assert_is_fold(model, other)


@given(position=st.integers(1, 2**62), link=st.binary(min_size=32, max_size=32),
       other=st.integers(0, 2**62), found=st.one_of(st.none(), st.integers(), st.text(),
                                                      st.binary()))
def test_a_recorded_link_reads_back_only_at_its_own_position(
        position: int, link: bytes, other: int, found: object) -> None:
    """The hash a model stores as text comes back for the position it was recorded at, and
    for no other (a commit by a version that does not record it leaves an older one); what
    is not one reads as none."""
    text = link_text(position, link)
    assert link_at(position, text) == link
    assert link_at(position, text.encode()) == link
    assert link_at(other, text) is None or other == position
    assert link_text(position, None) == "" and link_at(position, "") is None
    assert isinstance(link_at(position, found), (bytes, type(None)))  # anything: no error
