"""Integrity of the GCS log on fake-gcs-server (issue #10): a forget reaches every process's
cache and every object in the bucket, even when two processes redact one batch at once; times
come from the store, not the writer's clock; the log's identity; ids and rows another program
wrote are checked."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import hypothesis.strategies as st
import pytest
from google.cloud import storage
from hypothesis import example, given, settings

import memswarm_es.events
import memswarm_es.log.event_list
from memswarm_es import GCSSharedMemory
from memswarm_es.errors import LogNotFoundError, StorageError
from memswarm_es.events import EventType, NewEvent, now_micros
from memswarm_es.log import gcs
from memswarm_es.log.base import EventFilter
from memswarm_es.log.copy import copy_log
from memswarm_es.log.gcs import GCSEventLog
from memswarm_es.log.inprocess import InMemoryEventLog
from memswarm_es.scopes import Scope

from .servers_gcs import GCSServer, emulator_client

ROOT = Path(__file__).resolve().parent.parent
DAY_US = 86_400_000_000


def written(memory_id: str, value: str, agent: str = "a") -> NewEvent:
    return NewEvent.create(EventType.MEMORY_WRITTEN, Scope(agent), agent,
                           {"value": value, "metadata": {}}, memory_id=memory_id, version=1)


def marker() -> str:
    return f"secret-{uuid.uuid4().hex}"


def traces(text: str) -> list[bytes]:
    """The forms in which content could linger: itself, its base64, its sha256."""
    raw = text.encode()
    return [raw, base64.b64encode(raw), hashlib.sha256(raw).digest(),
            hashlib.sha256(raw).hexdigest().encode()]


def leftovers(client: storage.Client, bucket: str, prefix: str, markers: list[str],
              server_root: str | None) -> list[str]:
    """Where any trace of ``markers`` remains: the raw bytes of every object under the prefix,
    and every file of the emulator's data directory."""
    found = []
    places: list[tuple[str, bytes]] = [
        (blob.name, blob.download_as_bytes())
        for blob in client.list_blobs(bucket, prefix=prefix)]
    if server_root:
        for folder, _, files in os.walk(server_root):
            places += [(os.path.join(folder, f), Path(folder, f).read_bytes()) for f in files]
    for where, data in places:
        found += [f"{where}: {m}" for m in markers if any(t in data for t in traces(m))]
    return found


def emulator_root(server: GCSServer) -> str | None:
    return None if os.environ.get("MEMSWARM_GCS_BUCKET") else server.root


def client_for(server: GCSServer) -> storage.Client:
    return storage.Client() if os.environ.get("MEMSWARM_GCS_BUCKET") \
        else emulator_client(server.url)


def at_once(calls: list[Callable[[], object]]) -> list[object]:
    """Run ``calls`` in threads released together; their results (or exceptions), in order."""
    start = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:  # returned to the test, which asserts on it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def payloads(log: GCSEventLog, memory_id: str) -> list[bytes | None]:
    """The payloads ``read`` and ``query`` return for one memory's events before its forget."""
    by_read = [e.payload for e in log.read()
               if e.memory_id == memory_id and e.type != EventType.MEMORY_FORGOTTEN]
    by_query = [e.payload for e in log.query(EventFilter(memory_id=memory_id))
                if e.type != EventType.MEMORY_FORGOTTEN]
    assert by_read == by_query
    return by_read


# --- 1. forget reaches other processes' caches and the bucket ---------------------------------


def test_a_forget_elsewhere_empties_this_process_cache(
        gcs_server: GCSServer, gcs_bucket: str, gcs_prefix: str,
        gcs_client: storage.Client) -> None:
    writer = GCSSharedMemory(gcs_bucket, gcs_prefix, gcs_client)
    secret, kept = marker(), marker()
    m = writer.write_scope(secret, metadata={"agent_id": "a"})
    writer.update(m, secret + "-v2")
    other = writer.write_scope(kept, metadata={"agent_id": "a"})
    reader = GCSEventLog(gcs_bucket, gcs_prefix, client_for(gcs_server))
    assert all(p is not None for p in payloads(reader, m))  # cached here

    writer.forget(m, "asked to")
    assert payloads(reader, m) == [None, None]
    assert reader.read()[-1].type == EventType.MEMORY_FORGOTTEN
    assert all(p is not None for p in payloads(reader, other))
    assert reader.verify() == 4
    assert not leftovers(gcs_client, gcs_bucket, gcs_prefix, [secret],
                         emulator_root(gcs_server))


