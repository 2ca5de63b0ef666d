"""MemSwarmStore against LangGraph's own InMemoryStore: the same random operations sent to
both, each with the same index (over SQLite with its SQL view, over the in-memory view, and
over a SQLite log with its view in Redis), every answer compared, searches by meaning
included; a real StateGraph using it through ``get_store()``."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from langgraph.config import get_store
from langgraph.graph import END, START, StateGraph
from langgraph.store.base import (
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    PutOp,
    SearchItem,
    SearchOp,
    get_text_at_path,
)
from langgraph.store.memory import InMemoryStore

from memswarm_es import (
    InMemorySharedMemory,
    RedisSharedMemory,
    SharedMemory,
    SQLiteSharedMemory,
)
from memswarm_es.errors import InvalidInputError, InvalidValueError
from memswarm_es.integrations.langgraph import MemSwarmStore
from memswarm_es.namespaces import matches
from projections.keys import check_filter, passes_value

NAMESPACES = [("a",), ("a", "b"), ("a", "c"), ("b",), ("b", "x", "y"), ("a:b", "%")]
KEYS = ["k1", "k2", "k.3"]
namespaces = st.sampled_from(NAMESPACES)
keys = st.sampled_from(KEYS)
WORDS = ["red bridge", "closed road", "blue river", "open bridge road", "river"]
values = st.fixed_dictionaries({"n": st.integers(0, 5), "s": st.sampled_from(["x", "y"]),
                                "t": st.sampled_from(WORDS)})
#: A put's own index: the configured fields, none, the field "t", a field no value has.
put_indexes = st.sampled_from([None, None, False, ["t"], ["u"]])
queries = st.sampled_from(["bridge", "river road", "closed", "blue open river"])
prefixes = st.sampled_from([(), ("a",), ("a", "b"), ("b",), ("c",)])
filters = st.sampled_from([None, {"n": 2}, {"s": "y"}, {"n": {"$gt": 2}},
                           {"n": {"$lte": 3}, "s": {"$ne": "x"}}])
patterns = st.sampled_from([None, ("a",), ("a", "*"), ("*", "b"), ("b", "x")])
suffixes = st.sampled_from([None, ("b",), ("*",), ("x", "y")])
depths = st.sampled_from([None, 1, 2])
pages = st.tuples(st.integers(1, 4), st.integers(0, 3))
Address = tuple[tuple[str, ...], str]

REDIS: dict[str, str] = {}  # the test's Redis server, for the machine
DIMS = 32


def embed(texts: Sequence[str]) -> list[list[float]]:
    """A deterministic embedding: each word adds a pseudo-random vector of its own."""
    out = []
    for text in texts:
        vector = [0.0] * DIMS
        for word in re.findall(r"\w+", text.lower()):
            digest = hashlib.sha256(word.encode()).digest()
            for i in range(DIMS):
                vector[i] += digest[i] / 255 - 0.5
        out.append(vector)
    return out


async def aembed(texts: Sequence[str]) -> list[list[float]]:
    return embed(texts)


INDEX: dict[str, Any] = {"dims": DIMS, "embed": embed}


def _open(kind: str, directory: str) -> SharedMemory:
    if kind == "sqlite":
        return SQLiteSharedMemory(f"{directory}/swarm.db", synchronous="OFF")
    if kind == "memory":
        return InMemorySharedMemory()
    return RedisSharedMemory(REDIS["url"], prefix=f"lg{uuid.uuid4().hex[:12]}",
                             log=f"sqlite:///{directory}/log.db")


class StoreMachine(RuleBasedStateMachine):
    """LangGraph's InMemoryStore and MemSwarmStore, sent the same operations. What is live is
    tracked here too (with the order of first writes), because InMemoryStore lists namespaces
    that were only read or emptied and orders items by namespace first. Its vectors are set
    after each batch to the ones MemSwarmStore documents: InMemoryStore keeps a key's old
    vectors when a put of a new value embeds nothing or other fields."""

    kind = "sqlite"

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.TemporaryDirectory()
        self.memory = _open(self.kind, self.directory.name)
        self.store = MemSwarmStore(self.memory, index=INDEX)
        self.reference = InMemoryStore(index=INDEX)  # type: ignore[arg-type]
        self.live: dict[Address, tuple[int, dict[str, Any]]] = {}
        self.order = itertools.count()

    def teardown(self) -> None:
        if self.kind == "redis":
            self.memory.read_model.drop()
        self.memory.close()
        self.directory.cleanup()

    # --- what the answers must be -------------------------------------------------------------

    def _found(self, prefix: tuple[str, ...], filter: dict[str, Any] | None) -> list[Address]:
        conditions = check_filter(filter)
        hits = [(order, address) for address, (order, value) in self.live.items()
                if address[0][:len(prefix)] == prefix and passes_value(value, conditions)]
        return [address for _, address in sorted(hits)]

    def _expected_search(self, op: SearchOp) -> list[tuple[Address, dict[str, Any]]]:
        found = self._found(op.namespace_prefix, op.filter)
        return [(a, self.live[a][1]) for a in found[op.offset:op.offset + op.limit]]

    def _expected_ranking(self, op: SearchOp) -> list[tuple[Address, float | None]]:
        """The whole answer to a search with a query, from InMemoryStore's scores: the
        candidates by score, best first (ties in the order they were written), then those
        without a vector in that order."""
        theirs = self.reference.search(op.namespace_prefix, query=op.query, filter=op.filter,
                                       limit=1 << 30)
        scores = {(i.namespace, i.key): i.score for i in theirs}
        found = self._found(op.namespace_prefix, op.filter)
        assert set(scores) == set(found)
        scored = sorted((a for a in found if scores[a] is not None),
                        key=lambda a: -(scores[a] or 0.0))
        return [(a, scores[a]) for a in scored] + [(a, None) for a in found
                                                   if scores[a] is None]

    def _check_ranking(self, op: SearchOp, ours: list[SearchItem], theirs: list[SearchItem],
                       ranking: list[tuple[Address, float | None]]) -> None:
        expected = ranking[op.offset:op.offset + op.limit]
        assert [(i.namespace, i.key) for i in ours] == [a for a, _ in expected]
        for item, (address, score) in zip(ours, expected, strict=True):
            assert item.value == self.live[address][1]
            assert (item.score is None) == (score is None)
            assert item.score == pytest.approx(score, abs=1e-6)
        distinct = {round(s, 9) for _, s in ranking if s is not None}
        if len(distinct) == len(ranking):  # no ties, all scored: LangGraph's very answer
            assert [(i.namespace, i.key) for i in ours] == [(i.namespace, i.key) for i in theirs]
            assert [i.score for i in ours] == pytest.approx([i.score for i in theirs],
                                                            abs=1e-6)

    def _expected_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        conditions = op.match_conditions or ()
        present = {ns for ns, _ in self.live if all(
            matches(ns, c.path if c.match_type == "prefix" else None,
                    c.path if c.match_type == "suffix" else None) for c in conditions)}
        cut = sorted({ns if op.max_depth is None else ns[:op.max_depth] for ns in present})
        return cut[op.offset:op.offset + op.limit]

    def _check(self, op: Any, ours: Any, theirs: Any,
               ranking: list[tuple[Address, float | None]] | None) -> None:
        """Our answer to ``op`` is the expected one; LangGraph's agrees where it can."""
        if ranking is not None:
            self._check_ranking(op, ours, theirs, ranking)
        elif isinstance(op, GetOp):
            expected = self.live.get((op.namespace, op.key))
            assert _content(ours) == _content(theirs)
            assert _content(ours) == (None if expected is None
                                      else (op.namespace, op.key, expected[1]))
        elif isinstance(op, SearchOp):
            assert [(i.namespace, i.key, i.value) for i in ours] == [
                (a[0], a[1], v) for a, v in self._expected_search(op)]
            assert all(i.score is None for i in ours)
            if op.offset == 0 and op.limit >= len(self._found(op.namespace_prefix, op.filter)):
                # the whole answer: LangGraph's holds the same items, in its own order
                assert sorted(map(_content, ours), key=_address) == \
                    sorted(map(_content, theirs), key=_address)
        elif isinstance(op, ListNamespacesOp):
            assert ours == self._expected_namespaces(op)
        else:
            assert ours is None and theirs is None

    def _apply(self, puts: list[PutOp]) -> None:
        final: dict[Address, PutOp] = {}
        for op in puts:
            final[op.namespace, op.key] = op
        for address, op in final.items():
            self._align_vectors(address, op)
            if op.value is None:
                self.live.pop(address, None)
            elif address in self.live:
                self.live[address] = (self.live[address][0], dict(op.value))
            else:
                self.live[address] = (next(self.order), dict(op.value))

    def _align_vectors(self, address: Address, op: PutOp) -> None:
        """InMemoryStore's vectors of ``address`` after ``op`` as MemSwarmStore keeps them:
        only those of the fields ``op`` embedded; or, if it embedded none, none for a new
        value and the old ones for the same value."""
        if op.value is None:
            return
        fields = ["$"] if op.index is None else [] if op.index is False else op.index
        vectors = self.reference._vectors[address[0]][address[1]]
        embedded = [f for f in fields if get_text_at_path(op.value, f)]
        old = self.live.get(address)
        if embedded:
            for path in set(vectors) - set(embedded):
                del vectors[path]
        elif old is None or old[1] != op.value:
            vectors.clear()

    def _single(self, op: GetOp | SearchOp) -> None:
        """``op`` through the store's ``get`` or ``search`` (MemSwarmStore answers those
        without a batch), on both stores."""
        ranking = self._expected_ranking(op) if isinstance(op, SearchOp) and op.query else None
        answers = [store.get(op.namespace, op.key) if isinstance(op, GetOp)
                   else store.search(op.namespace_prefix, query=op.query, filter=op.filter,
                                     limit=op.limit, offset=op.offset)
                   for store in (self.store, self.reference)]
        self._check(op, *answers, ranking)

    def _run(self, ops: list[Any]) -> None:
        rankings = [self._expected_ranking(op) if isinstance(op, SearchOp) and op.query
                    else None for op in ops]
        ours = self.store.batch(ops)
        theirs = self.reference.batch(ops)
        for op, mine, reference, ranking in zip(ops, ours, theirs, rankings, strict=True):
            self._check(op, mine, reference, ranking)
        self._apply([op for op in ops if isinstance(op, PutOp)])

    # --- the operations -----------------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        assert self.store.list_namespaces() == []

    @rule(namespace=namespaces, key=keys, value=values, index=put_indexes)
    def put(self, namespace: tuple[str, ...], key: str, value: dict[str, Any],
            index: Any) -> None:
        self._run([PutOp(namespace, key, value, index)])

    @rule(namespace=namespaces, key=keys)
    def delete(self, namespace: tuple[str, ...], key: str) -> None:
        self._run([PutOp(namespace, key, None)])

    @rule(namespace=namespaces, key=keys)
    def get(self, namespace: tuple[str, ...], key: str) -> None:
        self._single(GetOp(namespace, key))

    @rule(prefix=prefixes, filter=filters, page=pages)
    def search(self, prefix: tuple[str, ...], filter: dict[str, Any] | None,
               page: tuple[int, int]) -> None:
        self._single(SearchOp(prefix, filter, page[0], page[1]))

    @rule(prefix=prefixes, filter=filters, page=pages, query=queries)
    def search_by_meaning(self, prefix: tuple[str, ...], filter: dict[str, Any] | None,
                          page: tuple[int, int], query: str) -> None:
        self._single(SearchOp(prefix, filter, page[0], page[1], query))

    @rule(prefix=patterns, suffix=suffixes, depth=depths, page=pages)
    def list_namespaces(self, prefix: tuple[str, ...] | None, suffix: tuple[str, ...] | None,
                        depth: int | None, page: tuple[int, int]) -> None:
        conditions = tuple([MatchCondition("prefix", prefix)] if prefix else []) + \
            tuple([MatchCondition("suffix", suffix)] if suffix else [])
        self._run([ListNamespacesOp(conditions or None, depth, page[0], page[1])])

    @rule(ops=st.lists(st.one_of(
        st.builds(PutOp, namespaces, keys, st.one_of(st.none(), values), put_indexes,
                  ttl=st.none()),  # (InMemoryStore has no TTL: test_langgraph_ttl.py)
        st.builds(GetOp, namespaces, keys),
        st.builds(SearchOp, prefixes, filters, st.integers(1, 4), st.integers(0, 2),
                  st.one_of(st.none(), queries)),
        st.builds(ListNamespacesOp, st.none(), depths, st.integers(1, 4), st.integers(0, 2))),
        min_size=1, max_size=6))
    def batch(self, ops: list[Any]) -> None:
        # InMemoryStore fails on a batch whose puts embed one text twice (it embeds each
        # text once, then counts the vectors against the puts): not sent to it
        assume(not _repeats_a_text(ops))
        self._run(ops)

    @invariant()
    def every_item_is_an_event(self) -> None:
        """What the store holds is the fold of the log: as many live keyed memories as
        items."""
        assert len(self.memory.read_scope()) == len(self.live)


