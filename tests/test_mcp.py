"""``memswarm mcp`` driven by the ``mcp`` SDK's own client: over stdio and over HTTP against a
real server process, and in-process for which tools each configuration offers.

Every scenario runs under ``anyio.fail_after`` so that a server that stops answering fails the
test instead of hanging it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.session import ClientSession, MessageHandlerFnT
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from memswarm_es import SQLiteSharedMemory
from memswarm_es.errors import InvalidInputError
from memswarm_es.integrations.mcp.config import Config, open_memory, parse, read_model_url
from memswarm_es.integrations.mcp.resources import parse_uri, uri
from memswarm_es.integrations.mcp.server import build
from tests.histories import copy_database

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 90.0  # seconds any one scenario may take
READ_TOOLS = {"read_memories", "get_memory", "memory_history", "audit_log", "memory_as_of",
              "verify_log"}
WRITE_TOOLS = {"write_memory", "update_memory", "delete_memory"}


def _server(*flags: str, env: dict[str, str] | None = None) -> StdioServerParameters:
    """``memswarm mcp`` as the command line runs it, in a process of its own."""
    return StdioServerParameters(command=sys.executable, args=["-m", "memswarm_es.cli", "mcp",
                                                               *flags],
                                 cwd=str(ROOT), env=env)


@asynccontextmanager
async def _stdio(params: StdioServerParameters,
                 on_message: MessageHandlerFnT | None = None
                 ) -> AsyncIterator[ClientSession]:
    async with stdio_client(params) as (read, write), \
            ClientSession(read, write, message_handler=on_message) as session:
        await session.initialize()
        yield session


async def _call(session: ClientSession | Client, name: str, **arguments: Any) -> dict[str, Any]:
    """A tool's structured answer; the test fails on a tool error."""
    result = await session.call_tool(name, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def _refused(session: ClientSession | Client, name: str, **arguments: Any) -> str:
    """The text of the tool error a call must end in."""
    result = await session.call_tool(name, arguments)
    assert result.is_error, result.structured_content
    text = result.content[0]
    assert isinstance(text, types.TextContent)
    return text.text


def _run(scenario: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        with anyio.fail_after(LIMIT):
            await scenario()

    anyio.run(bounded)


def test_over_stdio_an_agent_writes_retries_updates_and_is_refused_what_is_not_its(
        tmp_path: Path) -> None:
    db = tmp_path / "swarm.db"
    with SQLiteSharedMemory(str(db)) as mem:
        secret = mem.agent("Agent2").write_scope("Agent2's own plan")
    params = _server("--log", f"sqlite:///{db}", "--agent-id", "Agent1")
    written: dict[str, str] = {}

    async def scenario() -> None:
        async with _stdio(params) as session:
            tools = {t.name: t for t in (await session.list_tools()).tools}
            assert set(tools) == READ_TOOLS | WRITE_TOOLS  # no search on the SQL view, no forget
            hints = {name: tool.annotations for name, tool in tools.items()}
            assert all(getattr(hints[name], "read_only_hint", False) for name in READ_TOOLS)
            write, delete = hints["write_memory"], hints["delete_memory"]
            assert write and write.read_only_hint is False and write.destructive_hint is False
            assert delete and delete.destructive_hint and delete.idempotent_hint
            for name in WRITE_TOOLS:  # who writes is the connection's agent, never an argument
                assert not {"agent_id", "actor"} & set(tools[name].input_schema["properties"])

            first = await _call(session, "write_memory", value="bridge 7 is closed",
                                context_id="mission-42", request_id="req-1")
            again = await _call(session, "write_memory", value="bridge 7 is closed",
                                context_id="mission-42", request_id="req-1")
            assert again == first
            mid = first["memory_id"]
            written["mid"] = mid
            assert (await _call(session, "update_memory", memory_id=mid, value="detour via 9",
                                expected_version=1))["version"] == 2
            stale = await _refused(session, "update_memory", memory_id=mid, value="stale",
                                   expected_version=1)
            assert "VersionConflictError" in stale and "expected_version=2" in stale
            entry = await _call(session, "get_memory", memory_id=mid)
            assert (entry["value"], entry["version"], entry["agent_id"]) == (
                "detour via 9", 2, "Agent1")
            history = (await _call(session, "memory_history", memory_id=mid))["versions"]
            assert [(v["version"], v["value"], v["actor"]) for v in history] == [
                (1, "bridge 7 is closed", "Agent1"), (2, "detour via 9", "Agent1")]
            listed = await _call(session, "read_memories", context_id="mission-42")
            assert [m["memory_id"] for m in listed["memories"]] == [mid]
            past = await _call(session, "memory_as_of", position=history[0]["position"],
                               memory_id=mid)
            assert past["memory"]["value"] == "bridge 7 is closed"
            assert (await _call(session, "verify_log"))["ok"] is True

            assert "MemoryNotFoundError" in await _refused(session, "get_memory",
                                                           memory_id=secret)
            assert "MemoryNotFoundError" in await _refused(session, "update_memory",
                                                           memory_id=secret, value="mine now")
            assert "MemoryNotFoundError" in await _refused(session, "memory_history",
                                                           memory_id=secret)
            everything = await _call(session, "read_memories")
            assert secret not in {m["memory_id"] for m in everything["memories"]}
            events = (await _call(session, "audit_log"))["events"]
            assert {e["actor"] for e in events} == {"Agent1"}
            assert "PermissionDeniedError" in await _refused(
                session, "write_memory", value="x", group_id="not-my-group")
            assert "InvalidInputError" in await _refused(session, "read_memories", limit=0)

    _run(scenario)
    with SQLiteSharedMemory(str(db)) as mem:  # what the log holds, read by the operator
        assert [v.actor for v in mem.history(written["mid"])] == ["Agent1", "Agent1"]
        assert [v.version for v in mem.history(written["mid"])] == [1, 2]  # one write event
        assert mem.get(secret).value == "Agent2's own plan"
        assert len(mem.audit().events) == 3  # the retry wrote nothing: write, update, secret


@pytest.mark.filterwarnings("ignore:resources/subscribe is removed")  # 2025-era clients use it
def test_a_subscribed_resource_hears_of_writes_by_another_process(tmp_path: Path) -> None:
    db = tmp_path / "swarm.db"
    with SQLiteSharedMemory(str(db)) as mem:
        mid = mem.agent("Agent2").write_scope("v1", context_id="ops", readable_by=["*"])
        hidden = mem.agent("Agent2").write_scope("mine", context_id="ops")
    heard: list[str] = []
    arrived = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            heard.append(message.params.uri)
            if uri("memory", mid) in heard and uri("context", "ops") in heard:
                arrived.set()

    async def scenario() -> None:
        async with _stdio(_server("--log", f"sqlite:///{db}", "--agent-id", "Agent1"),
                          on_message) as session:
            caps = session.server_capabilities
            assert caps is not None and caps.resources is not None and caps.resources.subscribe
            read = await session.read_resource(uri("memory", mid))
            content = read.contents[0]
            assert isinstance(content, types.TextResourceContents)
            assert json.loads(content.text)["value"] == "v1"
            scope = await session.read_resource(uri("context", "ops"))
            scope_text = scope.contents[0]
            assert isinstance(scope_text, types.TextResourceContents)
            assert [m["memory_id"] for m in json.loads(scope_text.text)] == [mid]
            await session.subscribe_resource(uri("memory", mid))
            await session.subscribe_resource(uri("context", "ops"))
            await session.subscribe_resource(uri("memory", hidden))
            with pytest.raises(MCPError, match="no MemSwarm resource"):
                await session.subscribe_resource("memswarm://planet/earth")
            with SQLiteSharedMemory(str(db)) as other:  # another agent, another connection
                other.agent("Agent2").update(hidden, "still mine")
                other.agent("Agent2").update(mid, "v2")
            await arrived.wait()
            assert uri("memory", hidden) not in heard  # it may not read that one

    _run(scenario)


@pytest.mark.filterwarnings("ignore:resources/subscribe is removed")  # 2025-era clients use it
def test_resource_notifications_go_on_across_a_restore_of_the_log(tmp_path: Path) -> None:
    """The SQLite file put back from an older copy under a server whose client subscribed:
    the client is told every resource it watches may have changed, and hears of later writes
    (the watch goes on from the log's head instead of stopping)."""
    db, copy = tmp_path / "swarm.db", tmp_path / "copy.db"
    with SQLiteSharedMemory(str(db)) as mem:
        mid = mem.write_scope("v1", {"agent_id": "a"}, readable_by=["*"])
    heard: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            heard.append(message.params.uri)

    async def heard_of(count: int) -> None:
        with anyio.fail_after(20):
            while heard.count(uri("memory", mid)) < count:
                await anyio.sleep(0.05)

    def write(*values: str) -> None:
        with SQLiteSharedMemory(str(db)) as other:  # another process's writes
            for value in values:
                other.update(mid, value)

    async def scenario() -> None:
        async with _stdio(_server("--log", f"sqlite:///{db}", "--agent-id", "b"),
                          on_message) as session:
            await session.subscribe_resource(uri("memory", mid))
            copy_database(db, copy)
            write("v2", "v3")
            await heard_of(2)
            copy_database(copy, db)  # v2 and v3 are gone
            write("v2 again", "v3 again", "v4")  # past the position the server had seen
            await heard_of(3)  # told: the resource may have changed
            write("v5")
            await heard_of(4)

    _run(scenario)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError("the HTTP server did not listen within 60 s")


@asynccontextmanager
async def _http(url: str, token: str) -> AsyncIterator[ClientSession]:
    client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"},
                                timeout=httpx2.Timeout(30.0, read=60.0))
    async with client, streamable_http_client(url, http_client=client) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        yield session


def test_over_http_each_token_is_its_own_agent_and_no_token_no_access(tmp_path: Path) -> None:
    db = tmp_path / "swarm.db"
    tokens = tmp_path / "tokens"
    tokens.write_text("# token agent\ntok-b AgentB\n")
    port = _free_port()
    env = {**os.environ, "MEMSWARM_LOG_URL": f"sqlite:///{db}", "MEMSWARM_TOKENS": "tok-a=AgentA",
           "MEMSWARM_TOKENS_FILE": str(tokens)}
    process = subprocess.Popen([sys.executable, "-m", "memswarm_es.cli", "mcp", "--http",
                                f"127.0.0.1:{port}"], cwd=ROOT, env=env,
                               stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        _wait_listening(port, process)

        async def scenario() -> None:
            hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "t", "version": "0"}}}
            async with httpx2.AsyncClient() as raw:
                headers = {"Accept": "application/json, text/event-stream"}
                for auth in ({}, {"Authorization": "Bearer not-a-token"}):
                    answer = await raw.post(url, json=hello, headers={**headers, **auth})
                    assert answer.status_code == 401
            async with _http(url, "tok-a") as a, _http(url, "tok-b") as b:
                private = (await _call(a, "write_memory", value="A's secret"))["memory_id"]
                shared = (await _call(b, "write_memory", value="B for all",
                                      readable_by=["*"]))["memory_id"]
                assert "MemoryNotFoundError" in await _refused(b, "get_memory",
                                                               memory_id=private)
                assert (await _call(a, "get_memory", memory_id=shared))["value"] == "B for all"
                assert "MemoryNotFoundError" in await _refused(a, "delete_memory",
                                                               memory_id=private + "x")
                assert "PermissionDeniedError" in await _refused(a, "update_memory",
                                                                 memory_id=shared, value="A's")
                seen_by_a = (await _call(a, "audit_log"))["events"]
                assert {(e["memory_id"], e["actor"]) for e in seen_by_a} == {
                    (private, "AgentA"), (shared, "AgentB")}
                seen_by_b = (await _call(b, "audit_log"))["events"]
                assert {(e["memory_id"], e["actor"]) for e in seen_by_b} == {(shared, "AgentB")}

        _run(scenario)
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stderr:
            process.stderr.close()
    with SQLiteSharedMemory(str(db)) as mem:
        assert sorted(e.actor for e in mem.audit().events) == ["AgentA", "AgentB"]


