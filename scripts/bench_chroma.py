#!/usr/bin/env python3
"""Benchmark the Chroma read model: embedding, projection with vectors precomputed, and scoped
search, against chromadb's own ``collection.add`` of the same vectors and its own filtered
``collection.query`` (the vector index alone, which may miss) in the same run.

    python3 scripts/dev.py run python scripts/bench_chroma.py [--memories 10000 100000]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from collections.abc import Sequence

import chromadb
import numpy as np
from benchtable import Cell, print_table
from benchtime import percentile, timed

from memswarm_es.events import EventType, NewEvent
from memswarm_es.log import InProcessLog
from memswarm_es.scopes import Scope
from projections.chroma import EXACT_SEARCH, ChromaReadModel, _metadata, text_of
from projections.embedding import CachedEmbedder, EmbeddingCache, MiniLMEmbedding
from projections.fold import fold
from projections.projector import Projector

MODEL = "bench-precomputed"


def refuse(texts: Sequence[str]) -> list[list[float]]:
    raise AssertionError("every vector should come from the cache")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memories", type=int, nargs="+", default=[10_000])
    parser.add_argument("--embed", type=int, default=512, help="texts for the embedder")
    parser.add_argument("--searches", type=int, default=200)
    args = parser.parse_args()

    texts = [f"agent note {i}: the bridge on route {i % 97} is closed until day {i % 31}"
             for i in range(args.embed)]
    embedder = MiniLMEmbedding()
    embedder(texts[:32])  # warm up
    embed_rate = args.embed / timed(lambda: embedder(texts))
    rows: list[list[Cell]] = []
    rng = np.random.default_rng(5)
    for count in args.memories:
        with tempfile.TemporaryDirectory() as tmp:
            log = InProcessLog()
            log.append([NewEvent.create(
                EventType.MEMORY_WRITTEN, Scope(f"agent-{i % 100}", f"group-{i % 10}"),
                f"agent-{i % 100}", {"value": f"note {i} about route {i % 97}",
                                     "metadata": {"n": i}}, memory_id=f"m{i:08d}", version=1)
                for i in range(count)])
            vectors = rng.standard_normal((count, 384)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            cache = EmbeddingCache(f"{tmp}/vectors.db")
            entries = list(fold(log.read()).entries.values())
            cache.put_many(MODEL, {hashlib.sha256(text_of(e.value).encode()).digest(): v
                                   for e, v in zip(entries, vectors, strict=True)})
            client = chromadb.PersistentClient(
                f"{tmp}/chroma", settings=chromadb.Settings(anonymized_telemetry=False))
            model = ChromaReadModel(client, CachedEmbedder(refuse, MODEL, cache), "bench")
            projected = count / timed(Projector(log, model, batch_size=1000).catch_up)

            peer = client.create_collection("peer", metadata={"hnsw:space": "cosine"})
            metadatas: list[chromadb.Metadata] = [_metadata(e) for e in entries]
            start = time.perf_counter()
            for i in range(0, count, 1000):
                peer.add(ids=[e.memory_id for e in entries[i:i + 1000]],
                         embeddings=vectors[i:i + 1000].tolist(),
                         documents=[text_of(e.value) for e in entries[i:i + 1000]],
                         metadatas=metadatas[i:i + 1000])
            ceiling = count / (time.perf_counter() - start)

            query_vectors = {f"q{i}": vectors[i] for i in range(args.searches)}
            cache.put_many(MODEL, {hashlib.sha256(q.encode()).digest(): v
                                   for q, v in query_vectors.items()})
            samples, peers = [], []
            for i, (query, vector) in enumerate(query_vectors.items()):
                owner = f"agent-{i % 100}"
                start = time.perf_counter()
                hits = model.search(query, Scope(agent_id=owner), k=10)
                samples.append((time.perf_counter() - start) * 1000)
                assert all(h.entry.agent_id == owner for h in hits)
                start = time.perf_counter()
                peer.query(query_embeddings=[vector.tolist()], n_results=10,
                           where={"agent_id": owner},
                           include=["metadatas", "distances"])
                peers.append((time.perf_counter() - start) * 1000)
            rows.append([count, projected, ceiling, projected / ceiling, count // 100,
                         statistics.median(samples), percentile(samples, 99),
                         statistics.median(peers)])

    print_table(f"Chroma read model; embedding (all-MiniLM-L6-v2 int8, onnxruntime): "
                f"{embed_rate:,.0f} texts/s",
                ["memories", "projected ev/s", "chroma add/s", "ratio", "in scope",
                 "search p50 ms", "p99 ms", "chroma query p50 ms"], rows,
                decimals=[0, 0, 0, 2, 0, 2, 2, 2],
                notes=["search: the 10 nearest among one agent's memories (exact when the scope "
                       f"holds at most {EXACT_SEARCH:,}); chroma query: the collection's own "
                       "filtered query of the vector index, same scope, same run"])


if __name__ == "__main__":
    main()