FORGETTER = """
import sys
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from memswarm_es import GCSSharedMemory
client = storage.Client(project="memswarm-test", credentials=AnonymousCredentials())
GCSSharedMemory(sys.argv[1], sys.argv[2], client).forget(sys.argv[3], "asked to")
"""


def test_a_forget_in_another_process_reaches_this_cache(
        gcs_server: GCSServer, gcs_bucket: str, gcs_prefix: str,
        gcs_client: storage.Client) -> None:
    log = GCSEventLog(gcs_bucket, gcs_prefix, gcs_client)
    secret = marker()
    log.append([written("m", secret), written("n", "kept")])
    assert payloads(log, "m") != [None]
    env = dict(os.environ, PYTHONPATH=str(ROOT), STORAGE_EMULATOR_HOST=gcs_server.url)
    subprocess.run([sys.executable, "-c", FORGETTER, gcs_bucket, gcs_prefix, "m"], cwd=ROOT,
                   env=env, check=True, timeout=120)
    assert payloads(log, "m") == [None]
    assert log.latest("n").payload is not None  # type: ignore[union-attr]
    assert not leftovers(gcs_client, gcs_bucket, gcs_prefix, [secret],
                         emulator_root(gcs_server))


def test_a_forget_event_without_its_redaction_still_hides_the_content_and_is_finished(
        gcs_server: GCSServer, gcs_bucket: str, gcs_prefix: str,
        gcs_client: storage.Client) -> None:
    """A forgetter killed between its event and its redaction: readers serve nothing, and
    another process's forget finishes the redaction though its own cache holds no payload."""
    log = GCSEventLog(gcs_bucket, gcs_prefix, gcs_client)
    secret = marker()
    log.append([written("m", secret)])
    reader = GCSSharedMemory(gcs_bucket, gcs_prefix, client_for(gcs_server))
    assert reader.log.read()[0].payload is not None
    log.append([NewEvent.create(EventType.MEMORY_FORGOTTEN, Scope("a"), "a",
                                {"reason": "x"}, memory_id="m", version=2)])
    assert payloads(reader.log, "m") == [None]
    assert leftovers(gcs_client, gcs_bucket, gcs_prefix, [secret], None)  # still in the bucket
    reader.forget("m", "finish it")
    assert not leftovers(gcs_client, gcs_bucket, gcs_prefix, [secret],
                         emulator_root(gcs_server))


def test_two_processes_forget_two_memories_of_one_batch_in_turn(
        gcs_server: GCSServer, gcs_bucket: str, gcs_prefix: str,
        gcs_client: storage.Client) -> None:
    """The second forgetter read the batch before the first rewrote it (a stale generation)."""
    first, second = marker(), marker()
    GCSEventLog(gcs_bucket, gcs_prefix, gcs_client).append(
        [written("m1", first), written("m2", second), written("m3", "kept")])
    one = GCSSharedMemory(gcs_bucket, gcs_prefix, client_for(gcs_server))
    two = GCSSharedMemory(gcs_bucket, gcs_prefix, client_for(gcs_server))
    assert len(one.log.read()) == len(two.log.read()) == 3
    one.forget("m1", "asked to")
    two.forget("m2", "asked to")
    assert not leftovers(gcs_client, gcs_bucket, gcs_prefix, [first, second],
                         emulator_root(gcs_server))
    fresh = GCSEventLog(gcs_bucket, gcs_prefix, gcs_client)
    assert [e.payload is None for e in fresh.read()] == [True, True, False, False, False]
    assert fresh.verify() == 5