def test_search_is_offered_on_a_chroma_read_model_and_finds_by_meaning(tmp_path: Path) -> None:
    params = _server("--log", f"sqlite:///{tmp_path / 'swarm.db'}", "--read-model",
                     f"chroma:{tmp_path / 'chroma'}", "--agent-id", "Agent1")

    async def scenario() -> None:
        async with _stdio(params) as session:
            tools = {t.name for t in (await session.list_tools()).tools}
            assert "search_memories" in tools
            for text in ("the cat sleeps on the sofa", "quarterly revenue grew by 8%",
                         "a kitten naps on the couch"):
                await _call(session, "write_memory", value=text)
            hits = (await _call(session, "search_memories", query="revenue", k=1))["hits"]
            assert [h["value"] for h in hits] == ["quarterly revenue grew by 8%"]

    _run(scenario)


@pytest.mark.parametrize(("read_only", "allow_forget", "expected"), [
    (False, False, READ_TOOLS | WRITE_TOOLS),
    (True, True, READ_TOOLS),
    (False, True, READ_TOOLS | WRITE_TOOLS | {"forget_memory"}),
])
def test_which_tools_a_configuration_offers(read_only: bool, allow_forget: bool,
                                            expected: set[str]) -> None:
    config = Config(log_url="memory://", read_model="memory", agent_id="Agent1",
                    read_only=read_only, allow_forget=allow_forget)

    async def scenario() -> None:
        with open_memory(config) as memory:
            async with Client(build(memory, config)) as client:
                assert {t.name for t in (await client.list_tools()).tools} == expected

    _run(scenario)


