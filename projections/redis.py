"""The Redis read model: one shared, fast view of a log for agents in many processes.

Layout under a configurable prefix ``P`` (escaped, so two prefixes never share a key):

- ``P:meta`` (hash): ``checkpoint`` (the last position applied), ``gen`` (generation), ``format``.
- ``P:g<gen>:mem`` (hash): memory id -> the entry, msgpack-encoded. Ids are hash fields, never
  parts of key names.
- ``P:g<gen>:all`` (sorted set): every live memory id, scored by the position it was written at.
- ``P:g<gen>:i:<scope key>`` (sorted sets), e.g. ``P:g0:i:agent:alice`` (see
  :func:`~memswarm_es.scopes.scope_key`): the live memories of one agent, group or context,
  scored by position; ``P:g<gen>:idx`` (set) names them.
- ``P:garbage`` (set): old generations still being deleted; ``P:lease``: the projector lease;
  pub/sub channel ``P:projected``: the new checkpoint, after each commit.

A commit is one Lua script: it checks the checkpoint, applies every change, sets the new
checkpoint and publishes it, atomically and in one round trip, so a projector that dies anywhere
applies a batch entirely or not at all. A scoped read is one script too: ``ZINTER`` of the
scope's sorted sets (Redis walks the smallest and probes the others), then ``HMGET`` of the
entries; no key of another scope is touched. ``clear`` starts a new generation (atomic, O(1))
and then deletes the old one in bounded chunks.

The scripts build key names from the prefix they are given, so all of a model's keys must live
on one Redis node (a single server, or a replica set; not a cluster).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import redis
import redis.asyncio

from memswarm_es.errors import (
    CheckpointConflictError,
    ForeignStoreError,
    ReadModelUnavailableError,
)
from memswarm_es.events import decode, encode
from memswarm_es.scopes import Scope, check_id, escape_part, scope_key

from .base import ReadModel
from .fold import Change, MemoryEntry, entry_from_row, entry_row

log = logging.getLogger(__name__)

FORMAT = "memswarm-redis-1"
DEFAULT_URL = "redis://127.0.0.1:6379/0"
_GC_CHUNK = 500

_COMMIT = """
local meta = KEYS[1]
local current = tonumber(redis.call('HGET', meta, 'checkpoint') or '0')
if current ~= tonumber(ARGV[1]) then
  return {0, current}