def test_two_processes_forget_two_memories_of_one_batch_at_once(
        gcs_server: GCSServer, gcs_bucket: str, gcs_client: storage.Client) -> None:
    for round in range(4):
        prefix = f"t-{uuid.uuid4().hex[:10]}/"
        secrets = [marker() for _ in range(2)]
        GCSEventLog(gcs_bucket, prefix, gcs_client).append(
            [written(f"m{i}", s) for i, s in enumerate(secrets)])
        mems = [GCSSharedMemory(gcs_bucket, prefix, client_for(gcs_server)) for _ in range(2)]
        for mem in mems:
            mem.log.read()
        forgets = [lambda mem=mem, i=i: mem.forget(f"m{i}", "asked to")
                   for i, mem in enumerate(mems)]
        assert all(isinstance(p, int) for p in at_once(forgets)), f"round {round}"
        assert not leftovers(gcs_client, gcs_bucket, prefix, secrets, emulator_root(gcs_server))


def test_a_rewrite_between_download_and_upload_is_redone_on_the_new_copy(
        gcs_server: GCSServer, gcs_bucket: str, gcs_prefix: str,
        gcs_client: storage.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """The exact race: another process rewrites the batch after this one downloaded it; the
    conditional rewrite gets 412 and is done again on the new copy, reporting what it removed."""
    first, second = marker(), marker()
    GCSEventLog(gcs_bucket, gcs_prefix, gcs_client).append(
        [written("m1", first), written("m2", second)])
    one = GCSEventLog(gcs_bucket, gcs_prefix, client_for(gcs_server))
    two = GCSEventLog(gcs_bucket, gcs_prefix, client_for(gcs_server))
    one.read(), two.read()
    decode = gcs._decode_batch
    interleaved: list[int] = []

    def decode_then_race(name: str, data: bytes) -> list:
        events = decode(name, data)
        if not interleaved:
            interleaved.append(-1)
            interleaved[0] = one.redact([1])  # a real rewrite by another log
        return events

    monkeypatch.setattr(gcs, "_decode_batch", decode_then_race)
    assert two.redact([2]) == 1
    assert interleaved == [1]
    assert not leftovers(gcs_client, gcs_bucket, gcs_prefix, [first, second], None)
    assert [e.payload for e in two.read()] == [None, None]
    assert two.redact([1, 2]) == 0  # nothing left to remove, and it says so


def test_redaction_that_cannot_be_done_is_an_error_not_a_success(
        gcs_bucket: str, gcs_prefix: str, gcs_client: storage.Client,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch rewritten by others on every attempt: the call fails, and says so again when
    retried, while the payload is still in the bucket."""
    secret = marker()
    log = GCSEventLog(gcs_bucket, gcs_prefix, gcs_client)
    log.append([written("m1", secret), written("m2", "kept")])
    blob = gcs_client.bucket(gcs_bucket).blob(f"{gcs_prefix}log/{1:020d}")
    original = blob.download_as_bytes()
    decode = gcs._decode_batch

    def decode_then_touch(name: str, data: bytes) -> list:
        events = decode(name, data)
        blob.upload_from_string(original)  # same bytes, a new generation
        return events

    monkeypatch.setattr(gcs, "_decode_batch", decode_then_touch)
    monkeypatch.setattr(gcs, "_REWRITE_ATTEMPTS", 3)
    for _ in range(2):
        with pytest.raises(StorageError, match="may remain"):
            log.redact([1])
    assert leftovers(gcs_client, gcs_bucket, gcs_prefix, [secret], None)


# --- 2. time from the store ----------------------------------------------------------------------


def shift_clock(monkeypatch: pytest.MonkeyPatch, by_us: int) -> None:
    """This process's wall clock, as MemSwarm reads it, off by ``by_us``."""
    for module in (memswarm_es.log.event_list, memswarm_es.events):
        monkeypatch.setattr(module, "now_micros", lambda: now_micros() + by_us)


def batch_times(client: storage.Client, bucket: str, prefix: str) -> list[int]:
    return [memswarm_es.events.to_micros(b.time_created)
            for b in client.list_blobs(bucket, prefix=f"{prefix}log/")]


@pytest.mark.parametrize("skew_us", [DAY_US, -DAY_US])
def test_recorded_at_is_the_store_time_whatever_the_client_clock(
        gcs_bucket: str, gcs_prefix: str, gcs_client: storage.Client,
        monkeypatch: pytest.MonkeyPatch, skew_us: int) -> None:
    with monkeypatch.context() as patch:
        shift_clock(patch, skew_us)
        skewed = GCSSharedMemory(gcs_bucket, gcs_prefix, gcs_client)
        skewed.write_scope("from the skewed client", metadata={"agent_id": "a"})
    honest = GCSSharedMemory(gcs_bucket, gcs_prefix, gcs_client)
    honest.write_scope("from an honest client", metadata={"agent_id": "b"})
    events = honest.log.read()
    for event, stored in zip(events, batch_times(gcs_client, gcs_bucket, gcs_prefix),
                             strict=True):
        assert abs(event.recorded_at_us - stored) < 60_000_000  # the store's, not a day off
    assert events[0].recorded_at_us <= events[1].recorded_at_us
    now = now_micros()
    assert honest.log.position_at(now) == 2
    past = honest.as_of(time=memswarm_es.events.from_micros(now))
    assert len(past.read_scope()) == 2


def test_a_writer_idle_for_long_asks_the_store_again(
        gcs_bucket: str, gcs_prefix: str, gcs_client: storage.Client) -> None:
    """After a long pause (the monotonic clock says 10 minutes) the next append does not
    extrapolate: it asks the store for its time first."""
    log = GCSEventLog(gcs_bucket, gcs_prefix, gcs_client)
    log.append([written("m1", "x")])
    real = log._monotonic_ns
    log._monotonic_ns = lambda: real() + 600_000_000_000
    log.append([written("m2", "y")])
    first, second = log.read()
    stored = batch_times(gcs_client, gcs_bucket, gcs_prefix)
    assert abs(second.recorded_at_us - stored[1]) < 60_000_000
    assert first.recorded_at_us <= second.recorded_at_us


# --- 3. identity ----------------------------------------------------------------------------------


def test_instances_opening_a_new_prefix_at_once_agree_on_one_identity(
        gcs_server: GCSServer, gcs_bucket: str, gcs_client: storage.Client) -> None:
    for _ in range(3):
        prefix = f"t-{uuid.uuid4().hex[:10]}/"
        clients = [client_for(gcs_server) for _ in range(6)]
        ids = at_once([lambda c=c, p=prefix: GCSEventLog(gcs_bucket, p, c).identity()
                       for c in clients])
        stored = gcs_client.bucket(gcs_bucket).blob(f"{prefix}identity").download_as_text()
        assert ids == [stored] * len(clients)


def test_opening_without_create_makes_nothing(gcs_bucket: str, gcs_prefix: str,
                                              gcs_client: storage.Client) -> None:
    for _ in range(2):
        with pytest.raises(LogNotFoundError):
            GCSEventLog(gcs_bucket, gcs_prefix, gcs_client, create=False)
    assert list(gcs_client.list_blobs(gcs_bucket, prefix=gcs_prefix)) == []
    made = GCSEventLog(gcs_bucket, gcs_prefix, gcs_client).identity()
    assert GCSEventLog(gcs_bucket, gcs_prefix, gcs_client, create=False).identity() == made


@pytest.mark.parametrize("create", [True, False])
def test_a_log_from_before_identities_gets_one_on_open(
        gcs_bucket: str, gcs_prefix: str, gcs_client: storage.Client, create: bool) -> None:
    old = GCSEventLog(gcs_bucket, gcs_prefix, gcs_client)
    old.append([written("m1", "x")])
    gcs_client.bucket(gcs_bucket).blob(f"{gcs_prefix}identity").delete()
    opened = GCSEventLog(gcs_bucket, gcs_prefix, gcs_client, create=create)
    assert opened.identity() != old.identity()
    assert GCSEventLog(gcs_bucket, gcs_prefix, gcs_client).identity() == opened.identity()
    assert [e.memory_id for e in opened.read()] == ["m1"]


def test_an_identity_object_that_is_not_an_id_is_reported(
        gcs_bucket: str, gcs_prefix: str, gcs_client: storage.Client) -> None:
    from memswarm_es.errors import CorruptLogError

    blob = gcs_client.bucket(gcs_bucket).blob(f"{gcs_prefix}identity")
    for junk in (b"\xff\xfe", b""):
        blob.upload_from_string(junk)
        with pytest.raises(CorruptLogError, match="identity"):
            GCSEventLog(gcs_bucket, gcs_prefix, gcs_client)



@pytest.mark.parametrize("batch_size", [1, 10])
def test_importing_a_forget_leaves_no_content_in_the_bucket(
        gcs_server: GCSServer, gcs_bucket: str, gcs_prefix: str,
        gcs_client: storage.Client, batch_size: int) -> None:
    """A copy from a log whose forget was never finished: the forget's memory arrives without
    its content, whether the forget comes in the same import or a later one."""
    secret = marker()
    source = InMemoryEventLog()
    source.append([written("m", secret)])
    source.append([written("n", "kept")])
    source.append([NewEvent.create(EventType.MEMORY_FORGOTTEN, Scope("a"), "a",
                                   {"reason": "x"}, memory_id="m", version=2)])
    target = GCSEventLog(gcs_bucket, gcs_prefix, gcs_client)
    assert copy_log(source, target, batch_size=batch_size) == 3
    assert not leftovers(gcs_client, gcs_bucket, gcs_prefix, [secret],
                         emulator_root(gcs_server))
    fresh = GCSEventLog(gcs_bucket, gcs_prefix, gcs_client)
    assert [e.payload is None for e in fresh.read()] == [True, False, False]
    assert fresh.verify() == 3
    assert fresh.digest() == source.digest()


OPS = st.lists(st.tuples(st.integers(0, 1), st.sampled_from(["write", "update", "forget"]),
                         st.integers(0, 1)), min_size=1, max_size=8)


def test_forgotten_content_is_served_by_no_instance_for_any_history(
        gcs_server: GCSServer, gcs_bucket: str, gcs_client: storage.Client) -> None:
    """Writes, updates and forgets from two instances in any order: after each step neither
    instance returns a payload of a memory forgotten by then, and in the end no object holds
    any forgotten content, while what was not forgotten is all still there."""

    @settings(max_examples=12, deadline=None)
    @given(ops=OPS)
    @example(ops=[(0, "write", 0), (0, "write", 1), (1, "update", 1), (1, "forget", 1),
                  (0, "forget", 0)])
    def run(ops: list[tuple[int, str, int]]) -> None:
        prefix = f"t-{uuid.uuid4().hex[:10]}/"
        mems = [GCSSharedMemory(gcs_bucket, prefix, client_for(gcs_server)) for _ in range(2)]
        contents: dict[str, list[str]] = {}
        forgotten: set[str] = set()
        for who, op, k in ops:
            mem, memory_id, value = mems[who], f"m{k}", marker()
            if op == "write" and memory_id not in contents:
                mem.write_scope(value, metadata={"agent_id": "a"}, event_id=memory_id)
                contents[memory_id] = [value]
            elif op == "update" and memory_id in contents and memory_id not in forgotten:
                mem.update(memory_id, value)
                contents[memory_id].append(value)
            elif op == "forget" and memory_id in contents and memory_id not in forgotten:
                mem.forget(memory_id, "asked to")
                forgotten.add(memory_id)
            for other in mems:
                for memory_id in forgotten:
                    assert set(payloads(other.log, memory_id)) == {None}
        gone = [v for m in forgotten for v in contents[m]]
        kept = [v for m in contents if m not in forgotten for v in contents[m]]
        assert not leftovers(gcs_client, gcs_bucket, prefix, gone, None)
        assert len(leftovers(gcs_client, gcs_bucket, prefix, kept, None)) >= len(kept)

    run()