def _repeats_a_text(ops: list[Any]) -> bool:
    final = {(op.namespace, op.key): op for op in ops if isinstance(op, PutOp)}
    texts = [text for op in final.values() if op.value is not None and op.index is not False
             for path in (op.index or ["$"]) for text in get_text_at_path(op.value, path)]
    return len(texts) != len(set(texts))


def _content(item: Item | None) -> tuple[tuple[str, ...], str, Any] | None:
    return None if item is None else (tuple(item.namespace), item.key, item.value)


def _address(content: tuple[tuple[str, ...], str, Any] | None) -> Address:
    assert content is not None
    return content[0], content[1]


class RedisStoreMachine(StoreMachine):
    kind = "redis"


class InMemoryStoreMachine(StoreMachine):
    kind = "memory"


MACHINE_SETTINGS = settings(max_examples=20, stateful_step_count=25, deadline=None,
                            suppress_health_check=list(HealthCheck))


def test_the_store_answers_as_langgraphs_over_sqlite() -> None:
    StoreMachine.TestCase.settings = MACHINE_SETTINGS
    StoreMachine.TestCase().runTest()


def test_the_store_answers_as_langgraphs_over_the_in_memory_view() -> None:
    InMemoryStoreMachine.TestCase.settings = MACHINE_SETTINGS
    InMemoryStoreMachine.TestCase().runTest()


