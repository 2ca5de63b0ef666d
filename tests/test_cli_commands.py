"""The user's commands: memories written, read and changed from the shell, ``--json`` for
scripts, settings from flags, environment and config file, and bad input as one line and exit 2
(never a traceback, never a log made by a read)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from memswarm_es import SQLiteSharedMemory, __version__
from memswarm_es.cli import main
from memswarm_es.cli.settings import SETTINGS, log_url, resolve
from memswarm_es.errors import InvalidInputError

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, cwd: Path, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    """``memswarm ARGS`` in a process of its own (no settings from this one's environment)."""
    clean = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "memswarm_es.cli", *args], cwd=cwd, env=clean,
                          capture_output=True, text=True, timeout=120)


def json_of(capsys: pytest.CaptureFixture[str]) -> object:
    return json.loads(capsys.readouterr().out)


def test_write_read_get_update_delete_from_the_shell(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "swarm.db")  # a plain path is a SQLite log
    assert main(["write", "bridge closed", "--log", db, "--agent-id", "scout", "--group-id",
                 "research", "--metadata", '{"confidence": 0.7}', "--json"]) == 0
    written = json_of(capsys)
    assert isinstance(written, dict) and written["position"] == 1
    mid = written["memory_id"]
    assert main(["write", '{"fuel": 60}', "--json-value", "--log", db, "--agent-id",
                 "planner"]) == 0
    capsys.readouterr()
    assert main(["read", "--log", db, "--group-id", "research", "--json"]) == 0
    (entry,) = json_of(capsys)  # type: ignore[misc]
    assert (entry["id"], entry["value"], entry["metadata"]) == (
        mid, "bridge closed", {"confidence": 0.7})
    assert main(["update", mid, "closed; detour via route 9", "--log", db,
                 "--expected-version", "1", "--json"]) == 0
    assert json_of(capsys) == {"memory_id": mid, "version": 2}
    assert main(["update", mid, "stale", "--log", db, "--expected-version", "1"]) == 2
    assert "VersionConflictError" in capsys.readouterr().err
    assert main(["get", mid, "--log", db, "--json"]) == 0
    assert json_of(capsys)["value"] == "closed; detour via route 9"  # type: ignore[index]
    assert main(["read", "--log", db, "--limit", "1"]) == 0
    out = capsys.readouterr().out
    assert "detour" in out and "fuel" not in out and "more: 1 not shown" in out
    assert main(["delete", mid, "--log", db]) == 0
    capsys.readouterr()
    assert main(["history", mid, "--log", db, "--json"]) == 0
    versions = json_of(capsys)
    assert [v["type"] for v in versions] == [  # type: ignore[attr-defined]
        "memory.written", "memory.updated", "memory.deleted"]
    mem = SQLiteSharedMemory(db)
    try:  # the shell's writes are the library's
        assert [e.value for e in mem.read_scope()] == [{"fuel": 60}]
    finally:
        mem.close()


def test_every_command_prints_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "swarm.db")
    assert main(["write", "note", "--log", db, "--agent-id", "a", "--group-id", "g"]) == 0
    mid = capsys.readouterr().out.strip()
    commands = [["audit"], ["as-of", "--position", "1"], ["verify"], ["stats"],
                ["members", "g"], ["join", "a", "g"], ["leave", "a", "g"],
                ["forget", mid, "--reason", "asked"], ["demo", "--db", str(tmp_path / "d.db")],
                ["copy", "--from", db, "--to", str(tmp_path / "copy.db")]]
    for command in commands:
        where = [] if command[0] in ("demo", "copy") else ["--log", db]
        assert main([*command, *where, "--json"]) == 0, command
        assert isinstance(json_of(capsys), dict), command
    assert main(["stats", "--log", db, "--json"]) == 0
    stats = json_of(capsys)
    assert stats["events"] == 4 and stats["read_models"][0]["lag"] == 0  # type: ignore[index]


def test_an_agent_acts_as_itself(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "swarm.db")
    assert main(["write", "scout's own note", "--log", db, "--agent", "scout"]) == 0
    mid = capsys.readouterr().out.strip()
    assert main(["read", "--log", db, "--agent", "planner", "--json"]) == 0
    assert json_of(capsys) == []  # another agent reads nothing of the scout's
    assert main(["get", mid, "--log", db, "--agent", "planner"]) == 2
    assert "no memory" in capsys.readouterr().err
    assert main(["update", mid, "edited", "--log", db, "--agent", "planner"]) == 2
    assert main(["join", "planner", "research", "--log", db, "--agent", "scout"]) == 2
    assert "PermissionDeniedError" in capsys.readouterr().err
    assert main(["get", mid, "--log", db, "--agent", "scout", "--json"]) == 0
    assert json_of(capsys)["created_by"] == "scout"  # type: ignore[index]


