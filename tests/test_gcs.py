"""The GCS log against a real GCS server API (fake-gcs-server): preconditions, many writer
processes, a writer killed mid-append, lost replies, damaged objects, and the same views as the
SQLite log for hypothesis-generated histories."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import hypothesis.strategies as st
import pytest
from google.api_core import exceptions as gexc
from google.cloud import storage
from hypothesis import given, settings
from hypothesis.stateful import run_state_machine_as_test

from memswarm_es import (
    GCSSharedMemory,
    HybridMemory,
    InMemorySharedMemory,
    MemoryNotFoundError,
    SQLiteSharedMemory,
)
from memswarm_es.errors import CorruptLogError, IntegrityError, StorageError
from memswarm_es.events import EventType, NewEvent
from memswarm_es.log.gcs import GCSEventLog
from memswarm_es.memory import RedisSharedMemory
from memswarm_es.scopes import Scope
from projections.fold import fold

from .servers_gcs import GCSServer, emulator_client
from .test_properties import SETTINGS, MemoryMachine

ROOT = Path(__file__).resolve().parent.parent


def written(memory_id: str, agent: str = "a") -> NewEvent:
    return NewEvent.create(EventType.MEMORY_WRITTEN, Scope(agent), agent,
                           {"value": memory_id, "metadata": {}}, memory_id=memory_id, version=1)


def test_the_server_honours_create_only_preconditions(gcs_client: storage.Client,
                                                      gcs_bucket: str, gcs_prefix: str) -> None:
    blob = gcs_client.bucket(gcs_bucket).blob(f"{gcs_prefix}probe")
    blob.upload_from_string(b"first", if_generation_match=0)
    with pytest.raises(gexc.PreconditionFailed):
        gcs_client.bucket(gcs_bucket).blob(f"{gcs_prefix}probe").upload_from_string(
            b"second", if_generation_match=0)
    assert blob.download_as_bytes() == b"first"


def test_two_instances_race_for_positions(gcs_client: storage.Client, gcs_bucket: str,
                                          gcs_prefix: str) -> None:
    one = GCSEventLog(gcs_bucket, gcs_prefix, gcs_client)
    two = GCSEventLog(gcs_bucket, gcs_prefix, gcs_client)
    one.append([written("m1")])
    two.append([written("m2")])  # two had not read m1: its first claim loses, then it follows
    one.append([written("m3"), written("m4")])
    assert [e.memory_id for e in two.read()] == ["m1", "m2", "m3", "m4"]
    assert one.read() == two.read()
    assert two.verify() == 4
    fresh = GCSEventLog(gcs_bucket, gcs_prefix, gcs_client)
    assert fresh.head() == 4  # from the hint, reading one batch


def test_a_retry_after_a_lost_reply_returns_the_recorded_batch(
        gcs_client: storage.Client, gcs_bucket: str, gcs_prefix: str) -> None:
    log = GCSEventLog(gcs_bucket, gcs_prefix, gcs_client)
    batch = [written("m1"), written("m2")]
    other = GCSEventLog(gcs_bucket, gcs_prefix, gcs_client)
    recorded = other.append(batch)  # as if our create succeeded and its reply was lost
    assert log.append(batch) == recorded
    assert log.head() == 2


def test_a_foreign_object_in_the_prefix_is_reported(gcs_client: storage.Client,
                                                    gcs_bucket: str, gcs_prefix: str) -> None:
    log = GCSEventLog(gcs_bucket, gcs_prefix, gcs_client)
    log.append([written("m1")])
    gcs_client.bucket(gcs_bucket).blob(f"{gcs_prefix}log/{2:020d}").upload_from_string(b"junk")
    with pytest.raises(CorruptLogError):
        GCSEventLog(gcs_bucket, gcs_prefix, gcs_client).read()
    other = f"{gcs_prefix}x/"
    gcs_client.bucket(gcs_bucket).blob(f"{other}log/notabatch").upload_from_string(b"{}")
    with pytest.raises(CorruptLogError):
        GCSEventLog(gcs_bucket, other, gcs_client).read()


def test_a_damaged_batch_is_reported_at_its_position(gcs_client: storage.Client,
                                                     gcs_bucket: str, gcs_prefix: str) -> None:
    log = GCSEventLog(gcs_bucket, gcs_prefix, gcs_client)
    log.append([written("m1")])
    log.append([written("m2")])
    blob = gcs_client.bucket(gcs_bucket).blob(f"{gcs_prefix}log/{2:020d}")
    data = bytearray(blob.download_as_bytes())
    data[data.index(b"m2")] = ord("X")
    blob.upload_from_string(bytes(data))
    with pytest.raises(IntegrityError) as info:
        GCSEventLog(gcs_bucket, gcs_prefix, gcs_client).read()
    assert info.value.position == 2


def test_a_missing_bucket_is_a_typed_error(gcs_client: storage.Client) -> None:
    with pytest.raises(StorageError):
        GCSEventLog("no-such-bucket-memswarm", "p/", gcs_client)


APPENDER = """
import os, sys
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from memswarm_es import GCSSharedMemory
client = storage.Client(project="memswarm-test", credentials=AnonymousCredentials())
mem = GCSSharedMemory(sys.argv[1], sys.argv[2], client)
name, count = sys.argv[3], int(sys.argv[4])
for i in range(count):
    mem.write_scope(i, metadata={"agent_id": name}, event_id=f"{name}-{i}", actor=name)
    print(f"{name}-{i}", flush=True)