def test_the_store_answers_as_langgraphs_over_redis(redis_url: str) -> None:
    REDIS["url"] = redis_url
    RedisStoreMachine.TestCase.settings = MACHINE_SETTINGS
    RedisStoreMachine.TestCase().runTest()


# --- the store in use ---------------------------------------------------------------------------


class State(TypedDict):
    user: str
    seen: list[str]


def remember(state: State) -> dict[str, Any]:
    store = get_store()
    store.put(("memories", state["user"]), "food", {"likes": "pizza", "n": 1})
    store.put(("memories", state["user"]), "drink", {"likes": "tea", "n": 2})
    return {}


def recall(state: State) -> dict[str, Any]:
    found = get_store().search(("memories", state["user"]), filter={"n": {"$gte": 1}})
    return {"seen": [item.value["likes"] for item in found]}


def test_a_state_graph_keeps_its_memories_as_events(tmp_path: Path) -> None:
    with SQLiteSharedMemory(str(tmp_path / "swarm.db")) as swarm:
        builder = StateGraph(State)
        builder.add_node("remember", remember)
        builder.add_node("recall", recall)
        builder.add_edge(START, "remember")
        builder.add_edge("remember", "recall")
        builder.add_edge("recall", END)
        graph = builder.compile(store=MemSwarmStore(swarm.agent("planner")))
        assert graph.invoke({"user": "u1", "seen": []})["seen"] == ["pizza", "tea"]
        assert graph.invoke({"user": "u1", "seen": []})["seen"] == ["pizza", "tea"]
        entry = swarm.get_by_key(("memories", "u1"), "food")
        assert entry is not None and entry.agent_id == "planner"
        # the second run put the same values: nothing more was recorded
        assert [(v.version, v.actor) for v in swarm.history(entry.memory_id)] == [
            (1, "planner")]
        assert swarm.verify().ok
        # another agent does not see the planner's memories
        other = MemSwarmStore(swarm.agent("intruder"))
        assert other.search(("memories",)) == []
        assert other.list_namespaces() == []