def test_forget_erases_through_the_tool_when_allowed() -> None:
    config = Config(log_url="memory://", read_model="memory", agent_id="Agent1",
                    allow_forget=True)

    async def scenario() -> None:
        with open_memory(config) as memory:
            async with Client(build(memory, config)) as client:
                mid = (await _call(client, "write_memory", value="a phone number"))["memory_id"]
                assert "InvalidValueError" in await _refused(client, "forget_memory",
                                                             memory_id=mid, reason=" ")
                await _call(client, "forget_memory", memory_id=mid, reason="user asked")
                versions = (await _call(client, "memory_history", memory_id=mid))["versions"]
                assert versions[0]["value"] is None and versions[0]["erased"] is True
                assert versions[-1]["reason"] == "user asked"
                assert "MemoryNotFoundError" in await _refused(client, "get_memory",
                                                               memory_id=mid)

    _run(scenario)


def test_resources_read_memories_whatever_their_ids_hold() -> None:
    config = Config(log_url="memory://", read_model="memory", agent_id="Agent1")
    ids = ["a%41", "x/y", "ü %", "plain"]

    async def scenario() -> None:
        with open_memory(config) as memory:
            written = {c: memory.agent("Agent1").write_scope(c, context_id=c) for c in ids}
            async with Client(build(memory, config)) as client:
                for context_id in ids:
                    found = (await client.read_resource(uri("context", context_id))).contents
                    assert isinstance(found[0], types.TextResourceContents)
                    assert [m["value"] for m in json.loads(found[0].text)] == [context_id]
                    one = (await client.read_resource(uri("memory", written[context_id])))
                    assert isinstance(one.contents[0], types.TextResourceContents)
                    assert json.loads(one.contents[0].text)["context_id"] == context_id

    _run(scenario)


