#!/usr/bin/env python3
"""Set up and run MemSwarm with nothing but python3: makes .venv, installs, then runs.

    python3 scripts/dev.py demo          # the multi-agent demo (SQLite + in-memory)
    python3 scripts/dev.py test [ARGS]   # ruff, mypy, then the whole test suite (pytest ARGS)
    python3 scripts/dev.py run CMD ...   # any command inside the environment
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
#: What ``test`` and ``run`` install: every extra, and the peers the benchmarks run against
#: (bench_peers.py imports them, and mypy checks the benchmarks too).
DEV_EXTRAS = "dev,bench"


def ensure_env(extras: str) -> None:
    """Create the virtual environment and install the project with ``extras`` unless current."""
    if not (BIN / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pyproject = (ROOT / "pyproject.toml").read_bytes()
    stamp = VENV / f".installed-{extras or 'core'}"
    digest = hashlib.sha256(pyproject).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    pip = [str(BIN / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "-U", "pip"], check=True)
    target = f".[{extras}]" if extras else "."
    subprocess.run([*pip, "install", "-e", target], check=True, cwd=ROOT)
    stamp.write_text(digest)


def run(cmd: list[str]) -> int:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "run"}:
        print(__doc__)
        return 2
    command, args = argv[0], argv[1:]
    if command == "demo":
        ensure_env("")
        return run([str(BIN / "memswarm"), "demo", *args])
    ensure_env(DEV_EXTRAS)
    if command == "run":
        return run(args)
    for check in ([str(BIN / "ruff"), "check", "."], [str(BIN / "mypy")]):
        failed = run(check)
        if failed:
            return failed
    return run([str(BIN / "python"), "-m", "pytest", *args])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