def test_batches_validate_namespaces_and_write_nothing_bad(tmp_path: Path) -> None:
    with MemSwarmStore.from_conn_string(f"sqlite:///{tmp_path / 's.db'}") as store:
        store.setup()
        with pytest.raises(InvalidNamespaceError):
            store.batch([PutOp(("a",), "k", {"n": 1}), PutOp(("a.b",), "k", {"n": 1})])
        assert store.search(()) == []
        for bad in [("a.b",), ("",), ("a", 1)]:  # as LangGraph's get and search refuse them
            for store_ in (store, InMemoryStore()):
                with pytest.raises(InvalidNamespaceError):
                    store_.get(bad, "k")  # type: ignore[arg-type]
                with pytest.raises(InvalidNamespaceError):
                    store_.search(bad)  # type: ignore[arg-type]
        store.batch([PutOp(("a",), "k", {"n": 1}), PutOp(("a",), "k", {"n": 2}),
                     PutOp(("b",), "k", {"n": 3}), PutOp(("b",), "k", None)])
        item = store.get(("a",), "k")
        assert item is not None and item.value == {"n": 2}
        assert item.created_at <= item.updated_at
        assert store.list_namespaces() == [("a",)]


def test_langmem_tools_manage_and_search_memories_in_the_store(tmp_path: Path) -> None:
    import langmem  # the dev extra installs it
    with SQLiteSharedMemory(str(tmp_path / "swarm.db")) as swarm:
        store = MemSwarmStore(swarm.agent("assistant"))
        manage = langmem.create_manage_memory_tool(namespace=("memories", "u1"), store=store)
        search = langmem.create_search_memory_tool(namespace=("memories", "u1"), store=store)
        made = manage.invoke({"content": "likes golang", "action": "create"})
        (item,) = store.search(("memories", "u1"))
        assert item.key in made and item.value == {"content": "likes golang"}
        manage.invoke({"content": "likes rust", "action": "update", "id": item.key})
        assert "likes rust" in search.invoke({"query": "language"})
        manage.invoke({"action": "delete", "id": item.key})
        assert store.search(("memories", "u1")) == []
        memory_id = swarm.log.read(0)[0].memory_id
        assert memory_id is not None
        assert [(v.version, v.actor) for v in swarm.history(memory_id)] == [
            (1, "assistant"), (2, "assistant"), (3, "assistant")]