end
local base = ARGV[3] .. (redis.call('HGET', meta, 'gen') or '0') .. ':'
local i = 6
-- one command per chunk of arguments (Lua's unpack has a limit), not one per memory
local function bulk(command, key, count)
  for s = i, i + count - 1, 4000 do
    redis.call(command, key, unpack(ARGV, s, math.min(s + 3999, i + count - 1)))
  end
  i = i + count
end
local function section(command, key)
  local count = tonumber(ARGV[i])
  i = i + 1
  if count > 0 then
    bulk(command, key, count)
  end
end
section('HSET', base .. 'mem')   -- memory id, entry
local deleted = tonumber(ARGV[i])
if deleted > 0 then
  i = i + 1
  bulk('HDEL', base .. 'mem', deleted)
  i = i - deleted
  bulk('ZREM', base .. 'all', deleted)
else
  i = i + 1
end
section('ZADD', base .. 'all')   -- position, memory id
section('SADD', base .. 'idx')   -- names of the scope indexes written to
while i <= #ARGV do              -- per scope index: name, then additions, then removals
  local key = base .. 'i:' .. ARGV[i]
  i = i + 1
  section('ZADD', key)
  section('ZREM', key)
end
redis.call('HSET', meta, 'checkpoint', ARGV[2], 'format', ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[2])
return {1, tonumber(ARGV[2])}
"""

_READ = """
local base = ARGV[2] .. (redis.call('HGET', ARGV[1], 'gen') or '0') .. ':'
local ids
if ARGV[3] == 'ids' then
  ids = {}
  for j = 4, #ARGV do ids[#ids + 1] = ARGV[j] end
elseif #ARGV == 3 then
  ids = redis.call('ZRANGE', base .. 'all', 0, -1)
elseif #ARGV == 4 then
  ids = redis.call('ZRANGE', base .. 'i:' .. ARGV[4], 0, -1)
else
  local keys = {}
  for j = 4, #ARGV do keys[#keys + 1] = base .. 'i:' .. ARGV[j] end
  ids = redis.call('ZINTER', #keys, unpack(keys))
end
local out = {}
for s = 1, #ids, 1000 do
  local chunk = redis.call('HMGET', base .. 'mem', unpack(ids, s, math.min(s + 999, #ids)))
  for k = 1, #chunk do out[#out + 1] = chunk[k] end
end
return out
"""

_CLEAR = """
local gen = tonumber(redis.call('HGET', KEYS[1], 'gen') or '0')
redis.call('SADD', KEYS[2], gen)
redis.call('HSET', KEYS[1], 'gen', gen + 1, 'checkpoint', 0, 'format', ARGV[1])
redis.call('PUBLISH', ARGV[2], 0)
return gen + 1
"""

_COLLECT = """
if (redis.call('HGET', KEYS[1], 'gen') or '0') == ARGV[1] then
  redis.call('SREM', KEYS[2], ARGV[1])
  return 0
end
local base = ARGV[2] .. ARGV[1] .. ':'
local names = redis.call('SPOP', base .. 'idx', tonumber(ARGV[3]))
for _, name in ipairs(names) do
  redis.call('UNLINK', base .. 'i:' .. name)
end
if #names > 0 then
  return 1
end
redis.call('UNLINK', base .. 'mem', base .. 'all', base .. 'idx')
redis.call('SREM', KEYS[2], ARGV[1])
return 0
"""

_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@contextlib.contextmanager
def _answering(url: str) -> Iterator[None]:
    """Turn the client's errors into MemSwarm's typed errors."""
    try:
        yield
    except redis.exceptions.ResponseError as exc:
        if "WRONGTYPE" in str(exc):
            raise ForeignStoreError(f"{url}: a key of this read model holds something else: "
                                    f"{exc}") from exc
        raise ReadModelUnavailableError(f"{url}: {exc}") from exc
    except redis.exceptions.RedisError as exc:
        raise ReadModelUnavailableError(f"{url}: {exc}") from exc


def _pack(e: MemoryEntry) -> bytes:
    return encode(entry_row(e))


def _unpack(blob: bytes) -> MemoryEntry:
    return entry_from_row(decode(blob))


_index_key = functools.lru_cache(maxsize=65536)(scope_key)


def _index_names(e: MemoryEntry) -> list[str]:
    return [_index_key(name, value) for name, value in
            (("agent_id", e.agent_id), ("group_id", e.group_id), ("context_id", e.context_id))
            if value is not None]


def _commit_args(changes: Sequence[Change]) -> list[Any]:
    """The commit script's arguments after the header, in sections of ``count, items...``:
    entries to set, ids to delete, ids to add to ``all``, index names written to, then per
    scope index its name, its additions and its removals."""
    entries: list[Any] = []
    deleted: list[str] = []
    added: list[Any] = []
    additions: dict[str, list[Any]] = {}
    removals: dict[str, list[str]] = {}
    for change in changes:
        if change.after is None:
            assert change.before is not None
            deleted.append(change.memory_id)
            for name in _index_names(change.before):
                removals.setdefault(name, []).append(change.memory_id)
            continue
        entries += (change.memory_id, _pack(change.after))
        if change.before is None:
            added += (change.after.position, change.memory_id)
            for name in _index_names(change.after):
                additions.setdefault(name, []).extend((change.after.position, change.memory_id))
    args: list[Any] = [len(entries), *entries, len(deleted), *deleted, len(added), *added,
                       len(additions), *additions]
    for name in additions.keys() | removals.keys():
        plus, minus = additions.get(name, []), removals.get(name, [])
        args += [name, len(plus), *plus, len(minus), *minus]
    return args


class RedisReadModel(ReadModel):
    """Memories of one log in Redis, under ``prefix``; see the module docstring for the layout.

    Safe to share between threads; many processes may read it, and many projectors may commit
    to it (each commit checks the checkpoint, so racing projectors never apply an event twice).
    """

    def __init__(self, url: str = DEFAULT_URL, *, prefix: str = "memswarm",
                 socket_timeout: float = 30.0) -> None:
        self.url = url
        self.prefix = check_id(prefix, "prefix")
        base = escape_part(prefix)
        self.meta_key = f"{base}:meta"
        self.garbage_key = f"{base}:garbage"
        self.lease_key = f"{base}:lease"
        self.channel = f"{base}:projected"
        self._gen_base = f"{base}:g"
        self._options: dict[str, Any] = {"socket_timeout": socket_timeout,
                                         "socket_connect_timeout": min(socket_timeout, 5.0)}
        self._client = redis.Redis.from_url(url, **self._options)
        self._commit = self._client.register_script(_COMMIT)
        self._read = self._client.register_script(_READ)
        self._clear = self._client.register_script(_CLEAR)
        self._collect = self._client.register_script(_COLLECT)
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop,
                                               tuple[Any, Any]] = weakref.WeakKeyDictionary()
        self._closed = threading.Event()
        self._listener: threading.Thread | None = None
        self._listener_lock = threading.Lock()
        self._listening = False

    @property
    def client(self) -> redis.Redis:
        """The synchronous client (for leases and tools that share the connection pool)."""
        return self._client

    # --- the ReadModel interface ----------------------------------------------------------------

    def checkpoint(self) -> int:
        with _answering(self.url):
            checkpoint, found = self._client.hmget(self.meta_key, ["checkpoint", "format"])
        return self._checked(checkpoint, found)

    def _checked(self, checkpoint: bytes | None, found: bytes | None) -> int:
        if found is not None and found.decode() != FORMAT:
            raise ForeignStoreError(
                f"{self.url}: {self.meta_key} holds format {found.decode()!r}, not {FORMAT!r}")
        return int(checkpoint or 0)

    def get_many(self, memory_ids: Iterable[str]) -> dict[str, MemoryEntry]:
        ids = list(memory_ids)
        if not ids:
            return {}
        with _answering(self.url):
            blobs = self._read(args=[self.meta_key, self._gen_base, "ids", *ids])
        return {m: _unpack(b) for m, b in zip(ids, blobs, strict=True) if b is not None}

    def commit(self, changes: Sequence[Change], expected_checkpoint: int, checkpoint: int) -> None:
        args = [expected_checkpoint, checkpoint, self._gen_base, FORMAT, self.channel,
                *_commit_args(changes)]
        with _answering(self.url):
            ok, actual = self._commit(keys=[self.meta_key], args=args)
        if not ok:
            raise CheckpointConflictError(expected_checkpoint, actual)

    def clear(self) -> None:
        """Start an empty generation (at once, atomically), then delete the old ones."""
        with _answering(self.url):
            gen = self._clear(keys=[self.meta_key, self.garbage_key],
                              args=[FORMAT, self.channel])
        log.info("%s: read model %r now at generation %s", self.url, self.prefix, gen)
        self.changed.notify()
        self.collect_garbage()

    def collect_garbage(self) -> None:
        """Delete the keys of old generations, a bounded chunk per script call (so Redis is
        never blocked for long, and a collector that dies leaves work the next one finishes)."""
        with _answering(self.url):
            for raw in self._client.smembers(self.garbage_key):
                while self._collect(keys=[self.meta_key, self.garbage_key],
                                    args=[raw.decode(), self._gen_base, _GC_CHUNK]):
                    pass

    def read_scope(self, scope: Scope) -> list[MemoryEntry]:
        with _answering(self.url):
            blobs = self._read(args=self._read_args(scope))
        return [_unpack(b) for b in blobs]

    def _read_args(self, scope: Scope) -> list[str]:
        return [self.meta_key, self._gen_base, "scope",
                *(scope_key(name, value) for name, value in scope.parts())]

    def drop(self) -> None:
        """Delete every key of this read model (its data, checkpoint, lease)."""
        self.clear()
        with _answering(self.url):
            self._client.unlink(self.meta_key, self.garbage_key, self.lease_key)

    def close(self) -> None:
        self._closed.set()
        if self._listener is not None:
            self._listener.join(timeout=5)
        self._client.close()

    # --- async twins (native: redis.asyncio, one client per event loop) ---------------------

    def _async_client(self) -> tuple[Any, Any]:
        loop = asyncio.get_running_loop()
        found = self._async.get(loop)
        if found is None:
            client = redis.asyncio.Redis.from_url(self.url, **self._options)
            found = (client, client.register_script(_READ))
            self._async[loop] = found
        return found

    async def checkpoint_async(self) -> int:
        client, _ = self._async_client()
        with _answering(self.url):
            checkpoint, found = await client.hmget(self.meta_key, ["checkpoint", "format"])
        return self._checked(checkpoint, found)

    async def get_many_async(self, memory_ids: Iterable[str]) -> dict[str, MemoryEntry]:
        ids = list(memory_ids)
        if not ids:
            return {}
        _, read = self._async_client()
        with _answering(self.url):
            blobs = await read(args=[self.meta_key, self._gen_base, "ids", *ids])
        return {m: _unpack(b) for m, b in zip(ids, blobs, strict=True) if b is not None}

    async def read_scope_async(self, scope: Scope) -> list[MemoryEntry]:
        _, read = self._async_client()
        with _answering(self.url):
            blobs = await read(args=self._read_args(scope))
        return [_unpack(b) for b in blobs]

    async def aclose(self) -> None:
        found = self._async.pop(asyncio.get_running_loop(), None)
        if found is not None:
            await found[0].aclose()

    # --- hearing of commits made by other processes ------------------------------------------

    @property
    def poll_interval(self) -> float:  # type: ignore[override]
        """Look at the checkpoint rarely while pub/sub works, often while it does not."""
        return 0.5 if self._listening else 0.05

    def wait(self, after: int, timeout: float) -> bool:
        self._listen()
        return super().wait(after, timeout)

    async def wait_async(self, after: int, timeout: float) -> bool:
        self._listen()
        return await super().wait_async(after, timeout)

    def _listen(self) -> None:
        """Start (once) the thread that turns pub/sub messages into wake-ups."""
        if self._listener is not None or self._closed.is_set():
            return
        with self._listener_lock:
            if self._listener is None:
                self._listener = threading.Thread(target=self._run_listener, daemon=True,
                                                  name=f"memswarm-redis-listen-{self.prefix}")
                self._listener.start()

    def _run_listener(self) -> None:
        backoff = 0.05
        while not self._closed.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                self._listening = True
                self.changed.notify()  # messages may have been lost while disconnected
                backoff = 0.05
                while not self._closed.is_set():
                    if pubsub.get_message(timeout=0.2) is not None:
                        self.changed.notify()
            except redis.exceptions.RedisError as exc:
                if self._listening:
                    log.warning("%s: pub/sub lost (%s); polling until it is back", self.url, exc)
                self._listening = False
                self._closed.wait(backoff)
                backoff = min(backoff * 2, 1.0)
            finally:
                self._listening = False
                with contextlib.suppress(redis.exceptions.RedisError):
                    pubsub.close()

    # --- the projector lease -------------------------------------------------------------------

    def lease(self, ttl: float = 10.0) -> RedisLease:
        """A lease in Redis that lets one projector at a time apply to this read model."""
        return RedisLease(self, ttl)


class RedisLease:
    """``P:lease``: held by one owner at a time, expiring ``ttl`` seconds after its last renewal
    (so a projector that dies frees it by itself)."""

    def __init__(self, model: RedisReadModel, ttl: float) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.ttl = ttl
        self._model = model
        self._acquire = model.client.register_script(_ACQUIRE)
        self._release = model.client.register_script(_RELEASE)

    def acquire(self, owner: str) -> bool:
        """Take the lease if it is free, or extend it if ``owner`` holds it; True if held."""
        with _answering(self._model.url):
            return bool(self._acquire(keys=[self._model.lease_key],
                                      args=[owner, int(self.ttl * 1000)]))

    def release(self, owner: str) -> None:
        with _answering(self._model.url):
            self._release(keys=[self._model.lease_key], args=[owner])

    def holder(self) -> str | None:
        with _answering(self._model.url):
            found = self._model.client.get(self._model.lease_key)
        return None if found is None else found.decode()
