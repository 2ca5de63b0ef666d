"""The Redis read model: one shared, fast view of a log for agents in many processes.

Layout under a configurable prefix ``P`` (escaped, so two prefixes never share a key):

- ``P:meta`` (hash): ``checkpoint`` (the last position applied), ``link`` (that position and
  the hash of the event there, ``position:hex``), ``gen`` (the generation
  served), ``format``, ``log_id`` (the identity of the log this is the view of), ``top`` (the
  highest generation number handed out), and while a view is built from nothing,
  ``rebuilding`` (the position readers wait for); ``deadline`` for keys that expire.
- ``P:g<gen>:mem`` (hash): memory id -> the entry, msgpack-encoded. Ids are hash fields, never
  parts of key names.
- ``P:g<gen>:all`` (sorted set): every live memory id, scored by the position it was written at.
- ``P:g<gen>:i:<scope key>`` (sorted sets), e.g. ``P:g0:i:agent:alice`` (see
  :func:`~memswarm_es.scopes.scope_key`): the live memories of one agent, group or context,
  scored by position.
- ``P:g<gen>:i:r:<escaped principal>`` (sorted sets), e.g. ``P:g0:i:r:group%3Ateam``: the live
  memories whose ``readable_by`` names that principal, scored by position (``r:`` keeps them
  apart from the scope indexes, whose names start with the part's name), except their own agent
  and their own group: ``P:g<gen>:i:own:agent`` and ``P:g<gen>:i:own:group`` hold the memories
  readable by their own agent and by their own group (as the default readers are), so one of
  those intersected with a scope index stands for that principal's reader index. A batch of
  writes by many agents then adds to two reader indexes, not to one more per agent and group.
- ``P:g<gen>:i:k:<escaped namespace>:<escaped key>``, ``P:g<gen>:i:m:<escaped namespace>``
  and ``P:g<gen>:i:n:<escaped prefix>`` (sorted sets, scored by position): the live memories
  holding a key, in a namespace, and in a namespace or below it (namespaces as text, labels
  joined by ``.``); ``P:g<gen>:i:present`` (sorted set, lexically ordered): the namespaces
  holding live memories, kept by the commit script.
- ``P:g<gen>:i:groups:<escaped agent>`` and ``P:g<gen>:i:members:<escaped group>`` (hashes):
  the memberships, group -> admin flag and agent -> admin flag (``1`` or ``0``).
- ``P:g<gen>:idx`` (set) names every key under ``i:``, so that collecting a generation and
  renewing a private view reach them all.
- ``P:s<gen>`` (hash, expiring unless its builder commits): the checkpoint, log and generation
  of a view being rebuilt beside the one served; ``P:building`` (set) names those generations.
- ``P:garbage`` (set): old generations still being deleted; ``P:lease``: the projector lease;
  pub/sub channel ``P:projected``: the new checkpoint, after each commit.

A commit is one Lua script: it checks the checkpoint and the log identity, applies every
change, sets the new checkpoint and publishes it, atomically and in one round trip, so a
projector that dies anywhere applies a batch entirely or not at all, and one following another
log changes nothing (:class:`LogMismatchError`); memberships change in the same script. A
scoped read is one script too: ``ZINTER`` of the scope's sorted sets (Redis walks the smallest
and probes the others), then ``HMGET`` of the entries; no key of another scope is touched. An
agent's read reads its groups in the script, then intersects the scope's sets with the reader
index of each of its principals (``*``, its own, its groups'; ``own:agent`` with its agent index,
``own:group`` with each group's index), merges those answers by position and fetches only what
it may read: it costs what its answer costs, never a fetch of everything.

A rebuild fills a new generation beside the served one (:meth:`RedisReadModel.staging`) and
switches to it in one script that also records the old generation in ``P:garbage``; ``clear``
starts a new generation the same way. Old generations are deleted in bounded chunks, by the
process that switched and, should it die first, by any later open, commit or clear (which also
collect the generations of builders that stopped).

The scripts build key names from the prefix they are given, so all of a model's keys must live
on one Redis node (a single server, or a replica set; not a cluster).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgpack

from memswarm_es.errors import (
    CheckpointConflictError,
    ForeignStoreError,
    InvalidInputError,
    LogMismatchError,
    ReadModelBehindError,
    ReadModelUnavailableError,
    needs_extra,
)

with needs_extra():
    import redis
    import redis.asyncio

from memswarm_es.events import Event, decode
from memswarm_es.namespaces import Namespace, namespace_from_text, namespace_text, under
from memswarm_es.principals import agent, group, principals_of
from memswarm_es.scopes import Scope, check_id, escape_part, scope_key
from memswarm_es.waiting import wait_until, wait_until_async

from .base import LeaseProvider, ReadModel, link_at, link_of, link_text
from .fold import Change, MembershipChange, MemoryEntry, entry_from_row, entry_row, may_read

logger = logging.getLogger(__name__)

FORMAT = "memswarm-redis-2"
#: Formats this version rebuilds from the log when it opens them (views are disposable).
_OLD_FORMATS = ("memswarm-redis-1",)
#: The indexes of the memories readable by their own agent and by their own group.
_OWN_AGENT, _OWN_GROUP = "own:agent", "own:group"
DEFAULT_URL = "redis://127.0.0.1:6379/0"
_GC_CHUNK = 500
DEFAULT_MAX_CONNECTIONS = 64
EPHEMERAL_TTL = 60.0  # seconds a private view outlives a process that stopped renewing it
_REBUILD_LOOK = 0.5  # longest pause between two looks while a read waits for a build

_COMMIT = """
local meta = KEYS[1]
if tonumber(ARGV[8]) > 0 then
  if redis.call('EXISTS', meta) == 0 then
    return {3, 0}  -- a staging generation whose builder stopped renewing it: gone
  end
  redis.call('PEXPIRE', meta, ARGV[8])