# --- search by meaning ---------------------------------------------------------------------------

DOCS = [(("docs", "roads"), "d1", {"text": "the red bridge on route 7 is closed", "n": 1}),
        (("docs", "roads"), "d2", {"text": "route 9 is open again", "n": 2}),
        (("docs", "rivers"), "d3", {"text": "the blue river floods the bridge", "n": 3}),
        (("docs", "rivers"), "d4", {"text": "fish swim in the river", "n": 4}),
        (("docs",), "d5", {"text": "a closed road and a red car", "n": 5}),
        (("notes",), "d6", {"text": "bridge inspection due", "n": 6})]
SEARCHES = [(("docs",), "closed bridge", None, 10, 0), (("docs",), "river", None, 2, 1),
            ((), "bridge", {"n": {"$gte": 3}}, 3, 0), (("docs", "roads"), "route", None, 1, 0),
            ((), "red car", None, 10, 4), (("docs",), "nothing matches this", {"n": 2}, 5, 0)]


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_a_search_by_meaning_ranks_as_langgraphs(kind: str, tmp_path: Path) -> None:
    index = {"dims": DIMS, "embed": embed, "fields": ["text"]}
    swarm = _open(kind, str(tmp_path))
    ours, theirs = MemSwarmStore(swarm, index=index), InMemoryStore(index=index)  # type: ignore[arg-type]
    for store in (ours, theirs):
        for namespace, key, value in DOCS:
            store.put(namespace, key, value)
    for prefix, query, filter, limit, offset in SEARCHES:
        mine = ours.search(prefix, query=query, filter=filter, limit=limit, offset=offset)
        reference = theirs.search(prefix, query=query, filter=filter, limit=limit,
                                  offset=offset)
        assert [(i.namespace, i.key) for i in mine] == [(i.namespace, i.key) for i in reference]
        assert [i.score for i in mine] == pytest.approx([i.score for i in reference], abs=1e-6)
        assert all(i.score is not None for i in mine)
    # the vectors are in the log: a memory opened again ranks the same, embedding no item
    if kind == "sqlite":
        swarm.close()
        swarm = _open(kind, str(tmp_path))
        again = MemSwarmStore(swarm, index={"dims": DIMS, "embed": lambda texts: embed(["river"])})
        assert [i.key for i in again.search(("docs",), query="river")] == [
            i.key for i in ours.search(("docs",), query="river")]
    swarm.close()


