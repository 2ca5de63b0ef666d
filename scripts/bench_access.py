#!/usr/bin/env python3
"""Benchmark access by reader: ``read_scope`` through an agent's handle against the operator's
(unbound) read, on each read model, timed in the same run.

    python3 scripts/dev.py run python scripts/bench_access.py [--memories 100000] [--quick]

The log holds ``--memories`` memories over many agents and groups, of which the agent
``reader`` may read exactly ``--visible`` (1k) in each of two scopes:

- group ``G``: the 1k memories of ``G``, which the reader joined (a ``group.joined`` event);
  the handle's answer is the operator's.
- context ``ctx``: 10k memories, among which the reader may read 1k scattered through it (all
  written by ``scribe``: half readable by ``agent:reader``, half in group ``H``, which the
  reader joined). The handle reads 1k out of 10k; it is compared with the operator reading all
  10k, and with the operator reading a scope that holds exactly those 1k (the fair baseline).

Calls of the two reads alternate, so both see the same machine. Each read model is filled by a
projector from an in-process log. Redis is ``MEMSWARM_REDIS_URL`` if set, else a
``redis-server`` of its own on a loopback port; the keys live under a prefix of their own, dropped
at the end. Chroma lives in a temporary directory and embeds with a hash of the text (cheap and
deterministic, so embedding does not dominate set-up); its projection is slower than the others'
(see ``bench_chroma.py``: about 2 min for 100k here), so ``--chroma-memories`` can give it
fewer for a quicker run.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence, Sized
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchtable import Cell, print_table  # noqa: E402
from benchtime import percentile, timed  # noqa: E402

from memswarm_es.events import EventType, NewEvent, new_id  # noqa: E402
from memswarm_es.log import InProcessLog  # noqa: E402
from memswarm_es.memory import SharedMemory  # noqa: E402
from memswarm_es.principals import agent  # noqa: E402
from memswarm_es.scopes import Scope  # noqa: E402
from projections.base import ReadModel  # noqa: E402
from projections.open import open_read_model  # noqa: E402
from projections.projector import Projector  # noqa: E402

READER = "reader"
SCRIBE = "scribe"  # writes the reader's share of the context
GROUP = "G"
SIDE_GROUP = "H"
CONTEXT = "ctx"
AGENTS = 200  # the others, each a member of GROUPS_PER_AGENT of GROUPS groups
GROUPS = 100
GROUPS_PER_AGENT = 3
WRITERS = 10  # members of G who write its memories
TOPICS = 20  # contexts outside ``ctx``
BATCH = 10_000  # events per append
LIMIT = 1.5  # the bound on handle / unbound


class HashEmbedding:
    """A deterministic 16-dimension "embedding" from the sha256 of the text: no model to run,
    so Chroma's set-up costs what Chroma costs."""

    model_id = "bench-sha256-16"
    dimensions = 16

    def __call__(self, input: Sequence[str]) -> list[np.ndarray]:
        out = []
        for text in input:
            raw = np.frombuffer(hashlib.sha256(text.encode()).digest()[:16], dtype=np.uint8)
            vector = raw.astype(np.float32) - 127.5
            out.append(vector / np.linalg.norm(vector))
        return out


def join(agent_id: str, group_id: str) -> NewEvent:
    return NewEvent.create(EventType.GROUP_JOINED, Scope(agent_id, group_id), "operator",
                           {"admin": False})