def test_settings_come_from_flags_then_environment_then_config_file(tmp_path: Path) -> None:
    (tmp_path / "memswarm.toml").write_text('log = "from-file.db"\nagent = "filer"\n')
    env = {"MEMSWARM_LOG_URL": "sqlite:///from-env.db"}
    found = resolve({"log": None, "agent": None}, env, cwd=tmp_path)
    assert (found.log_url, found.get("agent")) == ("sqlite:///from-env.db", "filer")
    assert resolve({"log": "flag.db"}, env, cwd=tmp_path).log_url == "sqlite:///flag.db"
    assert resolve({}, {}, cwd=tmp_path).log_url == "sqlite:///from-file.db"
    assert resolve({}, {}, cwd=tmp_path / "..").get("prefix") == SETTINGS["prefix"].default
    (tmp_path / "other.toml").write_text('prefix = "swarm"\n')
    assert resolve({}, {"MEMSWARM_CONFIG": str(tmp_path / "other.toml")},
                   cwd=tmp_path).get("prefix") == "swarm"
    assert log_url("/abs/x.db") == "sqlite:////abs/x.db" and log_url("memory://") == "memory://"
    for bad in ("foo://x", "://nothing", ""):
        with pytest.raises(InvalidInputError):
            log_url(bad)

    # the whole path, in a process: the config file names the log, the environment the agent
    (tmp_path / "memswarm.toml").write_text('log = "swarm.db"\n')
    assert run("write", "hello", cwd=tmp_path, env={"MEMSWARM_AGENT_ID": "scout"}
               ).returncode == 0
    out = run("read", "--json", cwd=tmp_path)
    assert json.loads(out.stdout)[0]["created_by"] == "scout"


@pytest.mark.parametrize("args,message", [
    (["read", "--bogus"], "No such option"),
    (["read", "--limit", "zero"], "--limit"),
    (["write", "x", "--metadata", "{not json"], "is not JSON"),
    (["write", "x", "--metadata", "[1, 2]"], "not a JSON object"),
    (["write", "x", "--json-value"], "the value is not JSON"),
    (["write", "x", "--log", "foo://nowhere"], "is not a log URL"),
    (["read", "--log", "missing.db"], "no such file"),
    (["read", "--config", "missing.toml"], "no config file"),
    (["read", "--log", "swarm.db", "--read-model", "ftp://x"], "no read model"),
    (["search", "q", "--log", "swarm.db"], "does not search"),
    (["as-of", "--log", "swarm.db"], "give one of --position and --time"),
    (["replay", "--log", "swarm.db"], "no read model"),
    (["reembed", "--log", "swarm.db", "--model", "nowhere.at:all"], "cannot load"),
    (["nosuchcommand"], "No such command"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str],
                                          message: str) -> None:
    SQLiteSharedMemory(str(tmp_path / "swarm.db")).close()
    out = run(*args, cwd=tmp_path)
    assert out.returncode == 2, out
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out
    assert message in out.stderr, out.stderr


def test_a_bad_config_file_is_one_line(tmp_path: Path) -> None:
    for text, message in [("log = [", "cannot read the config file"),
                          ('lgo = "x.db"', "unknown settings lgo"),
                          ("log = 3", "log must be a string")]:
        (tmp_path / "memswarm.toml").write_text(text)
        out = run("read", cwd=tmp_path)
        assert out.returncode == 2 and message in out.stderr, out
        assert len(out.stderr.strip().splitlines()) == 1


def test_reading_commands_never_create_a_log(tmp_path: Path) -> None:
    for command in (["read"], ["get", "m"], ["search", "q"], ["history", "m"], ["audit"],
                    ["as-of", "--position", "1"], ["verify"], ["stats"], ["members", "g"],
                    ["update", "m", "v"], ["delete", "m"], ["forget", "m", "--reason", "r"],
                    ["copy", "--from", "typo.db", "--to", "copy.db"]):
        where = [] if command[0] == "copy" else ["--log", "typo.db"]
        out = run(*command, *where, cwd=tmp_path)
        assert out.returncode == 2 and "no such file" in out.stderr, (command, out)
    assert list(tmp_path.iterdir()) == []


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"memswarm, version {__version__}"
    assert __version__ != "0+unknown"  # installed: the distribution's own version
    assert main(["--help"]) == 0
    listed = capsys.readouterr().out
    for name in ("write", "get", "read", "search", "update", "delete", "history", "audit",
                 "as-of", "verify", "forget", "stats", "replay", "project", "copy", "reembed",
                 "demo", "join", "leave", "members"):
        assert f"  {name} " in listed, name


def test_the_runner_logs_changes_not_polls(caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import time

    from memswarm_es.events import EventType, NewEvent
    from memswarm_es.log import open_log as open_event_log
    from memswarm_es.scopes import Scope
    from projections import open_read_model
    from projections.runner import ProjectorRunner

    log = open_event_log("memory://")

    def written(n: int) -> None:
        log.append([NewEvent.create(EventType.MEMORY_WRITTEN, Scope("a"), "a",
                                    {"value": i, "metadata": {}}) for i in range(n)])

    written(50)
    runner = ProjectorRunner(log, open_read_model("memory://"), batch_size=10, lease_ttl=0.3)
    caplog.set_level(logging.INFO, logger="projections.runner")
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while runner.status().lag and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # ten polls or so, idle
        lines = [r.getMessage().split(": ", 1)[1] for r in caplog.records]
        assert lines[0] == "holding the lease"
        assert lines[1].startswith("lagging: 50 events behind")
        assert lines[2:] == ["caught up: at position 50"]
        written(5)  # a small write: caught up again, nothing new to say
        time.sleep(1.0)
        assert len(caplog.records) == 3
    finally:
        runner.stop()