def test_an_agent_never_gets_what_it_may_not_read_even_the_nearest(tmp_path: Path) -> None:
    with SQLiteSharedMemory(str(tmp_path / "swarm.db")) as swarm:
        (secret,) = embed(["bridge code 1234"])
        swarm.put(("docs",), "secret", {"text": "bridge code 1234"}, embedding=secret,
                  readable_by=["agent:boss"])
        scout = MemSwarmStore(swarm.agent("scout"), index=INDEX)
        scout.put(("docs",), "mine", {"text": "a river"})
        boss = MemSwarmStore(swarm.agent("boss"), index=INDEX)
        assert [i.key for i in boss.search(("docs",), query="bridge code 1234")] == ["secret"]
        found = scout.search(("docs",), query="bridge code 1234", limit=10)
        assert [i.key for i in found] == ["mine"]
        assert scout.search(("docs",), query="bridge", filter={"text": "bridge code 1234"}) == []
        assert scout.get(("docs",), "secret") is None


def test_a_put_may_name_its_own_fields_or_none(tmp_path: Path) -> None:
    with SQLiteSharedMemory(str(tmp_path / "swarm.db")) as swarm:
        store = MemSwarmStore(swarm, index={"dims": DIMS, "embed": embed, "fields": ["text"]})
        store.put(("d",), "plain", {"text": "red bridge", "tag": "river"})
        store.put(("d",), "tagged", {"text": "nothing here", "tag": "river"}, index=["tag"])
        store.put(("d",), "unindexed", {"text": "river river"}, index=False)
        store.put(("d",), "untexted", {"other": "river"})  # no text at "text": no vector
        found = store.search(("d",), query="river")
        assert [(i.key, i.score is None) for i in found] == [
            ("tagged", False), ("plain", False), ("unindexed", True), ("untexted", True)]
        assert found[0].score == pytest.approx(1.0)
        assert swarm.get_by_key(("d",), "unindexed").embedding is None
        # a new value without a vector drops the old one; the same value keeps it
        store.put(("d",), "plain", {"text": "red bridge", "tag": "river"}, index=False)
        assert store.search(("d",), query="bridge")[0].key == "plain"
        store.put(("d",), "plain", {"text": "a blue car"}, index=False)
        assert [i.key for i in store.search(("d",), query="car") if i.score is not None] == [
            "tagged"]
        # several fields: one vector, the mean of their unit vectors
        both = MemSwarmStore(swarm, index={"dims": DIMS, "embed": embed,
                                           "fields": ["text", "tag"]})
        both.put(("e",), "k", {"text": "red bridge", "tag": "river"})
        vectors = [np.asarray(v) / np.linalg.norm(v) for v in embed(["red bridge", "river"])]
        entry = swarm.get_by_key(("e",), "k")
        assert entry is not None and entry.embedding == pytest.approx(np.mean(vectors, axis=0))
        # a batch putting one text twice embeds it once, for both
        store.batch([PutOp(("f",), "a", {"text": "same"}), PutOp(("f",), "b", {"text": "same"})])
        assert [i.score for i in store.search(("f",), query="same")] == pytest.approx([1, 1])


