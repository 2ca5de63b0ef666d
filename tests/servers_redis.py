"""Redis for the tests.

``redis_url`` is the server at ``MEMSWARM_REDIS_URL`` or, when none is given, a ``redis-server``
started here on a free loopback port (no persistence, a temporary directory). Every test gets a
``redis_prefix`` of its own and only the keys under it are deleted afterwards, so data the tests
did not create is never touched. ``own_redis`` is always a server started here, for the tests
that restart or flush it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from projections.redis import RedisReadModel


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A ``redis-server`` process of our own on a loopback port; can be killed and restarted
    (it keeps nothing on disk, so a restart loses every key, as a crash without persistence
    would)."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed and MEMSWARM_REDIS_URL is not set")
        self.binary = binary
        self.port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="memswarm-redis-")
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    pytest.fail(f"redis-server did not start on port {self.port}")
                time.sleep(0.02)
            finally:
                client.close()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    given = os.environ.get("MEMSWARM_REDIS_URL")
    if given:
        try:
            redis.Redis.from_url(given, socket_connect_timeout=5).ping()
        except redis.exceptions.RedisError as exc:
            pytest.fail(f"MEMSWARM_REDIS_URL={given} does not answer: {exc}")
        yield given
        return
    server = RedisServer()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix no other test uses; its keys (and only those) are deleted afterwards."""
    prefix = f"memswarm-test-{uuid.uuid4().hex}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(match=f"{prefix}*", count=1000):  # the prefix is unique
            client.unlink(key)
    finally:
        client.close()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis server started for this test alone (it may be flushed, killed, restarted)."""
    server = RedisServer()
    try:
        yield server
    finally:
        server.close()


def watched(model: RedisReadModel, prefix: str, read: Callable[[], Any]) -> tuple[Any, list[str]]:
    """What ``read()`` returns, and the commands it sent that name ``prefix`` (watched with
    MONITOR)."""
    commands: list[str] = []
    ready = threading.Event()
    stop = f"stop-{prefix}"

    def watch() -> None:
        with model.client.monitor() as monitor:
            ready.set()
            for found in monitor.listen():
                if stop in found["command"]:
                    return
                if prefix in found["command"]:
                    commands.append(found["command"])

    watcher = threading.Thread(target=watch)
    watcher.start()
    ready.wait(5)
    time.sleep(0.1)
    got = read()
    model.client.echo(stop)
    watcher.join(5)
    return got, commands