end
local current = tonumber(redis.call('HGET', meta, 'checkpoint') or '0')
if current ~= tonumber(ARGV[1]) then
  return {0, current}
end
local format = redis.call('HGET', meta, 'format')
if format and format ~= ARGV[4] then
  return {4, format}  -- laid out by another version (an upgrade since): not written in this one
end
local followed = redis.call('HGET', meta, 'log_id')
if ARGV[6] ~= '' and followed and followed ~= ARGV[6] then
  return {2, followed}
end
local base = ARGV[3] .. (redis.call('HGET', meta, 'gen') or '0') .. ':'
local touched = {base .. 'mem', base .. 'all', base .. 'idx'}
-- the changes, encoded once by the projector: one argument, not one per item
local A = cmsgpack.unpack(ARGV[10])
local i = 1
-- one command per chunk of arguments (Lua's unpack has a limit), not one per memory
local function bulk(command, key, count)
  for s = i, i + count - 1, 4000 do
    redis.call(command, key, unpack(A, s, math.min(s + 3999, i + count - 1)))
  end
  i = i + count
end
local function section(command, key)
  local count = tonumber(A[i])
  i = i + 1
  if count > 0 then
    bulk(command, key, count)
  end
end
section('HSET', base .. 'mem')   -- memory id, entry
local deleted = tonumber(A[i])
if deleted > 0 then
  i = i + 1
  bulk('HDEL', base .. 'mem', deleted)
  i = i - deleted
  bulk('ZREM', base .. 'all', deleted)
else
  i = i + 1
end
section('ZADD', base .. 'all')   -- position, memory id
section('SADD', base .. 'idx')   -- names of the indexes and membership hashes written to
local joined = tonumber(A[i])  -- membership changes: groups hash, members hash, agent,
i = i + 1                         -- group, admin flag ('' when it is no member any more)
for _ = 1, joined do
  local groups, members = base .. 'i:' .. A[i], base .. 'i:' .. A[i + 1]
  if A[i + 4] == '' then
    redis.call('HDEL', groups, A[i + 3])
    redis.call('HDEL', members, A[i + 2])
  else
    redis.call('HSET', groups, A[i + 3], A[i + 4])
    redis.call('HSET', members, A[i + 2], A[i + 4])
  end
  touched[#touched + 1] = groups
  touched[#touched + 1] = members
  i = i + 5
end
local spaces = {}  -- namespaces touched: the name of the index of the memories in each, and
for _ = 1, tonumber(A[i]) do  -- the namespace as text
  spaces[#spaces + 1] = {A[i + 1], A[i + 2]}
  i = i + 2
end
i = i + 1
while i <= #A do              -- per index: name, then additions, then removals
  local key = base .. 'i:' .. A[i]
  touched[#touched + 1] = key
  i = i + 1
  section('ZADD', key)
  section('ZREM', key)
end
if #spaces > 0 then  -- the namespaces present, lexically sorted: those whose index holds any
  local present = base .. 'i:present'
  redis.call('SADD', base .. 'idx', 'present')
  touched[#touched + 1] = present
  for _, space in ipairs(spaces) do
    if redis.call('EXISTS', base .. 'i:' .. space[1]) == 1 then
      redis.call('ZADD', present, 0, space[2])
    else
      redis.call('ZREM', present, space[2])
    end
  end
end
redis.call('HSET', meta, 'checkpoint', ARGV[2], 'format', ARGV[4], 'link', ARGV[11])
if ARGV[6] ~= '' then
  redis.call('HSET', meta, 'log_id', ARGV[6])
end
local target = tonumber(redis.call('HGET', meta, 'rebuilding') or '0')
if target > 0 and tonumber(ARGV[2]) >= target then
  redis.call('HDEL', meta, 'rebuilding')
end
if tonumber(ARGV[7]) > 0 then  -- keys that expire together unless a live owner renews them
  local deadline = redis.call('HGET', meta, 'deadline')
  if not deadline then
    local now = redis.call('TIME')
    deadline = now[1] * 1000 + math.floor(now[2] / 1000) + tonumber(ARGV[7])
    redis.call('HSET', meta, 'deadline', deadline)
  end
  touched[#touched + 1] = meta
  for _, key in ipairs(touched) do
    redis.call('PEXPIREAT', key, deadline)
  end
end
for _, gen in ipairs(redis.call('SMEMBERS', KEYS[3])) do  -- builders that died
  if redis.call('EXISTS', ARGV[9] .. gen) == 0 then
    redis.call('SREM', KEYS[3], gen)
    redis.call('SADD', KEYS[2], gen)
  end
end
if ARGV[5] ~= '' then
  redis.call('PUBLISH', ARGV[5], ARGV[2])
end
return {1, tonumber(ARGV[2]), redis.call('SCARD', KEYS[2])}
"""

_READ = """
local meta, mode = ARGV[1], ARGV[3]
if mode ~= 'ids' then  -- a reader's read: not while the view is being built from nothing
  local target = tonumber(redis.call('HGET', meta, 'rebuilding') or '0')
  if target > 0 then
    return {target, tonumber(redis.call('HGET', meta, 'checkpoint') or '0')}
  end
end
local base = ARGV[2] .. (redis.call('HGET', meta, 'gen') or '0') .. ':'
if mode == 'hash' then  -- a membership hash, as field, value, ...
  local out = {0}
  for _, v in ipairs(redis.call('HGETALL', base .. 'i:' .. ARGV[4])) do out[#out + 1] = v end
  return out
end
local function fetch(ids, out)  -- append the entries of ids to out (false for none)
  for s = 1, #ids, 1000 do
    local chunk = redis.call('HMGET', base .. 'mem', unpack(ids, s, math.min(s + 999, #ids)))
    for k = 1, #chunk do out[#out + 1] = chunk[k] end
  end
  return out
end
local readable  -- an agent's read (ARGV[4] is its principal): per principal, the indexes
if ARGV[4] ~= '' then  -- whose intersection it may read; its groups as it belongs to them now
  local function esc(s)  -- as escape_part does
    return (s:gsub('%%', '%%25'):gsub(':', '%%3A'))
  end
  local me = esc(ARGV[4]:sub(7))
  readable = {{base .. 'i:r:*'}, {base .. 'i:r:' .. esc(ARGV[4])},
              {base .. 'i:own:agent', base .. 'i:agent:' .. me}}
  for _, g in ipairs(redis.call('HKEYS', base .. 'i:groups:' .. me)) do
    readable[#readable + 1] = {base .. 'i:r:' .. esc('group:' .. g)}
    readable[#readable + 1] = {base .. 'i:own:group', base .. 'i:group:' .. esc(g)}
  end
end
local function held(filter, ids)  -- per id of ids, whether every index of filter holds it
  local found = redis.call('ZMSCORE', filter[1], unpack(ids))
  for f = 2, #filter do
    local more = redis.call('ZMSCORE', filter[f], unpack(ids))
    for k = 1, #found do
      if not more[k] then found[k] = false end
    end
  end
  return found
end
if mode == 'spaces' then  -- the namespaces present in a lexical range (ARGV[5], ARGV[6]);
  local out = {0}          -- for an agent, those holding a memory it may read
  for _, text in ipairs(redis.call('ZRANGE', base .. 'i:present', ARGV[5], ARGV[6], 'BYLEX')) do
    local shown = not readable
    local space = base .. 'i:m:' .. (text:gsub('%%', '%%25'):gsub(':', '%%3A'))
    local start = 0
    while not shown do  -- walk the namespace a chunk at a time until a readable memory
      local ids = redis.call('ZRANGE', space, start, start + 999)
      if #ids == 0 then break end
      for _, filter in ipairs(readable) do
        for _, score in ipairs(held(filter, ids)) do
          if score then shown = true end
        end
      end
      start = start + 1000
    end
    if shown then out[#out + 1] = text end
  end
  return out
end
if mode ~= 'scope' then  -- ids: the entries of those the reader may read, in their order
  local ids = {}
  for j = 5, #ARGV do ids[#ids + 1] = ARGV[j] end
  if not readable then
    return fetch(ids, {0})
  end
  local allowed, pending = {}, ids
  for _, filter in ipairs(readable) do
    local still = {}
    for s = 1, #pending, 1000 do
      local scores = held(filter, {unpack(pending, s, math.min(s + 999, #pending))})
      for k = 1, #scores do
        local id = pending[s + k - 1]
        if scores[k] then allowed[id] = true else still[#still + 1] = id end
      end
    end
    pending = still
    if #pending == 0 then break end
  end
  local wanted = {}
  for _, id in ipairs(ids) do
    if allowed[id] then wanted[#wanted + 1] = id end
  end
  local blobs, out, k = fetch(wanted, {}), {0}, 0
  for _, id in ipairs(ids) do
    if allowed[id] then
      k = k + 1
      out[#out + 1] = blobs[k]
    else
      out[#out + 1] = false
    end
  end
  return out
end
local keys = {}
for j = 5, #ARGV do keys[#keys + 1] = base .. 'i:' .. ARGV[j] end
local ids
if readable then  -- per principal, the scope's indexes and its reader indexes intersected
  local lists = {}  -- (Redis walks the smallest), each id, position, ... in position order
  for _, filter in ipairs(readable) do
    local found
    if #keys == 0 and #filter == 1 then
      found = redis.call('ZRANGE', filter[1], 0, -1, 'WITHSCORES')
    else
      local command = {'ZINTER', #keys + #filter, unpack(keys)}
      for _, key in ipairs(filter) do command[#command + 1] = key end
      command[#command + 1], command[#command + 2] = 'AGGREGATE', 'MIN'
      command[#command + 1] = 'WITHSCORES'
      found = redis.call(unpack(command))
    end
    if #found > 0 then lists[#lists + 1] = found end
  end
  ids = {}
  if #lists == 1 then
    for k = 1, #lists[1], 2 do ids[#ids + 1] = lists[1][k] end
  elseif #lists > 1 then  -- merged by position; an id in several lists is taken once
    local at, size, head = {}, {}, {}
    for l = 1, #lists do at[l], size[l], head[l] = 1, #lists[l], tonumber(lists[l][2]) end
    local last, first = nil, 1  -- ids[first..] were taken at position last
    while true do
      local best
      for l = 1, #lists do
        if at[l] <= size[l] and (not best or head[l] < head[best]) then best = l end
      end
      if not best then break end
      local id, position = lists[best][at[best]], head[best]
      if position ~= last then last, first = position, #ids + 1 end
      local taken = false
      for j = first, #ids do
        if ids[j] == id then taken = true end
      end
      if not taken then ids[#ids + 1] = id end
      at[best] = at[best] + 2
      head[best] = tonumber(lists[best][at[best] + 1])
    end
  end
elseif #keys == 0 then
  ids = redis.call('ZRANGE', base .. 'all', 0, -1)
elseif #keys == 1 then
  ids = redis.call('ZRANGE', keys[1], 0, -1)
else
  ids = redis.call('ZINTER', #keys, unpack(keys))
end
return fetch(ids, {0})
"""

_CLEAR = """
if ARGV[3] and redis.call('HGET', KEYS[1], 'format') ~= ARGV[3] then
  return false  -- asked to clear a view of that format only: it is not (any more)
end
local gen = tonumber(redis.call('HGET', KEYS[1], 'gen') or '0')
local top = math.max(gen, tonumber(redis.call('HGET', KEYS[1], 'top') or '0')) + 1
redis.call('SADD', KEYS[2], gen)
redis.call('HSET', KEYS[1], 'gen', top, 'top', top, 'checkpoint', 0, 'format', ARGV[1])
redis.call('HDEL', KEYS[1], 'log_id', 'rebuilding', 'link')
redis.call('PUBLISH', ARGV[2], 0)
return top
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

_STAGE = """
local top = math.max(tonumber(redis.call('HGET', KEYS[1], 'gen') or '0'),
                     tonumber(redis.call('HGET', KEYS[1], 'top') or '0')) + 1
redis.call('HSET', KEYS[1], 'top', top, 'format', ARGV[2])
local stage = ARGV[1] .. top
redis.call('HSET', stage, 'gen', top, 'checkpoint', 0, 'format', ARGV[2])
redis.call('PEXPIRE', stage, ARGV[3])
redis.call('SADD', KEYS[2], top)
return top
"""

_SWITCH = """
local meta, stage = KEYS[1], KEYS[2]
if redis.call('EXISTS', stage) == 0 then
  return {3, 0}
end
local live = tonumber(redis.call('HGET', meta, 'checkpoint') or '0')
local staged = tonumber(redis.call('HGET', stage, 'checkpoint') or '0')
local followed = redis.call('HGET', meta, 'log_id')
local new_log = redis.call('HGET', stage, 'log_id')
if ARGV[2] ~= '1' then
  if followed and new_log and followed ~= new_log then
    return {2, followed}
  end
  if live > staged then
    return {0, live}
  end
end
redis.call('SADD', KEYS[3], redis.call('HGET', meta, 'gen') or '0')
redis.call('HSET', meta, 'gen', ARGV[1], 'checkpoint', staged, 'format', ARGV[3],
           'link', redis.call('HGET', stage, 'link') or '')
if new_log then
  redis.call('HSET', meta, 'log_id', new_log)
else
  redis.call('HDEL', meta, 'log_id')
end
redis.call('HDEL', meta, 'rebuilding')
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('DEL', stage)
redis.call('PUBLISH', ARGV[4], staged)
return {1, staged}
"""

_MARK = """
if tonumber(redis.call('HGET', KEYS[1], 'checkpoint') or '0') < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'rebuilding', ARGV[1], 'format', ARGV[2])
end
return 0
"""

_EXPIRED = """
local moved = 0
for _, gen in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('EXISTS', ARGV[1] .. gen) == 0 then
    redis.call('SREM', KEYS[2], gen)
    redis.call('SADD', KEYS[1], gen)
    moved = moved + 1
  end
end
return moved
"""

_RENEW = """
local meta = KEYS[1]
if redis.call('EXISTS', meta) == 0 then
  return 0
end
local now = redis.call('TIME')
local deadline = now[1] * 1000 + math.floor(now[2] / 1000) + tonumber(ARGV[2])
redis.call('HSET', meta, 'deadline', deadline)
local base = ARGV[1] .. (redis.call('HGET', meta, 'gen') or '0') .. ':'
local keys = {meta, KEYS[2], base .. 'mem', base .. 'all', base .. 'idx'}
for _, name in ipairs(redis.call('SMEMBERS', base .. 'idx')) do
  keys[#keys + 1] = base .. 'i:' .. name
end
for _, key in ipairs(keys) do
  redis.call('PEXPIREAT', key, deadline)
end
return 1
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


def _text(raw: bytes | str) -> str:
    """A reply as text (the clients here return bytes: no ``decode_responses``)."""
    return raw if isinstance(raw, str) else raw.decode()


def _unpack(blob: bytes) -> MemoryEntry:
    return entry_from_row(decode(blob))


def _entries_of(ids: list[str], blobs: list[Any]) -> dict[str, MemoryEntry]:
    """The entries the read script found for ``ids`` (``None`` where it found none)."""
    return {m: _unpack(b) for m, b in zip(ids, blobs, strict=True) if b is not None}


def _principal(reader: str | None) -> str:
    """How the read script is told who reads: the reader's principal, or ``""`` for the
    operator (no agent's principal is empty, so no agent id can read as the operator)."""
    return "" if reader is None else agent(reader)


def _flags(pairs: list[Any]) -> dict[str, bool]:
    """A membership hash (as ``field, flag, ...``) as a dict of admin flags."""
    return {_text(k): v == b"1" for k, v in zip(pairs[::2], pairs[1::2], strict=True)}


@functools.lru_cache(maxsize=65536)
def _reader_key(principal: str) -> str:
    """The name of the reader index of ``principal`` (never that of a scope index, which
    starts with the scope part's name)."""
    return "r:" + escape_part(principal)


def _groups_key(agent_id: str) -> str:
    """The name of the hash of the groups ``agent_id`` belongs to (group -> admin flag)."""
    return "groups:" + escape_part(agent_id)


def _members_key(group_id: str) -> str:
    """The name of the hash of the members of ``group_id`` (agent -> admin flag)."""
    return "members:" + escape_part(group_id)


def _index_names(e: MemoryEntry) -> tuple[str, ...]:
    """The indexes ``e`` belongs to: those of its scope parts, of its readers, of its key and
    of its namespace."""
    names = _names_of(e.agent_id, e.group_id, e.context_id, e.readable_by)
    if e.key is None and not e.namespace:
        return names
    return (*names, *_address_names(e.namespace, e.key))


@functools.lru_cache(maxsize=65536)
def _names_of(agent_id: str | None, group_id: str | None, context_id: str | None,
              readable_by: tuple[str, ...]) -> tuple[str, ...]:
    """The indexes of a scope and readers (memories share them: made once each); its own
    agent and group as readers are in the two ``own:`` indexes, not in reader indexes."""
    names = [scope_key(name, value) for name, value in
             (("agent_id", agent_id), ("group_id", group_id), ("context_id", context_id))
             if value is not None]
    own = {} if agent_id is None else {agent(agent_id): _OWN_AGENT}
    if group_id is not None:
        own[group(group_id)] = _OWN_GROUP
    return (*names, *(own.get(p) or _reader_key(p) for p in readable_by))


def _address_names(namespace: Namespace, key: str | None) -> list[str]:
    """The indexes of a key, of its namespace and of every prefix of it."""
    names = [] if key is None else [_keyed_key(namespace, key)]
    if namespace:
        names.append(_space_key(namespace))
        names += [_under_key(namespace[:depth]) for depth in range(1, len(namespace) + 1)]
    return names


def _keyed_key(namespace: Namespace, key: str) -> str:
    """The index of the memories holding ``key`` in ``namespace`` (one, in a log written by
    MemSwarm)."""
    return f"k:{escape_part(namespace_text(namespace))}:{escape_part(key)}"


def _space_key(namespace: Namespace) -> str:
    """The index of the memories in ``namespace`` itself."""
    return "m:" + escape_part(namespace_text(namespace))


def _under_key(prefix: Namespace) -> str:
    """The index of the memories in ``prefix`` and every namespace below it."""
    return "n:" + escape_part(namespace_text(prefix))


def _commit_args(changes: Sequence[Change],
                 memberships: Sequence[MembershipChange]) -> list[Any]:
    """The commit script's changes (one msgpack array after the header), in sections of
    ``count, items...``:
    entries to set, ids to delete, ids to (re)score in ``all``, the names of indexes and
    membership hashes written to, the membership changes (five items each), then per index
    (of a scope part or of a reader) its name, its additions and its removals."""
    # The entries encoded as events.encode does, by one packer (packb makes one per call).
    pack = msgpack.Packer(use_bin_type=True, datetime=False).pack
    entries: list[Any] = []
    deleted: list[str] = []
    added: list[Any] = []
    additions: dict[str, list[Any]] = {}
    removals: dict[str, list[str]] = {}
    for memory_id, before, after in changes:
        if before is None and after is not None:  # written (most changes): added everywhere
            position = after.position
            entries += (memory_id, pack(after))  # (a tuple: packed as entry_row(after) is)
            added += (position, memory_id)
            for name in _index_names(after):
                found = additions.get(name)
                if found is None:
                    additions[name] = [position, memory_id]
                else:
                    found += (position, memory_id)
            continue
        old = () if before is None else _index_names(before)
        if after is None:
            deleted.append(memory_id)
            for name in old:
                removals.setdefault(name, []).append(memory_id)
            continue
        entries += (memory_id, pack(entry_row(after)))
        new = _index_names(after)
        # written (a foreign log may write one id twice): scored at its position everywhere
        written = before is None or before.position != after.position
        if written:
            added += (after.position, memory_id)
        for name in new:
            if written or name not in old:
                additions.setdefault(name, []).extend((after.position, memory_id))
        for name in old:
            if name not in new:
                removals.setdefault(name, []).append(memory_id)
    joined: list[str] = []
    hashes: set[str] = set()
    for m in memberships:
        names = (_groups_key(m.agent_id), _members_key(m.group_id))
        if m.admin is not None:
            hashes.update(names)
        joined += (*names, m.agent_id, m.group_id,
                   "" if m.admin is None else "1" if m.admin else "0")
    written_to = [*additions, *hashes]
    spaces = {_space_key(e.namespace): namespace_text(e.namespace)
              for c in changes for e in (c.before, c.after) if e is not None and e.namespace}
    args: list[Any] = [len(entries), *entries, len(deleted), *deleted, len(added), *added,
                       len(written_to), *written_to, len(memberships), *joined,
                       len(spaces), *(item for pair in spaces.items() for item in pair)]
    for name in additions.keys() | removals.keys():
        plus, minus = additions.get(name, []), removals.get(name, [])
        args += [name, len(plus), *plus, len(minus), *minus]
    return args


def _lua_pack(items: list[Any]) -> bytes:
    """``items`` as one msgpack array for the script's ``cmsgpack.unpack`` (which reads text
    and bytes alike as the old raw type, and knows no bin type)."""
    packed: bytes = msgpack.packb(items, use_bin_type=False)
    return packed


class RedisReadModel(ReadModel, LeaseProvider):
    """Memories of one log in Redis, under ``prefix``; see the module docstring for the layout.

    Safe to share between threads; many processes may read it, and many projectors may commit
    to it (each commit checks the checkpoint, so racing projectors never apply an event twice).

    ``expire_after`` (seconds) makes every key expire together unless this object keeps
    renewing them (a thread does, until :meth:`close`): for private views that a crashed
    process must not leave behind. A read of a view being built from nothing waits for the
    build (at most ``rebuild_timeout`` seconds, then :class:`ReadModelBehindError`).
    ``max_connections`` bounds each connection pool; a caller beyond it waits for one.
    """

    def __init__(self, url: str = DEFAULT_URL, *, prefix: str = "memswarm",
                 socket_timeout: float = 30.0, expire_after: float | None = None,
                 rebuild_timeout: float = 60.0, stage_ttl: float = 120.0,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        if expire_after is not None and expire_after <= 0:
            raise ValueError("expire_after must be positive")
        self.url = url
        self.prefix = check_id(prefix, "prefix")
        self.expire_after = expire_after
        self.rebuild_timeout = rebuild_timeout
        self.stage_ttl = stage_ttl
        base = escape_part(prefix)
        self.meta_key = f"{base}:meta"
        self.garbage_key = f"{base}:garbage"
        self.building_key = f"{base}:building"
        self.lease_key = f"{base}:lease"
        self.channel = f"{base}:projected"
        self._gen_base = f"{base}:g"
        self._stage_base = f"{base}:s"
        self._stage_gen: int | None = None
        self._options: dict[str, Any] = {"socket_timeout": socket_timeout,
                                         "socket_connect_timeout": min(socket_timeout, 5.0),
                                         "max_connections": max_connections, "timeout": None}
        pool = redis.BlockingConnectionPool.from_url(url, **self._options)
        self._client = redis.Redis(connection_pool=pool)
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
        self._renewer: threading.Thread | None = None
        with contextlib.suppress(ReadModelUnavailableError):
            self._upgrade()
            self.collect_garbage()  # what a process that died while deleting left behind
        if expire_after is not None:
            self._renewer = threading.Thread(target=self._renew, daemon=True,
                                             name=f"memswarm-redis-renew-{prefix}")
            self._renewer.start()

    @property
    def client(self) -> redis.Redis:
        """The synchronous client (for leases and tools that share the connection pool)."""
        return self._client

    # --- the ReadModel interface ----------------------------------------------------------------

    def checkpoint(self) -> int:
        return self.checkpoint_and_hash()[0]

    def checkpoint_and_hash(self) -> tuple[int, bytes | None]:
        with _answering(self.url):
            checkpoint, found, link = self._client.hmget(self.meta_key,
                                                         ["checkpoint", "format", "link"])
        position = self._checked(checkpoint, found)
        return position, link_at(position, link)

    def _checked(self, checkpoint: bytes | str | None, found: bytes | str | None) -> int:
        if found is not None and _text(found) != FORMAT:
            raise ForeignStoreError(
                f"{self.url}: {self.meta_key} holds format {_text(found)!r}, not {FORMAT!r}")
        return int(checkpoint or 0)

    def followed_log(self) -> str | None:
        with _answering(self.url):
            found = self._client.hget(self.meta_key, "log_id")
        return None if found is None else _text(found)

    def get_many(self, memory_ids: Iterable[str],
                 reader: str | None = None) -> dict[str, MemoryEntry]:
        return self._get_many(list(memory_ids), "get", reader)

    def current(self, memory_ids: Iterable[str]) -> dict[str, MemoryEntry]:
        return self._get_many(list(memory_ids), "ids", None)

    def _get_many(self, ids: list[str], mode: str, reader: str | None) -> dict[str, MemoryEntry]:
        if not ids:
            return {}
        blobs = self._read_complete(self._ids_args(ids, mode, reader))
        return _entries_of(ids, blobs)

    def _ids_args(self, ids: list[str], mode: str, reader: str | None) -> list[str]:
        return [self.meta_key, self._gen_base, mode, _principal(reader), *ids]

    def members(self, group_id: str) -> dict[str, bool]:
        return _flags(self._read_complete(self._hash_args(_members_key(group_id))))

    def groups_of(self, agent_id: str) -> dict[str, bool]:
        return _flags(self._read_complete(self._hash_args(_groups_key(agent_id))))

    def _hash_args(self, name: str) -> list[str]:
        return [self.meta_key, self._gen_base, "hash", name]

    def commit(self, changes: Sequence[Change], expected_checkpoint: int, checkpoint: int,
               events: Sequence[Event] = (),
               memberships: Sequence[MembershipChange] = ()) -> None:
        keys, args = self._commit_call(changes, expected_checkpoint, checkpoint, events,
                                       memberships)
        with _answering(self.url):
            found = self._commit(keys=keys, args=args)
        self._committed(found, expected_checkpoint)

    sends_commits = True

    @contextlib.contextmanager
    def commit_sender(self) -> Iterator[Callable[..., Callable[[], None]]]:
        """Commits sent on one connection of their own (so Redis runs them in the order
        sent), each answer read when waited for: the projector folds the next batch while
        Redis runs the script. Answers still unread at the end (an error) close the
        connection: the scripts sent run or not, each checking its checkpoint."""
        pool = self._client.connection_pool
        with _answering(self.url):
            connection = pool.get_connection()
        unread = 0

        def send(changes: Sequence[Change], expected_checkpoint: int, checkpoint: int,
                 events: Sequence[Event] = (),
                 memberships: Sequence[MembershipChange] = ()) -> Callable[[], None]:
            nonlocal unread
            keys, args = self._commit_call(changes, expected_checkpoint, checkpoint, events,
                                           memberships)
            with _answering(self.url):
                connection.send_command("EVALSHA", self._commit.sha, len(keys), *keys, *args)
            unread += 1

            def wait() -> None:
                nonlocal unread
                with _answering(self.url):
                    try:
                        found = connection.read_response()
                    except redis.exceptions.NoScriptError:  # (not loaded: it did not run)
                        found = self._commit(keys=keys, args=args)
                    finally:
                        unread -= 1
                self._committed(found, expected_checkpoint)

            return wait

        try:
            yield send
        finally:
            if unread:
                connection.disconnect()
            pool.release(connection)

    def _commit_call(self, changes: Sequence[Change], expected_checkpoint: int,
                     checkpoint: int, events: Sequence[Event],
                     memberships: Sequence[MembershipChange]) -> tuple[list[str], list[Any]]:
        """The keys and arguments of the commit script."""
        stage_ttl = int(self.stage_ttl * 1000) if self._stage_gen is not None else 0
        expire = int(self.expire_after * 1000) if self.expire_after is not None else 0
        args: list[Any] = [expected_checkpoint, checkpoint, self._gen_base, FORMAT,
                "" if self._stage_gen is not None else self.channel, self.log_id or "", expire,
                stage_ttl, self._stage_base, _lua_pack(_commit_args(changes, memberships)),
                link_text(checkpoint, link_of(events, checkpoint))]
        return [self.meta_key, self.garbage_key, self.building_key], args

    def _committed(self, found: list[Any], expected_checkpoint: int) -> None:
        """Raise what the commit script's answer ``found`` says went wrong."""
        if found[0] == 0:
            raise CheckpointConflictError(expected_checkpoint, found[1])
        if found[0] == 2:
            raise LogMismatchError(self.log_id or "", found[1].decode())
        if found[0] == 3:
            raise self._expired()
        if found[0] == 4:
            self._checked(None, found[1])  # raises: the view is in another version's format
        if found[2]:
            self.collect_garbage()

    def _expired(self) -> ReadModelUnavailableError:
        return ReadModelUnavailableError(
            f"{self.url}: staging generation {self._stage_gen} of {self.prefix!r} expired (its "
            f"builder paused longer than {self.stage_ttl:g} s); rebuild again")

    def _upgrade(self) -> None:
        """A view in a format of an earlier version starts again from nothing (the next
        catch-up rebuilds it from the log): its indexes are not those this version reads."""
        with _answering(self.url):
            found = self._client.hget(self.meta_key, "format")
        if found is not None and _text(found) in _OLD_FORMATS:
            logger.warning("%s: read model %r holds format %r, not %r; rebuilding it",
                           self.url, self.prefix, _text(found), FORMAT)
            self._clear_if(_text(found))

    def clear(self) -> None:
        """Start an empty generation (at once, atomically), then delete the old ones."""
        self._clear_if()

    def _clear_if(self, *old_format: str) -> None:
        """Clear, or with ``old_format`` clear only a view still of that format."""
        with _answering(self.url):
            gen = self._clear(keys=[self.meta_key, self.garbage_key],
                              args=[FORMAT, self.channel, *old_format])
        if gen is None:
            return
        logger.info("%s: read model %r now at generation %s", self.url, self.prefix, gen)
        self.changed.notify()
        self.collect_garbage()

    def mark_rebuilding(self, target: int) -> None:
        if self._stage_gen is not None:
            return  # nobody reads a staging generation
        with _answering(self.url):
            self._client.eval(_MARK, 1, self.meta_key, target, FORMAT)

    def staging(self) -> RedisReadModel | None:
        """A new generation under the same prefix, built beside the one served (a builder that
        stops renewing it for ``stage_ttl`` seconds loses it to the garbage collector)."""
        if self.expire_after is not None or self._stage_gen is not None:
            return None
        with _answering(self.url):
            gen = self._client.eval(_STAGE, 2, self.meta_key, self.building_key,
                                    self._stage_base, FORMAT, int(self.stage_ttl * 1000))
        twin = RedisReadModel(self.url, prefix=self.prefix,
                              socket_timeout=self._options["socket_timeout"],
                              stage_ttl=self.stage_ttl)
        twin._stage_gen = int(gen)
        twin.meta_key = f"{self._stage_base}{gen}"
        return twin

    def switch_to(self, staged: ReadModel, *, force: bool = False) -> bool:
        if not isinstance(staged, RedisReadModel) or staged._stage_gen is None \
                or staged.prefix != self.prefix:
            raise ValueError("switch_to takes a model made by this model's staging()")
        with _answering(self.url):
            found = self._client.eval(
                _SWITCH, 4, self.meta_key, staged.meta_key, self.garbage_key, self.building_key,
                staged._stage_gen, "1" if force else "0", FORMAT, self.channel)
        if found[0] == 2:
            raise LogMismatchError(staged.log_id or "", found[1].decode())
        if found[0] == 3:
            raise staged._expired()
        if found[0] == 0:
            return False
        logger.info("%s: read model %r switched to generation %s at position %s", self.url,
                 self.prefix, staged._stage_gen, found[1])
        self.changed.notify()
        self.collect_garbage()
        return True

    def collect_garbage(self) -> None:
        """Delete the keys of old generations (and of staging ones whose builder died), a
        bounded chunk per script call (so Redis is never blocked for long, and a collector
        that dies leaves work the next open, commit or clear finishes)."""
        with _answering(self.url):
            self._client.eval(_EXPIRED, 2, self.garbage_key, self.building_key,
                              self._stage_base)
            for raw in self._client.smembers(self.garbage_key):
                while self._collect(keys=[self.meta_key, self.garbage_key],
                                    args=[_text(raw), self._gen_base, _GC_CHUNK]):
                    pass

    def read_scope(self, scope: Scope, reader: str | None = None) -> list[MemoryEntry]:
        return [_unpack(b) for b in self._read_complete(self._read_args(scope, reader))]

    def _read_args(self, scope: Scope, reader: str | None, *more: str) -> list[str]:
        return [self.meta_key, self._gen_base, "scope", _principal(reader),
                *(scope_key(name, value) for name, value in scope.parts()), *more]

    # --- keys and namespaces: more indexes the read script intersects -----------------------

    def get_by_key(self, namespace: Namespace, key: str,
                   reader: str | None = None) -> MemoryEntry | None:
        found = self._read_complete(self._read_args(Scope(), None, _keyed_key(namespace, key)))
        entry = _unpack(found[0]) if found else None
        if entry is None or reader is None:
            return entry
        return entry if may_read(entry, principals_of(reader, self.groups_of(reader))) else None

    def read_namespace(self, scope: Scope, prefix: Namespace, reader: str | None = None,
                       first: int | None = None) -> list[MemoryEntry]:
        more = (_under_key(prefix),) if prefix else ()
        found = self._read_complete(self._read_args(scope, reader, *more))
        return [_unpack(b) for b in found[:first]]

    def namespaces_held(self, prefix: Namespace, reader: str | None = None) -> set[Namespace]:
        low = namespace_text(prefix)  # then keep those under it: "a-b" lies between a and a/
        lex = (f"[{low}", f"({low}/") if prefix else ("-", "+")
        texts = self._read_complete([self.meta_key, self._gen_base, "spaces",
                                     _principal(reader), *lex])
        return {ns for ns in (namespace_from_text(_text(t)) for t in texts) if under(ns, prefix)}

    def _read_complete(self, args: list[Any]) -> list[Any]:
        """Run the read script; while the view is being built from nothing, wait for it."""
        answer: list[Any] = []

        def ready() -> bool:
            nonlocal answer
            with _answering(self.url):
                answer = self._read(args=args)
            return not answer[0]

        if not wait_until(ready, self.rebuild_timeout,
                          lambda delay: self.wait(answer[0] - 1, delay),
                          first=_REBUILD_LOOK, longest=_REBUILD_LOOK):
            raise self._behind(answer)
        return answer[1:]

    def _behind(self, answer: list[Any]) -> ReadModelBehindError:
        """The error of a read that waited out ``rebuild_timeout`` for a build: ``answer`` is
        the read script's (the position waited for, the checkpoint reached)."""
        return ReadModelBehindError(answer[0], answer[1], self.rebuild_timeout)

    def drop(self) -> None:
        """Delete every key of this read model (its data, checkpoint, lease)."""
        self.clear()
        with _answering(self.url):
            self._client.unlink(self.meta_key, self.garbage_key, self.building_key,
                                self.lease_key)

    def close(self) -> None:
        self._closed.set()
        for thread in (self._listener, self._renewer):
            if thread is not None:
                thread.join(timeout=5)
        self._client.close()

    def _renew(self) -> None:
        """Push the common deadline of every key forward, a third of ``expire_after`` at a
        time, until :meth:`close`."""
        assert self.expire_after is not None
        every = self.expire_after / 3
        while not self._closed.wait(every):
            try:
                with _answering(self.url):
                    self._client.eval(_RENEW, 2, self.meta_key, self.garbage_key,
                                      self._gen_base, int(self.expire_after * 1000))
            except ReadModelUnavailableError as exc:
                logger.warning("could not renew the keys of %r: %s", self.prefix, exc)

    # --- async twins (native: redis.asyncio, one client per event loop) ---------------------

    def _async_client(self) -> tuple[Any, Any]:
        loop = asyncio.get_running_loop()
        found = self._async.get(loop)
        if found is None:
            pool = redis.asyncio.BlockingConnectionPool.from_url(self.url, **self._options)
            client = redis.asyncio.Redis(connection_pool=pool)
            found = (client, client.register_script(_READ))
            self._async[loop] = found
        return found

    async def checkpoint_async(self) -> int:
        client, _ = self._async_client()
        with _answering(self.url):
            checkpoint, found = await client.hmget(self.meta_key, ["checkpoint", "format"])
        return self._checked(checkpoint, found)

    async def get_many_async(self, memory_ids: Iterable[str],
                             reader: str | None = None) -> dict[str, MemoryEntry]:
        ids = list(memory_ids)
        if not ids:
            return {}
        blobs = await self._read_complete_async(self._ids_args(ids, "get", reader))
        return _entries_of(ids, blobs)

    async def read_scope_async(self, scope: Scope,
                               reader: str | None = None) -> list[MemoryEntry]:
        return [_unpack(b) for b in
                await self._read_complete_async(self._read_args(scope, reader))]

    async def members_async(self, group_id: str) -> dict[str, bool]:
        return _flags(await self._read_complete_async(self._hash_args(_members_key(group_id))))

    async def _read_complete_async(self, args: list[Any]) -> list[Any]:
        _, read = self._async_client()
        answer: list[Any] = []

        async def ready() -> bool:
            nonlocal answer
            with _answering(self.url):
                answer = await read(args=args)
            return not answer[0]

        if not await wait_until_async(ready, self.rebuild_timeout,
                                      lambda delay: self.wait_async(answer[0] - 1, delay),
                                      first=_REBUILD_LOOK, longest=_REBUILD_LOOK):
            raise self._behind(answer)
        return answer[1:]

    async def aclose(self) -> None:
        found = self._async.pop(asyncio.get_running_loop(), None)
        if found is not None:
            await found[0].aclose()

    # --- hearing of commits made by other processes ------------------------------------------

    @property
    def poll_interval(self) -> float:
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
        """Listen until :meth:`close`; after a failure, try again after a pause that doubles
        up to a second (waiters poll meanwhile)."""
        wait_until(self._listen_once, math.inf, self._closed.wait, first=0.05, longest=1.0)

    def _listen_once(self) -> bool:
        """Subscribe and turn messages into wake-ups until :meth:`close` (then True) or until
        the connection fails (then False)."""
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.channel)
            self._listening = True
            self.changed.notify()  # messages may have been lost while disconnected
            while not self._closed.is_set():
                if pubsub.get_message(timeout=0.2) is not None:
                    self.changed.notify()
        except redis.exceptions.RedisError as exc:
            if self._listening:
                logger.warning("%s: pub/sub lost (%s); polling until it is back", self.url, exc)
        finally:
            self._listening = False
            with contextlib.suppress(redis.exceptions.RedisError):
                pubsub.close()
        return self._closed.is_set()

    # --- the projector lease -------------------------------------------------------------------

    def lease(self, ttl: float = 10.0) -> RedisLease:
        """A lease in Redis that lets one projector at a time apply to this read model."""
        return RedisLease(self, ttl)


def open_url(url: str, **options: Any) -> RedisReadModel:
    """``redis://host:port/db?prefix=P`` (or ``rediss://``): the view under the prefix ``P``
    (default ``memswarm``). Other query parameters are the client's (as redis-py reads them);
    ``options`` are :class:`RedisReadModel`'s (e.g. ``expire_after``)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefixes = [value for key, value in query if key == "prefix"]
    if prefixes:
        if "prefix" in options:
            raise InvalidInputError(f"{url}: the prefix is given in the URL and as an option")
        options["prefix"] = prefixes[-1]
    rest = urlencode([(key, value) for key, value in query if key != "prefix"])
    return RedisReadModel(urlunsplit(parts._replace(query=rest)), **options)


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
        return None if found is None else _text(found)