def test_an_async_embed_function_serves_abatch(tmp_path: Path) -> None:
    async def run(store: MemSwarmStore) -> list[SearchItem]:
        await store.aput(("d",), "a", {"text": "red bridge"})
        await store.aput(("d",), "b", {"text": "blue river"})
        return await store.asearch(("d",), query="river")

    with SQLiteSharedMemory(str(tmp_path / "swarm.db")) as swarm:
        store = MemSwarmStore(swarm, index={"dims": DIMS, "embed": aembed})
        assert [i.key for i in asyncio.run(run(store))] == ["b", "a"]


def test_an_index_that_cannot_work_is_refused(tmp_path: Path) -> None:
    with SQLiteSharedMemory(str(tmp_path / "swarm.db")) as swarm:
        for bad in ({"dims": 0, "embed": embed}, {"dims": DIMS}, {"dims": DIMS, "embed": embed,
                                                                 "fields": "text"}):
            with pytest.raises(InvalidInputError):
                MemSwarmStore(swarm, index=bad)
        wrong = MemSwarmStore(swarm, index={"dims": DIMS + 1, "embed": embed})
        with pytest.raises(InvalidValueError, match="dims"):
            wrong.put(("d",), "k", {"text": "x"})
        with pytest.raises(InvalidValueError, match="dims"):
            wrong.search(("d",), query="x")
        assert swarm.read_scope() == []
        # without an index a query is ignored, as LangGraph's stores ignore it
        plain = MemSwarmStore(swarm)
        plain.put(("d",), "k", {"text": "x"})
        assert [(i.key, i.score) for i in plain.search(("d",), query="x")] == [("k", None)]


def test_a_store_reading_from_this_process_memory_sees_every_writer(tmp_path: Path) -> None:
    """``read_model="memory://"``: the view in this process, filled from the log at open; a
    get sees another memory's put at once (the log's change stamp moved), and what this store
    put without reading it back from the log."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    with MemSwarmStore.from_conn_string(url) as other:
        other.put(("a",), "old", {"n": 0})
        with MemSwarmStore.from_conn_string(url, read_model="memory://") as store:
            found = store.get(("a",), "old")
            assert found is not None and found.value == {"n": 0}
            for n in range(3):
                store.put(("a",), "k", {"n": n})
                item = store.get(("a",), "k")
                assert item is not None and item.value == {"n": n}
                other.put(("a",), "o", {"n": n})
                item = store.get(("a",), "o")
                assert item is not None and item.value == {"n": n}
            assert store.get(("a",), "k") is not None
            store.memory.replay()  # the view built anew: reads wait for it, never skip it
            assert [i.key for i in store.search(("a",))] == ["old", "k", "o"]
            assert store.memory.verify().ok
