"""FAISS index variants on the 1M overlapping (`hard`) collection: what `--index auto` was chosen from.

    python benchmarks/ann_variants.py \\
        '("IVF1000,Flat", [{"nprobe": 128, "pm": 0}, {"nprobe": 128, "pm": 1}], 50000)' \\
        '("IVF1024,PQ128x4fs,RFlat", [{"nprobe": 128, "k_factor": 20}])' ...

Each argument is (FAISS factory string, list of search settings, k-means training points). Per setting:
recall@10 on the 256 held-out collection vectors the build-time tuner uses (chosen on these only) and on
200 fresh queries, and single-query p50/p95 latency. `pm` is IVF's OpenMP `parallel_mode` (0: over
queries, 1: over lists), `k_factor` the candidates per result an `RFlat` refinement re-scores exactly.
The vectors (2 GB) and the exact neighbours are cached under `runs/`.
"""

from __future__ import annotations

import ast
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep: 2 busy cores

import faiss  # noqa: E402
import numpy as np  # noqa: E402
from _vectors import clustered  # noqa: E402

N, DIM, K, HELD = 1_000_000, 512, 10, 256
CACHE = Path("runs")


def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Collection [N, D], fresh queries [200, D] and their exact top-10 rows [200, K], cached."""
    CACHE.mkdir(exist_ok=True)
    paths = CACHE / f"hard{N}.npy", CACHE / f"hard{N}_truth.npy"
    if not paths[0].exists():
        np.save(paths[0], clustered(N, DIM, 0, "hard"))
    vectors, queries = np.load(paths[0]), clustered(200, DIM, 1, "hard")
    if not paths[1].exists():
        np.save(paths[1], faiss.knn(queries, vectors, K, faiss.METRIC_INNER_PRODUCT)[1])
    return vectors, queries, np.load(paths[1])


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(f, t)) / K for f, t in zip(found, truth, strict=True)]))


def run(spec: str, settings: list[dict[str, int]], train_n: int = 65_536) -> None:
    vectors, queries, truth = data()
    held = np.random.default_rng(0).permutation(N)[:HELD]  # as `clipforge.index.ann.build_faiss`
    rest = np.setdiff1d(np.arange(N), held)
    rows = faiss.knn(vectors[held], vectors, K + HELD, faiss.METRIC_INNER_PRODUCT)[1]
    held_truth = np.stack([r[~np.isin(r, held)][:K] for r in rows])
    start = time.time()
    index = faiss.index_factory(DIM, spec, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.try_extract_index_ivf(index)
    index.train(vectors[np.sort(np.random.default_rng(0).permutation(rest)[:train_n])])
    for chunk in range(0, len(rest), 65_536):
        index.add(vectors[rest[chunk : chunk + 65_536]])  # internal id i = rest[i]
    print(f"== {spec}: build {time.time() - start:.0f} s", flush=True)
    for setting in settings:
        setting = dict(setting)
        if ivf is not None:
            ivf.parallel_mode = setting.pop("pm", 0)
        for name, value in setting.items():
            if name == "k_factor":
                faiss.downcast_index(index).k_factor = value
            else:
                faiss.ParameterSpace().set_index_parameter(index, name, value)
        held_recall = recall(rest[index.search(vectors[held], K)[1]], held_truth)
        index.search(queries[:1], K)  # warm-up
        times, found = [], []
        for query in queries:
            begin = time.perf_counter()
            found.append(rest[index.search(query[None], K)[1][0]])
            times.append((time.perf_counter() - begin) * 1e3)
        print(f"  {setting} pm={ivf.parallel_mode if ivf is not None else '-'}: held-out {held_recall:.3f} "
              f"fresh {recall(np.stack(found), truth):.3f} p50 {np.percentile(times, 50):.2f} ms "
              f"p95 {np.percentile(times, 95):.2f} ms", flush=True)
    print(os.popen("uptime").read().strip(), flush=True)


if __name__ == "__main__":
    faiss.omp_set_num_threads(2)
    for job in sys.argv[1:]:
        run(*ast.literal_eval(job))