def access_events(memories: int, visible: int, context_size: int,
                  seed: int = 12) -> list[NewEvent]:
    """The memberships, then ``memories`` writes in a shuffled order: ``visible`` in group G,
    ``context_size`` in ``ctx`` (``visible`` of them the scribe's), the rest spread over the
    other agents' groups and topics, none of which the reader may read."""
    rng = random.Random(seed)
    events = [join(READER, GROUP), join(READER, SIDE_GROUP), join(SCRIBE, SIDE_GROUP)]
    events += [join(f"w-{i}", GROUP) for i in range(WRITERS)]
    events += [join(f"agent-{a}", f"group-{g}") for a in range(AGENTS)
               for g in rng.sample(range(GROUPS), GROUPS_PER_AGENT)]
    # (scope, readable_by or None for the defaults: its agent and the members of its group)
    specs: list[tuple[Scope, list[str] | None]] = []
    specs += [(Scope(f"w-{i % WRITERS}", GROUP, f"topic-{i % TOPICS}"), None)
              for i in range(visible)]
    half = visible // 2
    specs += [(Scope(SCRIBE, SIDE_GROUP, CONTEXT), None)] * half
    specs += [(Scope(SCRIBE, None, CONTEXT), [agent(SCRIBE), agent(READER)])] * (visible - half)
    others = memories - len(specs)
    for i in range(others):
        owner = f"agent-{i % AGENTS}"
        scope = Scope(owner, f"group-{i % GROUPS}",
                      CONTEXT if i < context_size - visible else f"topic-{i % TOPICS}")
        shared = [agent(owner), agent(f"agent-{rng.randrange(AGENTS)}")] if i % 10 == 0 else None
        specs.append((scope, shared))
    rng.shuffle(specs)
    for n, (scope, readable_by) in enumerate(specs):
        memory_id = new_id()
        data: dict[str, object] = {"value": f"note {n}: the bridge on route {n % 97} is closed "
                                            f"until day {n % 31}", "metadata": {"n": n}}
        if readable_by is not None:
            data["readable_by"] = readable_by
        events.append(NewEvent.create(EventType.MEMORY_WRITTEN, scope, scope.agent_id or "x",
                                      data, memory_id=memory_id, version=1,
                                      event_id=memory_id))
    return events


def filled_log(memories: int, visible: int, context_size: int) -> InProcessLog:
    log = InProcessLog()
    events = access_events(memories, visible, context_size)
    for start in range(0, len(events), BATCH):
        log.append(events[start:start + BATCH])
    return log


def paired(unbound: Callable[[], object], handle: Callable[[], object],
           calls: int) -> tuple[list[float], list[float]]:
    """Milliseconds of ``calls`` calls of each, alternating (after a few unmeasured ones)."""
    for _ in range(3):
        unbound()
        handle()
    a: list[float] = []
    b: list[float] = []
    for i in range(calls):  # alternate which goes first too
        first, second = (unbound, handle) if i % 2 == 0 else (handle, unbound)
        one, two = timed(first) * 1000, timed(second) * 1000
        a.append(one if i % 2 == 0 else two)
        b.append(two if i % 2 == 0 else one)
    return a, b


@dataclass
class Row:
    """One comparison: the operator's read and the reader's, with their answers' sizes."""

    read: str
    unbound: Callable[[], Sized]
    handle: Callable[[], Sized]
    expected: tuple[int, int]

    def measure(self, model: str, memories: int, calls: int) -> tuple[list[Cell], float]:
        sizes = len(self.unbound()), len(self.handle())
        if sizes != self.expected:
            raise RuntimeError(f"{model}, {self.read}: read {sizes} memories, not "
                               f"{self.expected}")
        a, b = paired(self.unbound, self.handle, calls)
        ratio = percentile(b, 50) / percentile(a, 50)
        return [model, memories, self.read, sizes[0], sizes[1], percentile(a, 50),
                percentile(a, 95), percentile(b, 50), percentile(b, 95), ratio], ratio


def rows_for(model: ReadModel, memory: SharedMemory, visible: int,
             context_size: int) -> list[Row]:
    group, context = Scope(group_id=GROUP), Scope(context_id=CONTEXT)
    share = Scope(agent_id=SCRIBE, context_id=CONTEXT)  # exactly the reader's share of ctx
    handle = memory.agent(READER)
    return [
        Row("model, group G", partial(model.read_scope, group),
            partial(model.read_scope, group, READER), (visible, visible)),
        Row("facade, group G", partial(memory.read_scope, group_id=GROUP),
            partial(handle.read_scope, group_id=GROUP), (visible, visible)),
        Row("model, ctx: operator all", partial(model.read_scope, context),
            partial(model.read_scope, context, READER), (context_size, visible)),
        Row(f"model, ctx: operator same {visible:,}", partial(model.read_scope, share),
            partial(model.read_scope, context, READER), (visible, visible)),
    ]


