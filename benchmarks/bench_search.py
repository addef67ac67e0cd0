"""Search at scale: what `--index auto` builds, the recall it reaches and what a query costs.

    python benchmarks/bench_search.py [--sizes 100000,1000000] [--settings easy,hard] \\
        [--kinds auto,ivf-sq8,ivf-pq] [--flickr8k-index DIR] [--store DIR] [--threads 2] [--write]

For each synthetic setting (see `_vectors.py`: CLIP-like clustered ``easy``, overlapping ``hard``,
and ``uniform`` as the floor) and size: every index kind asked for is built the way `clipforge
embed` builds it (approximate kinds tuned at build time to recall@10 >= 0.95 on 256 held-out
collection vectors), then searched with 200 *fresh* queries of the same distribution, one at a
time: build time, the search effort the tuner chose and the recall it measured, the recall the
fresh queries actually get against exact search, p50/p95 latency and index memory.

`--flickr8k-index DIR` adds real embeddings: an index folder written by `clipforge embed --data
flickr8k:ROOT:train` (the collection) whose model also embeds the test split's images and
captions as queries; the tuner only ever sees collection images, so the caption rows show what
the modality gap does to a recall tuned on images.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from _results import write_section

QUERIES = 200
K = 10


def _set_threads(threads: int) -> None:
    # BLAS reads these when numpy is first imported, so they are set before the imports below.
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    # Idle OpenMP threads sleep instead of spinning: spinning starves the other core on a busy 2-core box.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@dataclass
class Row:
    data: str
    n: int
    kind: str
    params: str
    build_s: float
    tuned: str
    recall: float
    ci: tuple[float, float]
    p50: float
    p95: float
    memory_mb: float


def latencies_ms(index, queries, fetch):  # type: ignore[no-untyped-def]
    """Per-query wall time in ms and the ids found [Q, k], one query per call, as `Searcher` searches."""
    import numpy as np

    from clipforge.index.ann import search_reranked

    times, found = [], []
    search_reranked(index, queries[:1], K, fetch)  # warm-up
    for query in queries:
        start = time.perf_counter()
        _, ids = search_reranked(index, query[None], K, fetch)
        times.append((time.perf_counter() - start) * 1e3)
        found.append(np.pad(ids, (0, K - len(ids)), constant_values=-1))
    return np.array(times), np.stack(found)


def memory_mb(index) -> float:  # type: ignore[no-untyped-def]
    """Serialized size of an index (FAISS) or its matrix (exact), in MB, without materializing it."""
    from clipforge.index.ann import FaissIndex, import_faiss

    if not isinstance(index, FaissIndex):
        return float(index.matrix.nbytes) / 2**20
    faiss = import_faiss()
    total = [0]

    def count(data: bytes) -> int:
        total[0] += len(data)
        return len(data)

    faiss.write_index(index.index, faiss.PyCallbackIOWriter(count))
    return total[0] / 2**20


def measure(data: str, kind: str, ids, vectors, queries, truth, fetch=None) -> Row:  # type: ignore[no-untyped-def]
    from clipforge.index.ann import HNSW_M, FaissIndex, build_auto, build_index, choose_kind, recall_at_k

    chosen = choose_kind(len(ids), kind)
    start = time.perf_counter()
    auto = kind == "auto" and chosen != "exact"
    index = build_auto(ids, vectors) if auto else build_index(chosen, ids, vectors)
    built = time.perf_counter() - start
    if fetch is None:  # re-score from memory unless a store is given
        rows_of = {int(i): r for r, i in enumerate(ids)}
        fetch = lambda got: vectors[[rows_of[int(i)] for i in got]]  # noqa: E731
    times, found = latencies_ms(index, queries, fetch)
    params, tuned = chosen, ""
    if isinstance(index, FaissIndex):
        params = f"hnsw M={HNSW_M}" if chosen == "hnsw" else f"{index.kind} nlist={index.index.nlist}"
        if index.tuning is not None:
            rerank = f" ×{index.candidates}" if index.candidates > 1 else ""
            tuned = f"{index.effort_name}={index.tuning.effort}{rerank} ({index.tuning.recall:.3f})"
    label = f"auto → {params}" if kind == "auto" else params
    row = Row(data, len(ids), kind, label, built, tuned, recall_at_k(found, truth), recall_ci(found, truth),
              float(_pct(times, 50)), float(_pct(times, 95)), memory_mb(index))
    print(f"{data:<18} {row.n:>9,} {label:<26} build {built:6.1f}s tuned {tuned:<20} "
          f"recall@10 {row.recall:.3f} p50 {row.p50:6.2f} ms p95 {row.p95:6.2f} ms {row.memory_mb:6.0f} MB",
          flush=True)
    return row


def recall_ci(found, truth) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Bootstrap 95% interval of mean recall@10 over the queries."""
    import numpy as np

    from clipforge.probe.stats import bootstrap_ci

    return bootstrap_ci([len(np.intersect1d(f, t)) / K for f, t in zip(found, truth, strict=True)])


def _pct(values, q: float) -> float:  # type: ignore[no-untyped-def]
    import numpy as np

    return float(np.percentile(values, q))


