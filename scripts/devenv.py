"""The work of ``scripts/dev.py``: the project's virtual environment, made or brought up to
date, then a command run inside it.

An environment is usable only once its install finished: a stamp file records the hash of the
``pyproject.toml`` it was installed from. If making a new environment fails (or is
interrupted), the half-made directory is removed, so no broken ``.venv`` is left behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: What ``test`` and ``run`` install: every extra, and the peers the benchmarks run against
#: (bench_peers.py imports them, and mypy checks the benchmarks too).
DEV_EXTRAS = "dev,bench"


class SetupError(Exception):
    """Making or installing the environment failed; the message says which step."""


def bin_dir(venv: Path) -> Path:
    """Where the environment's executables are."""
    return venv / ("Scripts" if os.name == "nt" else "bin")


def ensure_env(extras: str, root: Path = ROOT) -> Path:
    """``root/.venv`` with the project at ``root`` installed with ``extras``, made or brought
    up to date; its directory of executables. A new environment whose making fails is removed."""
    venv = root / ".venv"
    python = bin_dir(venv) / "python"
    fresh = not _works(python)
    if fresh:
        shutil.rmtree(venv, ignore_errors=True)  # a directory left by a dead interpreter
    try:
        if fresh:
            _step("creating .venv", [sys.executable, "-m", "venv", str(venv)], root)
        _install(python, extras, root, venv)
    except BaseException:
        if fresh:
            shutil.rmtree(venv, ignore_errors=True)
        raise
    return bin_dir(venv)


def _works(python: Path) -> bool:
    return python.exists() and subprocess.run(
        [str(python), "-c", "pass"], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL).returncode == 0


def _install(python: Path, extras: str, root: Path, venv: Path) -> None:
    stamp = venv / f".installed-{extras or 'core'}"
    digest = hashlib.sha256((root / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    stamp.unlink(missing_ok=True)
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "-q"]
    _step("upgrading pip", [*pip, "install", "-U", "pip"], root)
    _step("installing the project", [*pip, "install", "-e", f".[{extras}]" if extras else "."],
          root)
    stamp.write_text(digest)


def _step(what: str, cmd: list[str], root: Path) -> None:
    if subprocess.run(cmd, cwd=root).returncode != 0:
        raise SetupError(f"{what} failed: {' '.join(cmd)}")


def run(cmd: list[str], bin_path: Path, root: Path = ROOT) -> int:
    """``cmd`` run in ``root`` with the environment's executables first on the PATH."""
    env = dict(os.environ, PATH=f"{bin_path}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(cmd, cwd=root, env=env).returncode


def main(argv: list[str], usage: str) -> int:
    """``demo``, ``test [ARGS]`` or ``run CMD ...``; the exit status."""
    if not argv or argv[0] not in {"demo", "test", "run"}:
        print(usage)
        return 2
    command, args = argv[0], argv[1:]
    try:
        bin_path = ensure_env("" if command == "demo" else DEV_EXTRAS)
    except SetupError as exc:
        print(f"scripts/dev.py: {exc}", file=sys.stderr)
        return 1
    if command == "demo":
        return run([str(bin_path / "memswarm"), "demo", *args], bin_path)
    if command == "run":
        return run(args, bin_path)
    for check in ([str(bin_path / "ruff"), "check", "."], [str(bin_path / "mypy")]):
        failed = run(check, bin_path)
        if failed:
            return failed
    return run([str(bin_path / "python"), "-m", "pytest", *args], bin_path)