"""


def spawn(server: GCSServer, bucket: str, prefix: str, name: str,
          count: int) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), STORAGE_EMULATOR_HOST=server.url)
    return subprocess.Popen([sys.executable, "-c", APPENDER, bucket, prefix, name, str(count)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)


def test_processes_appending_to_one_bucket(gcs_server: GCSServer, gcs_bucket: str,
                                           gcs_prefix: str, gcs_client: storage.Client) -> None:
    writers = [spawn(gcs_server, gcs_bucket, gcs_prefix, f"p{n}", 15) for n in range(3)]
    for w in writers:
        assert w.wait(timeout=180) == 0
    log = GCSEventLog(gcs_bucket, gcs_prefix, gcs_client)
    events = log.read()
    assert [e.position for e in events] == list(range(1, 46))
    assert sorted(e.event_id for e in events) == sorted(
        f"p{n}-{i}" for n in range(3) for i in range(15))
    for n in range(3):
        assert [e.data["value"] for e in events if e.actor == f"p{n}"] == list(range(15))  # type: ignore[index]
    assert log.verify() == 45
    other = GCSEventLog(gcs_bucket, gcs_prefix, gcs_client)
    assert other.read() == events  # every reader sees the same order


def test_a_writer_killed_mid_append_leaves_no_half_event(
        gcs_server: GCSServer, gcs_bucket: str, gcs_prefix: str,
        gcs_client: storage.Client) -> None:
    victim = spawn(gcs_server, gcs_bucket, gcs_prefix, "victim", 10_000)
    survivor = spawn(gcs_server, gcs_bucket, gcs_prefix, "survivor", 20)
    acknowledged = []
    assert victim.stdout is not None
    while len(acknowledged) < 15:
        acknowledged.append(victim.stdout.readline().strip())
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    assert survivor.wait(timeout=180) == 0
    mem = GCSSharedMemory(gcs_bucket, gcs_prefix, gcs_client)
    events = mem.log.read()
    assert set(acknowledged) <= {e.event_id for e in events}
    mine = [e.data["value"] for e in events if e.actor == "victim"]
    assert mine == list(range(len(mine)))
    assert len(mem.read_scope(agent_id="survivor")) == 20
    assert mem.log.verify() == len(events)


def test_the_server_stopped_and_restarted_mid_run() -> None:
    server = GCSServer()
    try:
        client = emulator_client(server.url)
        client.create_bucket("restart")
        log = GCSEventLog("restart", "p/", client, retry_deadline=2)
        patient = GCSEventLog("restart", "p/", client, retry_deadline=60)
        for i in range(5):
            log.append([written(f"m{i}")])
        server.stop()
        with pytest.raises(StorageError):  # bounded: fails after the deadline, writes nothing
            log.append([written("refused")])
        restart = threading.Timer(1.0, server.start)
        restart.start()
        patient.append([written("after")])  # retried through the outage
        restart.join()
        log.append([written("last")])
        events = GCSEventLog("restart", "p/", client).read()
        assert [e.memory_id for e in events] == ["m0", "m1", "m2", "m3", "m4", "after", "last"]
        assert GCSEventLog("restart", "p/", client).verify() == 7
    finally:
        server.close()


def test_hybrid_with_gcs_as_the_persistent_side(gcs_bucket: str, gcs_prefix: str,
                                                 gcs_client: storage.Client) -> None:
    mem = HybridMemory(InMemorySharedMemory(), GCSSharedMemory(gcs_bucket, gcs_prefix,
                                                               gcs_client))
    m = mem.write_scope("x", metadata={"agent_id": "a"})
    mem.update(m, "y")
    again = GCSSharedMemory(gcs_bucket, gcs_prefix, gcs_client)
    assert again.read_scope(agent_id="a") == mem.read_scope(agent_id="a")
    assert fold(again.log.read()).entries[m].value == "y"


class GCSMemoryMachine(MemoryMachine):
    """The property machine (checked against a plain model, as the SQLite one is) on GCS."""

    bucket = ""
    prefix = ""
    client: storage.Client | None = None

    @classmethod
    def for_bucket(cls, bucket: str, prefix: str,
                   client: storage.Client) -> type[GCSMemoryMachine]:
        return type("Machine", (cls,), {"bucket": bucket, "prefix": prefix, "client": client})

    def open(self) -> GCSSharedMemory:
        return GCSSharedMemory(self.bucket, f"{self.prefix}{uuid.uuid4().hex[:8]}/",
                               self.client)


OPS = st.lists(st.tuples(st.sampled_from(["write", "update", "delete"]),
                         st.sampled_from(["a", "b", "a:b"]), st.sampled_from([None, "g", "%"]),
                         st.integers(0, 20)), min_size=1, max_size=25)


def test_gcs_log_folds_like_the_sqlite_log(gcs_bucket: str, gcs_prefix: str,
                                           gcs_client: storage.Client, tmp_path: Path) -> None:
    run_state_machine_as_test(GCSMemoryMachine.for_bucket(gcs_bucket, gcs_prefix, gcs_client),
                              settings=settings(SETTINGS, max_examples=10,
                                                stateful_step_count=15))

    @settings(max_examples=15, deadline=None)
    @given(ops=OPS)
    def same_views(ops: list[tuple[str, str, str | None, int]]) -> None:
        tag = uuid.uuid4().hex[:8]
        gcs = GCSSharedMemory(gcs_bucket, f"{gcs_prefix}{tag}/", gcs_client)
        sql = SQLiteSharedMemory(str(tmp_path / f"{tag}.db"), synchronous="OFF")
        for mem in (gcs, sql):
            for i, (op, agent, group, n) in enumerate(ops):
                target = f"w{n % (i + 1)}"
                try:
                    if op == "write":
                        mem.write_scope(f"{agent}{n}", metadata={"agent_id": agent,
                                                                  "group_id": group},
                                        event_id=f"w{i}")
                    elif op == "update":
                        mem.update(target, {"n": n})
                    else:
                        mem.delete(target)
                except MemoryNotFoundError:
                    pass
        strip = [(e.memory_id, e.value, e.metadata, e.scope, e.version, e.position,
                  e.last_position) for e in gcs.read_scope()]
        assert strip == [(e.memory_id, e.value, e.metadata, e.scope, e.version, e.position,
                          e.last_position) for e in sql.read_scope()]
        sql.close()

    same_views()


def test_a_redis_read_model_projects_from_the_gcs_log(gcs_bucket: str, gcs_prefix: str,
                                                      gcs_client: storage.Client,
                                                      redis_url: str, redis_prefix: str) -> None:
    mem = HybridMemory(RedisSharedMemory(redis_url, prefix=redis_prefix),
                       GCSSharedMemory(gcs_bucket, gcs_prefix, gcs_client))
    m = mem.write_scope("x", metadata={"agent_id": "a", "group_id": "g"})
    mem.update(m, "y")
    mem.write_scope("z", metadata={"agent_id": "b", "group_id": "g"})
    assert [e.value for e in mem.read_scope(group_id="g")] == ["y", "z"]
    assert mem.read_model.checkpoint() == mem.log.head() == 3
    mem.close()


class FaultyProxy:
    """A loopback HTTP proxy in front of the server that answers 503 to every third request:
    alternately without forwarding it, and after forwarding it (the reply is lost)."""

    def __init__(self, upstream: str) -> None:
        import http.client
        import http.server
        from urllib.parse import urlsplit

        host, port = urlsplit(upstream).hostname, urlsplit(upstream).port
        proxy = self
        self.count = 0
        self.lost_replies = 0
        self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy.lock:
                    proxy.count += 1
                    fault = proxy.count % 3 == 0
                    lose_reply = fault and proxy.count % 2 == 0
                if not fault or lose_reply:
                    conn = http.client.HTTPConnection(host, port, timeout=30)
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                    conn.request(self.command, self.path, body, headers)
                    reply = conn.getresponse()
                    data = reply.read()
                    conn.close()
                    if not fault:
                        self.send_response(reply.status)
                        for key, value in reply.getheaders():
                            if key.lower() not in ("transfer-encoding", "connection",
                                                   "content-length"):
                                self.send_header(key, value)
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                        return
                    with proxy.lock:
                        proxy.lost_replies += 1
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_503s_and_lost_replies_lose_nothing_and_duplicate_nothing(
        gcs_server: GCSServer, gcs_bucket: str, gcs_prefix: str) -> None:
    proxy = FaultyProxy(gcs_server.url)
    try:
        client = emulator_client(proxy.url)
        log = GCSEventLog(gcs_bucket, gcs_prefix, client, retry_deadline=30)
        acknowledged = [log.append([written(f"m{i}")])[0].event_id for i in range(30)]
        assert proxy.lost_replies > 0
    finally:
        proxy.close()
    events = GCSEventLog(gcs_bucket, gcs_prefix, emulator_client(gcs_server.url)).read()
    assert [e.event_id for e in events] == acknowledged  # each once, in order
    assert [e.position for e in events] == list(range(1, 31))


def test_denied_access_is_a_typed_error() -> None:
    import http.server

    class Deny(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"error": {"code": 403, "message": "denied"}}'
            self.send_response(403)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Deny)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = emulator_client(f"http://127.0.0.1:{server.server_address[1]}")
        with pytest.raises(StorageError, match="denied"):
            GCSEventLog("private-bucket", "p/", client, retry_deadline=2)
    finally:
        server.shutdown()
        server.server_close()
