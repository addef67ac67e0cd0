"""Search latency of exact vs FAISS indexes on random unit vectors (512-d), one query per call.

    python benchmarks/bench_search.py [--sizes 10000,100000,1000000] [--threads 2] [--write]

For each collection size: build time, p50/p95 latency over single-vector queries, and recall@10 of
each approximate index against the exact one. Queries are fresh random unit vectors, the hardest
case for IVF and HNSW (random data has no cluster structure), so recall is a lower bound of what
real CLIP embeddings get. `--write` puts the table in benchmarks/RESULTS.md between the
`<!-- search:begin -->` / `<!-- search:end -->` markers.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

from _results import write_section

NOTES = """\
Reading the table:
- Exact search reads every vector per query, so it is memory-bound: ~2 GB per query at 1M vectors.
- Random unit vectors have no neighbourhood structure (all pairwise cosines are within ~0.2 of 0), so
  recall@10 of IVF and HNSW here is a worst case; it says little about real CLIP embeddings, which are
  clustered. IVF-Flat with every list probed is exact (see tests/test_index.py).
- `clipforge embed --index auto` uses exact search below 50,000 images and IVF-Flat above, with
  nlist = sqrt(N) (k-means on 50 vectors per list) and nprobe = max(8, nlist / 16)."""


def _set_threads(threads: int) -> None:
    # BLAS reads these when numpy is first imported, so they are set before the imports below.
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    # Idle OpenMP threads sleep instead of spinning: spinning starves the other core on a busy 2-core box.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def unit_vectors(count: int, dim: int, seed: int):  # type: ignore[no-untyped-def]
    """Random unit vectors [count, dim] float32, generated in chunks to bound peak memory."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, 100_000):
        chunk = rng.standard_normal((min(100_000, count - start), dim), dtype=np.float32)
        out[start : start + len(chunk)] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out


def latencies_ms(index, queries, k: int):  # type: ignore[no-untyped-def]
    """Per-query wall time in ms and the ids found [Q, k]."""
    import numpy as np

    times, found = [], []
    index.search(queries[:1], k)  # warm-up
    for query in queries:
        start = time.perf_counter()
        _, ids = index.search(query[None], k)
        times.append((time.perf_counter() - start) * 1e3)
        found.append(ids[0])
    return np.array(times), np.stack(found)


def recall(found, truth) -> float:  # type: ignore[no-untyped-def]
    return float(sum(len(set(f) & set(t)) for f, t in zip(found, truth, strict=True)) / truth.size)


def bench_size(count: int, dim: int, queries_n: int, k: int, hnsw_max: int, nprobes: list[int]) -> list[dict]:
    import numpy as np

    from clipforge.index.ann import build_index

    vectors, queries = unit_vectors(count, dim, 0), unit_vectors(queries_n, dim, 1)
    ids = np.arange(count, dtype=np.int64)
    rows = []
    start = time.perf_counter()
    exact = build_index("exact", ids, vectors)
    rows.append(_row(count, "exact", "", time.perf_counter() - start, *latencies_ms(exact, queries, k), None))
    truth = rows[0].pop("found")
    start = time.perf_counter()
    ivf = build_index("ivf", ids, vectors)
    built = time.perf_counter() - start
    for nprobe in nprobes:
        ivf.nprobe = min(nprobe, ivf.index.nlist)  # type: ignore[attr-defined]
        params = f"nlist={ivf.index.nlist} nprobe={ivf.nprobe}"  # type: ignore[attr-defined]
        rows.append(_row(count, "faiss ivf-flat", params, built, *latencies_ms(ivf, queries, k), truth))
    del ivf
    if count <= hnsw_max:
        start = time.perf_counter()
        hnsw = build_index("hnsw", ids, vectors)
        built = time.perf_counter() - start
        times, found = latencies_ms(hnsw, queries, k)
        rows.append(_row(count, "faiss hnsw-flat", "M=32 efS=128", built, times, found, truth))
    return rows


def _row(count, kind, params, build_s, times, found, truth) -> dict:  # type: ignore[no-untyped-def]
    import numpy as np

    row = {
        "n": count,
        "index": kind,
        "params": params,
        "build_s": build_s,
        "p50": float(np.percentile(times, 50)),
        "p95": float(np.percentile(times, 95)),
        "recall": 1.0 if truth is None else recall(found, truth),
    }
    if truth is None:
        row["found"] = found
    print(f"{count:>9,} {kind:<16} {params:<22} build {build_s:7.1f}s  p50 {row['p50']:7.2f} ms  "
          f"p95 {row['p95']:7.2f} ms  recall@10 {row['recall']:.3f}", flush=True)
    return row


def table(rows: list[dict], threads: int, queries_n: int) -> str:
    import faiss
    import numpy as np

    lines = [
        "## Search latency (exact vs FAISS)",
        "",
        f"`python benchmarks/bench_search.py` on {platform.machine()}, {threads} threads (numpy "
        f"{np.__version__}, faiss {faiss.__version__}); random 512-d unit vectors, {queries_n} "
        "single-vector queries, k=10; recall@10 against exact search.",
        "",
        "| vectors | index | params | build (s) | p50 (ms) | p95 (ms) | recall@10 |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['n']:,} | {r['index']} | {r['params']} | {r['build_s']:.1f} | {r['p50']:.2f} | "
                     f"{r['p95']:.2f} | {r['recall']:.3f} |")
    return "\n".join([*lines, "", NOTES])


def write_block(name: str, text: str) -> None:
    """Puts `text` in sub-block `name` of the search section of RESULTS.md."""
    write_section(name, text, container="search")

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--nprobe", default="16,64", help="IVF lists probed, one row each")
    parser.add_argument("--hnsw-max", type=int, default=100_000, help="largest size that also builds HNSW")
    parser.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    _set_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    nprobes = [int(n) for n in args.nprobe.split(",")]
    rows = []
    for count in (int(s) for s in args.sizes.split(",")):
        rows += bench_size(count, args.dim, args.queries, 10, args.hnsw_max, nprobes)
    text = table(rows, args.threads, args.queries)
    print(text)
    if args.write:
        write_block("search-latency", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