def test_configuration_from_flags_and_environment(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("t1 Agent1\n\n# comment\nt2 Agent2\n")
    config = parse(["--http", "0.0.0.0:8080", "--read-only"],
                   {"MEMSWARM_LOG_URL": "memory://", "MEMSWARM_READ_MODEL": "memory",
                    "MEMSWARM_TOKENS_FILE": str(tokens), "MEMSWARM_TOKENS": "t3=Agent3",
                    "MEMSWARM_ALLOW_FORGET": "1"})
    assert (config.log_url, config.http, config.read_only, config.allow_forget) == (
        "memory://", ("0.0.0.0", 8080), True, True)
    assert dict(config.tokens) == {"t1": "Agent1", "t2": "Agent2", "t3": "Agent3"}
    assert parse(["--agent-id", "A"], {"MEMSWARM_AGENT_ID": "B"}).agent_id == "A"
    assert read_model_url("chroma:/abs/dir") == "chroma:////abs/dir"
    assert read_model_url("chroma:rel") == "chroma:///rel"
    assert read_model_url("redis://h:1/0") == "redis://h:1/0"
    for argv, environ in (([], {}), (["--http", "h:1"], {}),
                          (["--http", "nope"], {"MEMSWARM_TOKENS": "a=b"}),
                          (["--agent-id", "A"], {"MEMSWARM_READ_ONLY": "maybe"}),
                          (["--http", "h:1"], {"MEMSWARM_TOKENS": "t=A,t=B"})):
        with pytest.raises(InvalidInputError):
            parse(argv, environ)


def test_a_bad_configuration_exits_2_with_one_line() -> None:
    out = subprocess.run([sys.executable, "-m", "memswarm_es.cli", "mcp", "--log", "memory://"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if not k.startswith("MEMSWARM")})
    assert out.returncode == 2
    assert "MEMSWARM_AGENT_ID" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_resource_uris_round_trip_and_refuse_what_is_not_one() -> None:
    for kind, id_ in (("memory", "0a-b"), ("group", "red team/2"), ("context", "ü %")):
        assert parse_uri(uri(kind, id_)) == (kind, id_)
    for text in ("memswarm://memory/", "memswarm://planet/x", "http://memory/x",
                 "memswarm://memory/a/b"):
        with pytest.raises(ValueError):
            parse_uri(text)


# As tests/test_cli.py does for the demo: the SDK kept out of the process.
WITHOUT_MCP = """
import importlib.abc, sys
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {"mcp", "mcp_types"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, NotInstalled())
from memswarm_es.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_without_the_mcp_extra_the_command_says_what_to_install(tmp_path: Path) -> None:
    run = [sys.executable, "-c", WITHOUT_MCP]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    served = subprocess.run([*run, "mcp", "--agent-id", "A"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert served.returncode == 2
    assert served.stderr.strip() == ("memswarm mcp: needs the mcp extra: pip install "
                                     "'memswarm[mcp]'")
    other = subprocess.run([*run, "history", "--help"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
    assert other.returncode == 0, other.stderr  # the other commands do not need it