@contextlib.contextmanager
def redis_url() -> Iterator[str]:
    """``MEMSWARM_REDIS_URL``, else a ``redis-server`` of our own for the duration."""
    given = os.environ.get("MEMSWARM_REDIS_URL")
    if given:
        yield given
        return
    from tests.servers_redis import RedisServer

    server = RedisServer()
    try:
        yield server.url
    finally:
        server.close()


@contextlib.contextmanager
def opened(name: str) -> Iterator[ReadModel]:
    """An empty read model of kind ``name``, deleted (with its server or directory, if its
    own) afterwards."""
    if name == "memory":
        yield open_read_model("memory://")
    elif name == "redis":
        with redis_url() as url:
            model = open_read_model(url, prefix=f"bench-access-{uuid.uuid4().hex}")
            try:
                yield model
            finally:
                model.drop()
                model.close()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            model = open_read_model(f"chroma:///{tmp}/chroma",
                                    embedding_function=HashEmbedding())
            try:
                yield model
            finally:
                model.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memories", type=int, default=100_000, help="memories in the log")
    parser.add_argument("--chroma-memories", type=int, default=None,
                        help="memories in Chroma's log, if fewer than --memories (its "
                             "projection is slow)")
    parser.add_argument("--visible", type=int, default=1000,
                        help="memories the reader may read in each scope")
    parser.add_argument("--context", type=int, default=10_000,
                        help="memories in the context ctx (the reader may read --visible)")
    parser.add_argument("--reads", type=int, default=200, help="calls of each read per row")
    parser.add_argument("--models", nargs="+", choices=["memory", "redis", "chroma"],
                        default=["memory", "redis", "chroma"])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 5k memories (1k in ctx, 100 visible), 10 reads")
    args = parser.parse_args()
    if args.quick:
        args.memories = 5000
        args.visible, args.context, args.reads = 100, 1000, 10
    args.chroma_memories = args.chroma_memories or args.memories
    smallest = min(args.memories, args.chroma_memories) if "chroma" in args.models \
        else args.memories
    if not 2 <= args.visible < args.context or args.visible + args.context > smallest:
        parser.error("need 2 <= --visible < --context, and --visible + --context memories "
                     "at most")

    logs: dict[int, InProcessLog] = {}
    rows: list[list[Cell]] = []
    notes: list[str] = []
    for name in args.models:
        count = args.chroma_memories if name == "chroma" else args.memories
        if count not in logs:
            logs[count] = filled_log(count, args.visible, args.context)
        log = logs[count]
        with opened(name) as model:
            start = time.perf_counter()
            Projector(log, model, batch_size=1000).catch_up()
            seconds = time.perf_counter() - start
            memory = SharedMemory(log, model)  # project_inline: caught up before every read
            ratios = []
            for row in rows_for(model, memory, args.visible, args.context):
                cells, ratio = row.measure(name, count, args.reads)
                rows.append(cells)
                ratios.append(ratio)
        verdict = "within it" if ratios[0] <= LIMIT else "OVER THE LIMIT"
        notes.append(f"{name}: handle costs {ratios[0]:.2f}x the unbound read (limit "
                     f"{LIMIT}x, {verdict}); through the facade {ratios[1]:.2f}x; ctx, against "
                     f"the operator's read of the same {args.visible:,}: {ratios[3]:.2f}x")
        notes.append(f"{' ' * len(name)}  set-up: {log.head():,} events projected in "
                     f"{seconds:.1f} s ({log.head() / seconds:,.0f} events/s)")
        if count != args.memories:
            notes.append(f"{' ' * len(name)}  {count:,} memories, not {args.memories:,} "
                         f"(--chroma-memories): Chroma fills slower as it grows")

    print_table(f"MemSwarm access: read_scope through the handle of agent {READER!r} against "
                f"the operator's read; p50/p95 in ms over {args.reads} alternating calls each",
                ["model", "memories", "read", "unbound n", "handle n", "unbound p50", "p95",
                 "handle p50", "p95", "handle/unbound"],
                rows, decimals=[0, 0, 0, 0, 0, 2, 2, 2, 2, 2], notes=notes)


if __name__ == "__main__":
    main()
