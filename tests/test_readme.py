"""Every code block of README.md runs as written.

Blocks are fenced with a language. ```python and ```bash blocks run; ```text (diagrams, output
samples) and ```json / ```toml (configuration) are shown, not run. A fence with no language or
another one fails ``test_every_block_has_a_known_language``, so no block escapes the test.

Each runnable block is a test of its own, named after its README line, run in a fresh temporary
directory as its working directory and bounded by ``BLOCK_TIMEOUT`` seconds: a python block with
the venv's python in a subprocess, a bash block with ``bash -euo pipefail`` and the venv's
``bin`` first on ``PATH``. A failure names the README line and the block's first line. No block
depends on another.

What the test changes in a block, and nothing else:

- ``redis://127.0.0.1:6379/0`` becomes the test harness's Redis (``tests/servers_redis.py``),
  and the README's Redis prefix ``swarm`` (``prefix="swarm"``, ``--prefix swarm``) a prefix of
  the test's own, whose keys are deleted afterwards;
- ``postgresql+psycopg://postgres@127.0.0.1:5432/test`` becomes a database of the harness's
  (``tests/servers_postgres.py``);
- a block naming ``gs://`` or ``GCSSharedMemory`` runs with ``STORAGE_EMULATOR_HOST`` set to the
  harness's fake-gcs-server (``tests/servers_gcs.py``), in which the bucket ``swarm-logs``
  exists: the google-cloud-storage client honours that variable, as a user's would;
- lines in ``NOT_RUN`` are replaced by ``:`` (each says why); ``pip install`` lines are checked
  instead (``test_pip_install_names_real_extras``: the project's name, extras pyproject.toml has).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers_gcs import GCSServer, emulator_client

if sys.version_info >= (3, 11):
    import tomllib
else:  # a dependency of the project below 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK_TIMEOUT = 180  # seconds; a Chroma block loads the embedder, slow on a busy machine
RUN = {"python", "bash"}
SHOWN = {"text", "json", "toml"}
README_REDIS = "redis://127.0.0.1:6379/0"
README_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
README_BUCKET = "swarm-logs"
#: Commands of the README that the test does not run, and why.
NOT_RUN = {
    "python3 scripts/dev.py test": "the whole suite, this test included (the lead runs it)",
    "python3 scripts/dev.py demo": "installs the project into .venv again; tests/test_cli.py "
                                   "runs `memswarm demo`, what it runs once .venv is there",
}
FENCE = re.compile(r"^```(.*)$")


@dataclass(frozen=True)
class Block:
    """A fenced block of README.md: its language, the line of its first code line, its code."""

    language: str
    line: int
    code: str

    @property
    def first_line(self) -> str:
        return next((line for line in self.code.splitlines() if line.strip()), "")


def readme_blocks(text: str) -> list[Block]:
    """The fenced blocks of ``text``, in order; an unclosed fence is an error."""
    blocks: list[Block] = []
    language: str | None = None
    start = 0
    body: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fence = FENCE.match(line)
        if language is None and fence:
            language, start, body = fence.group(1).strip(), number + 1, []
        elif language is not None and line.rstrip() == "```":
            blocks.append(Block(language, start, "\n".join(body) + "\n"))
            language = None
        elif language is not None:
            body.append(line)
    assert language is None, f"README.md line {start - 1}: a fence that is never closed"
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))
RUNNABLE = [block for block in BLOCKS if block.language in RUN]


def test_every_block_has_a_known_language() -> None:
    unknown = [f"line {b.line}: ```{b.language}" for b in BLOCKS if b.language not in RUN | SHOWN]
    assert not unknown, f"README blocks with no language or an unknown one: {unknown}"
    assert len(RUNNABLE) >= 10  # the README's examples, not an empty parse


def test_pip_install_names_real_extras() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = set(project["optional-dependencies"])
    installs = re.findall(r"pip install ([^\s`]+)", README.read_text(encoding="utf-8"))
    assert installs
    for spec in installs:
        name, _, rest = spec.strip("'\"").partition("[")
        assert name == project["name"], spec
        named = set(filter(None, rest.rstrip("]").split(",")))
        assert named <= extras, f"{spec}: no extra {sorted(named - extras)} in pyproject.toml"


def test_not_run_commands_are_in_the_readme() -> None:
    runnable = "".join(block.code for block in RUNNABLE)
    assert all(command in runnable for command in NOT_RUN), "NOT_RUN names a command gone"


def _prepared(block: Block, redis_url: str, prefix: str, postgres_url: str) -> str:
    """The block's code with the substitutions the module docstring lists."""
    code = block.code.replace(README_REDIS, redis_url).replace(README_POSTGRES, postgres_url)
    code = code.replace('prefix="swarm"', f'prefix="{prefix}"')
    code = code.replace("--prefix swarm", f"--prefix {prefix}")
    lines = []
    for line in code.splitlines():
        if block.language == "bash" and line.strip().startswith("pip install"):
            line = ":"
        lines.append(":" if line.split("#")[0].strip() in NOT_RUN else line)
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def gcs_emulator() -> Iterator[str]:
    """fake-gcs-server with the README's bucket; its URL."""
    server = GCSServer()
    try:
        emulator_client(server.url).create_bucket(README_BUCKET)
        yield server.url
    finally:
        server.close()


@pytest.fixture
def readme_prefix(redis_prefix: str) -> str:
    """The Redis prefix a block uses instead of ``swarm``: a test's own, its keys deleted
    afterwards."""
    return redis_prefix


@pytest.mark.parametrize("block", RUNNABLE, ids=[f"L{b.line}-{b.language}" for b in RUNNABLE])
def test_block_runs(block: Block, tmp_path: Path, redis_url: str, readme_prefix: str,
                    postgres_url: str, request: pytest.FixtureRequest) -> None:
    code = _prepared(block, redis_url, readme_prefix, postgres_url)
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    for name in ("MEMSWARM_LOG_URL", "MEMSWARM_READ_MODEL", "MEMSWARM_AGENT_ID",
                 "MEMSWARM_CONFIG", "MEMSWARM_PREFIX"):
        env.pop(name, None)  # a block sees what a user's shell would, not the harness's
    if "gs://" in code or "GCSSharedMemory" in code:
        env["STORAGE_EMULATOR_HOST"] = request.getfixturevalue("gcs_emulator")
    if block.language == "python":
        (tmp_path / "block.py").write_text(code)
        command = [sys.executable, "block.py"]
    else:
        (tmp_path / "block.sh").write_text(code)
        command = ["bash", "-euo", "pipefail", "block.sh"]
    returncode, out, err = _run(command, tmp_path, env)
    assert returncode == 0, (
        f"README.md line {block.line} ({block.first_line!r}) "
        + (f"ran over {BLOCK_TIMEOUT} s" if returncode is None else f"exited {returncode}")
        + f"\n--- stdout\n{out[-3000:]}\n--- stderr\n{err[-3000:]}")


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[int | None, str, str]:
    """``command``'s exit status (``None`` past ``BLOCK_TIMEOUT``), stdout and stderr; every
    process it started, servers sent to the background included, is killed afterwards."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=BLOCK_TIMEOUT)
        return process.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        return None, out, err
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
