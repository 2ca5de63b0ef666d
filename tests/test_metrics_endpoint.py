"""``/metrics`` served for real: a running ``memswarm project --metrics-port`` scraped over
loopback HTTP while a log grows (events projected go up, lag comes back to 0, the lease is
held), and ``memswarm mcp --http`` answering ``/metrics`` while ``/mcp`` keeps its tokens."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from memswarm_es import SQLiteSharedMemory

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples at ``http://127.0.0.1:port/metrics``, parsed; empty while nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return {}
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def until(found: Callable[[], bool], process: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + 60
    while not found():
        assert process.poll() is None, f"the command stopped: {process.communicate()}"
        assert time.monotonic() < deadline, f"no {what} within 60 s"
        time.sleep(0.1)


def test_a_running_projector_serves_metrics_that_move(tmp_path: Path, redis_url: str,
                                                      redis_prefix: str) -> None:
    db = tmp_path / "swarm.db"
    with SQLiteSharedMemory(str(db)) as memory:
        for i in range(20):
            memory.write_scope(f"note {i}", metadata={"agent_id": "scout"})
    port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "memswarm_es.cli", "project", "--log", str(db), "--into",
         redis_url, "--prefix", redis_prefix, "--metrics-port", str(port),
         "--report-every", "0.2"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    projected = ("memswarm_events_projected_total", (("read_model", "redis"),))
    lag = ("memswarm_projection_lag_events", (("read_model", "redis"),))
    lease = ("memswarm_projection_lease_held", (("read_model", "redis"),))
    try:
        until(lambda: scrape(port).get(projected) == 20 and scrape(port).get(lag) == 0,
              process, "20 events projected")
        assert scrape(port)[lease] == 1
        with SQLiteSharedMemory(str(db)) as memory:
            for i in range(7):
                memory.write_scope(f"more {i}", metadata={"agent_id": "scout"})
        until(lambda: scrape(port).get(projected) == 27, process, "27 events projected")
        until(lambda: scrape(port).get(lag) == 0, process, "lag back to 0")
        samples = scrape(port)
        assert samples[("memswarm_projection_batch_duration_seconds_count",
                        (("read_model", "redis"),))] >= 2
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert f"metrics at http://127.0.0.1:{port}/metrics" in out


def test_a_taken_metrics_port_is_one_line_and_exit_2(tmp_path: Path, redis_url: str,
                                                     redis_prefix: str) -> None:
    db = tmp_path / "swarm.db"
    SQLiteSharedMemory(str(db)).close()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "memswarm_es.cli", "project", "--log", str(db), "--into",
             redis_url, "--prefix", redis_prefix, "--metrics-port", str(port), "--once"],
            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"memswarm project: InvalidInputError: cannot serve metrics on 127.0.0.1:{port}: "
        f"{result.stderr.split(f'{port}: ', 1)[1].strip()}"]


def test_the_mcp_http_server_serves_metrics_and_still_guards_mcp(tmp_path: Path) -> None:
    import httpx2

    port = free_port()
    env = {**os.environ, "MEMSWARM_LOG_URL": f"sqlite:///{tmp_path / 'swarm.db'}",
           "MEMSWARM_TOKENS": "tok-a=AgentA"}
    process = subprocess.Popen([sys.executable, "-m", "memswarm_es.cli", "mcp", "--http",
                                f"127.0.0.1:{port}"], cwd=ROOT, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reads = ("memswarm_read_duration_seconds_count", (("operation", "read_scope"),))
    try:
        until(lambda: bool(scrape(port)), process, "/metrics")
        before = scrape(port).get(reads, 0.0)
        hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "t", "version": "0"}}}
        headers = {"Accept": "application/json, text/event-stream"}
        url = f"http://127.0.0.1:{port}/mcp"
        assert httpx2.post(url, json=hello, headers=headers).status_code == 401  # no token
        with httpx2.Client(headers={**headers, "Authorization": "Bearer tok-a"}) as client:
            answer = client.post(url, json=hello)
            assert answer.status_code == 200
            session = {"mcp-session-id": answer.headers["mcp-session-id"],
                       "mcp-protocol-version": "2025-11-25"}
            client.post(url, headers=session, json={
                "jsonrpc": "2.0", "method": "notifications/initialized"})
            called = client.post(url, headers=session, json={
                "jsonrpc": "2.0", "id": 2, "method": "tools/call",
                "params": {"name": "read_memories", "arguments": {}}})
            assert called.status_code == 200 and '"isError":false' in called.text.replace(
                " ", "")
        assert scrape(port)[reads] == before + 1
    finally:
        process.terminate()
        process.communicate(timeout=30)