def stored(folder: Path, vectors):  # type: ignore[no-untyped-def]
    """An EmbeddingStore holding `vectors` in order (built once, reused): its ids and `vectors` fetch."""
    from clipforge.index import EmbeddingStore
    from clipforge.index.store import Item

    store = EmbeddingStore(folder, create=True)
    if len(store) != len(vectors):
        store.remove(store.ids())
        for start in range(0, len(vectors), 50_000):
            rows = range(start, min(start + 50_000, len(vectors)))
            items = [Item(f"/photos/{i:07d}.jpg", (f"photo {i}",), 100_000 + i, 1, "0" * 64) for i in rows]
            store.add(items, vectors[start : rows.stop])
        store.set_meta("embed_dim", str(vectors.shape[1]))
    return store.ids(), store.vectors


def bench_synthetic(
    setting: str, count: int, kinds: list[str], hnsw_max: int, store: Path | None
) -> list[Row]:
    import numpy as np
    from _vectors import clustered

    from clipforge.index.ann import import_faiss

    faiss = import_faiss()
    vectors, queries = clustered(count, 512, 0, setting), clustered(QUERIES, 512, 1, setting)
    _, truth_rows = faiss.knn(queries, vectors, K, faiss.METRIC_INNER_PRODUCT)
    ids, fetch = np.arange(count, dtype=np.int64), None
    if store is not None:
        ids, fetch = stored(store / f"{setting}-{count}", vectors)
    truth = ids[truth_rows]
    rows = [measure(setting, "exact", ids, vectors, queries, truth)]
    for kind in kinds:
        if kind == "hnsw" and count > hnsw_max:
            continue
        rows.append(measure(setting, kind, ids, vectors, queries, truth, fetch))
    return rows


def bench_flickr8k(folder: Path, split_root: Path, kinds: list[str]) -> list[Row]:
    """Real embeddings: the index's images as the collection; test images and captions as queries."""
    import numpy as np
    import torch

    from clipforge.data.specs import open_data
    from clipforge.data.transforms import load_image
    from clipforge.index import EmbeddingStore, Searcher
    from clipforge.index.ann import import_faiss

    faiss = import_faiss()
    ids, vectors = EmbeddingStore(folder).embeddings()
    vectors = vectors.astype(np.float32)
    searcher = Searcher(folder)
    records = list(open_data(f"flickr8k:{split_root}:test").records())[:QUERIES]
    with torch.inference_mode():
        images = np.concatenate([searcher.encode_image(load_image(r.source)) for r in records])
        texts = np.concatenate([searcher.encode_text(r.captions[0]) for r in records])
    rows = []
    for name, queries in (("flickr8k images", images), ("flickr8k captions", texts)):
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        _, rows_found = faiss.knn(queries, vectors, K, faiss.METRIC_INNER_PRODUCT)
        truth = ids[rows_found]
        rows += [measure(name, kind, ids, vectors, queries, truth) for kind in ["exact", *kinds]]
    return rows


def table(rows: list[Row], threads: int, command: str) -> str:
    import faiss
    import numpy as np

    lines = [
        "## Search at scale (`--index auto` and the FAISS kinds)",
        "",
        f"`{command}` on {platform.machine()}, {threads} threads (numpy {np.__version__}, faiss "
        f"{faiss.__version__}). 512-d vectors ({QUERIES} fresh queries per row, one per call, k={K}); "
        "*tuned*: the search effort the build chose to reach recall@10 >= 0.95 on 256 held-out collection "
        "vectors (lower end of its 95% interval), and the mean (×R: candidates per result re-scored "
        "exactly); *recall@10*: what the fresh queries get against exact search (bootstrap 95% CI).",
        "",
        "| data | vectors | index | build (s) | tuned (held-out recall) | recall@10 [95% CI] | p50 (ms) "
        "| p95 (ms) | memory (MB) |",
        "|---|---:|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        recall = f"{r.recall:.3f} [{r.ci[0]:.3f}, {r.ci[1]:.3f}]"
        lines.append(f"| {r.data} | {r.n:,} | {r.params} | {r.build_s:.1f} | {r.tuned} | {recall} | "
                     f"{r.p50:.2f} | {r.p95:.2f} | {r.memory_mb:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--settings", default="easy,hard")
    parser.add_argument("--kinds", default="auto,ivf-sq8,ivf-pq")
    parser.add_argument("--hnsw-max", type=int, default=100_000, help="largest size that also builds HNSW")
    parser.add_argument("--flickr8k-index", type=Path, default=None, help="index folder of Flickr8k images")
    parser.add_argument("--flickr8k-root", type=Path, default=Path("../shared/data/flickr8k"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--store", type=Path, default=None,
                        help="re-score PQ candidates from SQLite stores built (once) under this folder, as "
                             "`clipforge search` does, instead of from memory")
    parser.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md")
    parser.add_argument("--block", default="search-latency", help="RESULTS.md block to write")
    args = parser.parse_args(argv)
    _set_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    kinds = args.kinds.split(",")
    rows: list[Row] = []
    if args.flickr8k_index is not None:
        rows += bench_flickr8k(args.flickr8k_index, args.flickr8k_root, [k for k in kinds if k != "auto"])
    for setting in (s for s in args.settings.split(",") if s):
        for count in (int(s) for s in args.sizes.split(",")):
            rows += bench_synthetic(setting, count, kinds, args.hnsw_max, args.store)
    text = table(rows, args.threads, "python benchmarks/bench_search.py " + " ".join(argv or sys.argv[1:]))
    print(text)
    if args.write:
        write_section(args.block, text, container="search")
    return 0


if __name__ == "__main__":
    sys.exit(main())
