"""A Chroma server for the tests: the chromadb package's own ``chroma run`` on a free loopback
port, with a temporary data directory."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import chromadb
import pytest


@pytest.fixture(scope="session")
def chroma_server() -> Iterator[tuple[str, int]]:
    binary = Path(sys.executable).parent / "chroma"
    if not binary.exists():
        pytest.fail("the chromadb package's `chroma` command is not installed")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = tempfile.mkdtemp(prefix="memswarm-chroma-")
    process = subprocess.Popen(
        [str(binary), "run", "--host", "127.0.0.1", "--port", str(port), "--path", data],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=dict(os.environ, ANONYMIZED_TELEMETRY="False"))
    deadline = time.monotonic() + 60
    while True:
        try:
            chromadb.HttpClient(host="127.0.0.1", port=port,
                                settings=chromadb.Settings(anonymized_telemetry=False)).heartbeat()
            break
        except Exception:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail(f"chroma run did not start on port {port}")
            time.sleep(0.2)
    yield "127.0.0.1", port
    process.terminate()
    process.wait(timeout=20)
    shutil.rmtree(data, ignore_errors=True)
