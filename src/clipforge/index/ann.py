"""Nearest-neighbour search over L2-normalized vectors: exact matrix product, or FAISS IVF / HNSW.

All indexes score by inner product, which is the cosine similarity on normalized vectors, and map
results back to the store's row ids. Small collections are searched exactly (a [Q, D] x [D, N]
product is a few milliseconds up to ~50k vectors); larger ones use FAISS.

An approximate index is tuned when it is built: a held-out sample of the collection's own vectors
(kept out of k-means training) is searched exactly and approximately, and the search effort (IVF
lists probed, or HNSW's efSearch) is raised until recall@10 reaches a target, judged by the lower end
of its 95% interval over the sample: new queries, not only the sample, should reach the target (with
256 sampled queries the mean alone missed it by 0.009 on 1M overlapping vectors). The effort is thus
measured on the data at hand instead of guessed from a formula: clustered collections need few
probes, overlapping ones many.

`auto` builds `ivf-pq` from EXACT_LIMIT vectors up: IVF lists of 4-bit product-quantized codes (one
byte per 8 dimensions) scanned with FAISS's SIMD "fast-scan" kernels, whose top candidates are
re-scored exactly from the stored vectors. Scanning a code is far cheaper than reading a float
vector, so many more lists can be probed per millisecond. Its tuning has two steps, both measured on
the held-out sample: first the fewest candidates per result (PQ_RERANKS) whose re-scoring, with every
list probed, loses at most half the misses the target allows; then the fewest lists reaching the
target with that many candidates. When the codes need more than AUTO_MAX_RERANK candidates per result
(tight clusters of near-duplicates: every query would re-read hundreds of stored vectors), `auto`
builds `ivf` (float vectors in the lists) instead. Results: benchmarks/RESULTS.md ("search").

Build-time budget: `auto` must build 1M vectors in a few minutes on 2 busy cores. k-means on at most
50 points per list (sqrt(N) lists) and 16-centroid PQ codebooks fit (see RESULTS.md). HNSW does not
(348 s at 100k overlapping vectors under load, so roughly an hour at 1M), nor 4096+ lists behind an
HNSW coarse quantizer (its k-means on 160k vectors had not finished after 5 minutes under load).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from clipforge.errors import ConfigError, MissingExtraError

KINDS = ("auto", "exact", "ivf", "ivf-sq8", "ivf-pq", "hnsw")
# auto picks IVF-PQ fast-scan at and above this many vectors. Not HNSW: on 2 cores its graph took 3-6 min
# to build at 100k vectors against 12-24 s for a tuned IVF of equal recall, and it cannot delete (RESULTS.md).
EXACT_LIMIT = 50_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
TARGET_RECALL = 0.95
TUNE_QUERIES = 256  # held-out vectors whose recall@10 picks the search effort
TUNE_K = 10
PQ_BITS = 4  # 16 centroids per sub-vector: the look-up tables fit SIMD registers ("fast-scan")
PQ_TRAIN_MIN = 39 * 2**PQ_BITS  # FAISS wants >= 39 training points per centroid
# PQ scores are rough: candidates kept per result and re-scored exactly, the fewest that suffice (see
# `tune`). On 1M hard 512-d vectors at nprobe 128, 10 lost 3 points of recall@10 against 20; 40 gained 0.4.
PQ_RERANKS = (20, 40, 80, 160)
AUTO_MAX_RERANK = 40
AUTO_KINDS = ("ivf-pq", "ivf")  # what `auto` builds from EXACT_LIMIT vectors up (see `build_auto`)
_ADD_CHUNK = 65_536
RESIDUAL_SAMPLE = 20_000  # vectors on which PQ's two coding choices are compared


def import_faiss() -> Any:
    """The faiss module, or MissingExtraError naming the `index` extra."""
    try:
        import faiss
    except ImportError as err:
        raise MissingExtraError("faiss-cpu", "index") from err
    return faiss


@contextmanager
def faiss_threads(count: int | None) -> Iterator[None]:
    """Runs FAISS on `count` OpenMP threads for the block (None, or FAISS not installed: as is)."""
    try:
        import faiss
    except ImportError:
        count = None
    if not count:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class VectorIndex(Protocol):
    """What every index offers; `search` returns scores and ids [Q, k], padded with id -1.

    `candidates` is how many results per wanted one a search should take before re-scoring them
    exactly (1 when the index's own scores are exact enough).
    """

    kind: str

    @property
    def candidates(self) -> int: ...

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def remove(self, ids: np.ndarray) -> None: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def __len__(self) -> int: ...


class ExactIndex:
    """Brute force: one matrix product and a partial sort. Exact, nothing to train or save."""

    kind = "exact"
    candidates = 1

    def __init__(self, dim: int) -> None:
        self.ids = np.zeros(0, dtype=np.int64)
        self.matrix = np.zeros((0, dim), dtype=np.float32)  # [N, D]

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Appends vectors [N, D] under the given ids [N]."""
        self.ids = np.concatenate([self.ids, np.asarray(ids, dtype=np.int64)])
        self.matrix = np.concatenate([self.matrix, np.asarray(vectors, dtype=np.float32)])

    def remove(self, ids: np.ndarray) -> None:
        """Drops the vectors with these ids."""
        keep = ~np.isin(self.ids, ids)
        self.ids, self.matrix = self.ids[keep], self.matrix[keep]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k inner products of queries [Q, D]; ties keep the lower row first."""
        scores = np.asarray(queries, dtype=np.float32) @ self.matrix.T  # [Q, N]
        k_eff = min(k, len(self.ids))
        if k_eff == 0:
            return _pad(scores[:, :0], np.zeros((len(scores), 0), dtype=np.int64), k)
        top = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff]  # [Q, k_eff], unordered
        top_scores = np.take_along_axis(scores, top, axis=1)  # [Q, k_eff]
        order = np.argsort(-top_scores, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        return _pad(np.take_along_axis(top_scores, order, axis=1), self.ids[top], k)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Tuning:
    """How an approximate index was tuned: the effort chosen and the recall it measured.

    Attributes:
        effort: IVF lists probed (`nprobe`) or HNSW candidate-list size (`efSearch`).
        recall: mean recall@10 against exact search on the held-out sample, at `effort`.
        target: the recall asked for.
        queries: size of the held-out sample.
        tuned_on: collection size when tuned (a grown collection is re-tuned).
        candidates: results taken per wanted one and re-scored exactly (`ivf-pq`; 1 otherwise).
    """

    effort: int
    recall: float
    target: float
    queries: int
    tuned_on: int
    candidates: int = 1


class FaissIndex:
    """A FAISS inner-product index keyed by row id: IVF (`ivf`, `ivf-sq8`, `ivf-pq`) or HNSW (`hnsw`).

    HNSW graphs cannot delete vectors, so `remove` on an HNSW index raises; callers rebuild instead.

    Attributes:
        trained_on: collection size the IVF lists were trained on (0 for HNSW).
        tuning: the search effort and its measured recall, once tuned.
    """

    def __init__(self, kind: str, index: Any, trained_on: int = 0, tuning: Tuning | None = None) -> None:
        self.kind = kind
        self.index = index
        self.trained_on = trained_on
        self.rerank = PQ_RERANKS[0] if kind == "ivf-pq" else 1
        self.tuning: Tuning | None = None
        if tuning is not None:
            self.set_tuning(tuning)

    @property
    def candidates(self) -> int:
        """Results to take per wanted one before exact re-scoring (PQ's scores are rough)."""
        return self.rerank

    @property
    def effort_name(self) -> str:
        """FAISS's name of the search-effort parameter of this kind."""
        return "efSearch" if self.kind == "hnsw" else "nprobe"

    @property
    def effort(self) -> int:
        """IVF lists probed, or HNSW's efSearch (more: slower and closer to exact)."""
        if self.kind == "hnsw":
            return int(import_faiss().downcast_index(self.index.index).hnsw.efSearch)
        return int(self.index.nprobe)

    @effort.setter
    def effort(self, value: int) -> None:
        import_faiss().ParameterSpace().set_index_parameter(self.index, self.effort_name, int(value))

    @property
    def max_effort(self) -> int:
        """The effort beyond which nothing changes: every IVF list, or a generous efSearch."""
        return 4096 if self.kind == "hnsw" else int(self.index.nlist)

    def set_tuning(self, tuning: Tuning) -> None:
        """Applies a tuning (its effort and candidates) and keeps it for saving."""
        self.tuning = tuning
        self.effort = tuning.effort
        self.rerank = tuning.candidates

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Adds vectors [N, D] under the given ids [N]."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.index.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> None:
        """Drops the vectors with these ids (IVF only)."""
        if self.kind == "hnsw":
            raise ConfigError("an HNSW index cannot delete vectors; rebuild it")
        self.index.remove_ids(np.asarray(ids, dtype=np.int64))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k inner products of queries [Q, D]."""
        scores, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return scores, ids

    def stored_ids(self) -> np.ndarray:
        """Every id the index holds [N], unordered (read from its id map or inverted lists)."""
        faiss = import_faiss()
        if self.kind == "hnsw":
            return faiss.vector_to_array(self.index.id_map).astype(np.int64)
        lists = faiss.extract_index_ivf(self.index).invlists
        sizes = [lists.list_size(i) for i in range(lists.nlist)]
        chunks = [faiss.rev_swig_ptr(lists.get_ids(i), n).copy() for i, n in enumerate(sizes) if n]
        return np.concatenate(chunks).astype(np.int64) if chunks else np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.index.ntotal)


def _pad(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Pads [Q, k'] results to [Q, k] with score -inf and id -1, as FAISS does."""
    missing = k - scores.shape[1]
    if missing <= 0:
        return scores, ids
    return (
        np.pad(scores, ((0, 0), (0, missing)), constant_values=-np.inf),
        np.pad(ids, ((0, 0), (0, missing)), constant_values=-1),
    )


def choose_kind(count: int, requested: str = "auto") -> str:
    """The index kind for `count` vectors: `requested`, or for `auto` exact below EXACT_LIMIT, else ivf-pq.

    Raises:
        ConfigError: an unknown kind.
    """
    if requested not in KINDS:
        raise ConfigError(f"unknown index kind '{requested}' (known: {', '.join(KINDS)})")
    if requested != "auto":
        return requested
    return "exact" if count < EXACT_LIMIT else "ivf-pq"


def ivf_lists(count: int) -> int:
    """IVF list count: sqrt(N), the low end of FAISS's guideline, so k-means at 1M vectors takes seconds."""
    return max(1, min(int(math.sqrt(count)), count // 39))


def pq_subvectors(dim: int) -> int:
    """4-bit PQ sub-vectors, one byte per 8 dimensions: the largest divisor of `dim` not above dim / 4."""
    return next(m for m in range(max(1, dim // 4), 0, -1) if dim % m == 0)


def build_auto(
    ids: np.ndarray, vectors: np.ndarray, seed: int = 0, target: float = TARGET_RECALL
) -> FaissIndex:
    """`auto`'s approximate index: `ivf-pq`, or `ivf` when PQ needs > AUTO_MAX_RERANK candidates per result.

    Needing that many means the codes cannot tell this data's neighbours apart, and every query would
    re-read hundreds of stored vectors (on 1M clustered `easy` vectors: 160 per result, p50 60 ms).
    """
    index = build_faiss("ivf-pq", ids, vectors, seed, target)
    return index if index.candidates <= AUTO_MAX_RERANK else build_faiss("ivf", ids, vectors, seed, target)


def build_index(
    kind: str, ids: np.ndarray, vectors: np.ndarray, seed: int = 0, target: float = TARGET_RECALL
) -> VectorIndex:
    """Builds an index of `kind` over vectors [N, D] with row ids [N]; approximate kinds are tuned.

    Raises:
        ConfigError: an unknown kind, or too few vectors to train PQ codes.
    """
    if kind != "exact":
        return build_faiss(kind, ids, vectors, seed, target)
    exact = ExactIndex(vectors.shape[1])
    exact.add(ids, vectors)
    return exact


def build_faiss(
    kind: str, ids: np.ndarray, vectors: np.ndarray, seed: int = 0, target: float = TARGET_RECALL
) -> FaissIndex:
    """Builds a FAISS index of `kind`, tuned to `target` recall@10 on held-out vectors (see `tune`).

    The held-out vectors stay out of k-means training and are added only after tuning, so they
    are searched as new queries are: a stored vector would find itself, and HNSW its own links.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    held = np.random.default_rng(seed).permutation(len(ids))[: min(TUNE_QUERIES, len(ids) // 10)]
    rest = np.setdiff1d(np.arange(len(ids)), held)
    index = _empty_faiss(kind, vectors, rest, seed)
    for start in range(0, len(rest), _ADD_CHUNK):  # chunks bound the copies fancy indexing makes
        rows = rest[start : start + _ADD_CHUNK]
        index.add(ids[rows], vectors[rows])
    if len(held):
        index.set_tuning(tune(index, ids, vectors, held, target))
        index.add(ids[held], vectors[held])
    return index


def _empty_faiss(kind: str, vectors: np.ndarray, train_rows: np.ndarray, seed: int) -> FaissIndex:
    """An untrained-then-trained empty FAISS index of `kind`, its k-means fitted on `train_rows`."""
    faiss = import_faiss()
    dim = vectors.shape[1]
    if kind == "hnsw":
        graph = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        return FaissIndex("hnsw", faiss.IndexIDMap2(graph))
    if kind not in ("ivf", "ivf-sq8", "ivf-pq"):
        raise ConfigError(f"unknown index kind '{kind}' (known: {', '.join(KINDS[1:])})")
    if kind == "ivf-pq" and len(train_rows) < PQ_TRAIN_MIN:
        raise ConfigError(f"ivf-pq needs at least {PQ_TRAIN_MIN} vectors to train its codes, got "
                          f"{len(train_rows)}: use ivf or ivf-sq8 until the collection is larger")
    nlist = ivf_lists(len(train_rows))
    quantizer = faiss.IndexFlatIP(dim)
    ivf = _ivf_of_kind(faiss, kind, quantizer, dim, nlist)
    ivf.cp.seed = seed
    if kind == "ivf-pq":
        ivf.by_residual = _residual_codes_keep_more(faiss, vectors, train_rows, seed)
    ivf.cp.min_points_per_centroid = 1  # lists already get >= 39 points each; below 39 vectors, one list
    want = max(50 * nlist, PQ_TRAIN_MIN if kind == "ivf-pq" else 0)
    sample = np.random.default_rng(seed).permutation(train_rows)[:want]
    # PQ training runs thousands of tiny parallel k-means steps: on a busy machine OpenMP's spinning
    # threads made it 80x slower (12.6 s against 0.15 s on one thread for 3,000 vectors).
    with faiss_threads(1 if kind == "ivf-pq" else None):
        ivf.train(vectors[np.sort(sample)])
    return FaissIndex(kind, ivf, trained_on=len(vectors))


def _residual_codes_keep_more(faiss: Any, vectors: np.ndarray, rows: np.ndarray, seed: int) -> bool:
    """Whether PQ should code each vector's offset from its list centroid rather than the vector itself.

    Neither wins everywhere: on 100k clustered (easy) vectors, 20 candidates per result held 93% of the
    true top-10 with vector codes and 98% with offset codes; on overlapping (hard) ones 99.8% against
    96.9%. So both are tried on a sample (RESIDUAL_SAMPLE rows, TUNE_QUERIES of them as queries, every
    list probed) and the one keeping more true neighbours among the candidates is used.
    """
    sample = np.random.default_rng(seed + 1).permutation(rows)[:RESIDUAL_SAMPLE]
    queries, base = vectors[np.sort(sample[:TUNE_QUERIES])], vectors[np.sort(sample[TUNE_QUERIES:])]
    truth = faiss.knn(queries, base, TUNE_K, faiss.METRIC_INNER_PRODUCT)[1]  # [Q, k] rows of base
    kept = {}
    for residual in (False, True):
        nlist = ivf_lists(len(base))
        pq = _ivf_of_kind(faiss, "ivf-pq", faiss.IndexFlatIP(base.shape[1]), base.shape[1], nlist)
        pq.by_residual, pq.nprobe = residual, nlist
        with faiss_threads(1):  # see `_empty_faiss`
            pq.train(base)
        pq.add(base)
        kept[residual] = recall_at_k(pq.search(queries, TUNE_K * PQ_RERANKS[0])[1], truth)
    return kept[True] > kept[False]


def _ivf_of_kind(faiss: Any, kind: str, quantizer: Any, dim: int, nlist: int) -> Any:
    """IVF with full vectors (`ivf`), 8-bit scalar codes (`ivf-sq8`) or 4-bit PQ fast-scan codes (`ivf-pq`).

    Files saved before `ivf-pq` moved to fast-scan hold 8-bit IndexIVFPQ codes; they load and search
    unchanged (FAISS reads the kind from the file), only re-scoring more candidates.
    """
    ip = faiss.METRIC_INNER_PRODUCT
    if kind == "ivf-sq8":
        return faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, ip)
    if kind == "ivf-pq":
        return faiss.IndexIVFPQFastScan(quantizer, dim, nlist, pq_subvectors(dim), PQ_BITS, ip)
    return faiss.IndexIVFFlat(quantizer, dim, nlist, ip)


def tune(
    index: FaissIndex, ids: np.ndarray, vectors: np.ndarray, held: np.ndarray, target: float = TARGET_RECALL
) -> Tuning:
    """The least search effort whose recall@10 on the vectors at rows `held` surely reaches `target`.

    "Surely": the lower end of the 95% interval of the mean over the sample (`recall_low`). Efforts
    double until one reaches the target, then the last step is bisected to within 1/8.
    The index must hold every row but `held`. PQ indexes first get their candidates per result (see
    `_least_rerank`). When no effort reaches the target, the most accurate one is kept and its
    recall reported. Recall counts the true top-10 among the candidates: exact re-scoring ranks
    exactly those first.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    queries = vectors[held]  # [Q, D]
    truth = _exact_neighbours(queries, ids, vectors, held)  # [Q, k]
    means: dict[int, float] = {}

    def recall(effort: int) -> float:
        index.effort = effort
        found = index.search(queries, TUNE_K * index.candidates)[1]
        means[effort] = recall_at_k(found, truth)
        return recall_low(found, truth)

    if index.kind == "ivf-pq":
        index.rerank = _least_rerank(index, recall, target)

    measured: dict[int, float] = {}
    for effort in _efforts(index.max_effort):
        measured[effort] = recall(effort)
        if measured[effort] >= target:
            effort = _bisect(recall, measured, effort // 2, effort, target)
            break
    else:
        effort = max(measured, key=lambda e: (measured[e], -e))
    return Tuning(effort, means[effort], target, len(held), len(ids), index.candidates)


def _least_rerank(index: FaissIndex, recall: Callable[[int], float], target: float) -> int:
    """The fewest PQ_RERANKS candidates whose recall with every list probed reaches (1 + target) / 2.

    The misses the target allows are split in half: at most half may come from the codes' rough
    scores, the rest is left for the lists not probed (so nprobe need not approach nlist).
    """
    for rerank in PQ_RERANKS:
        index.rerank = rerank
        if recall(index.max_effort) >= (1 + target) / 2:
            break
    return index.rerank


def _bisect(
    recall: Callable[[int], float], measured: dict[int, float], low: int, high: int, target: float
) -> int:
    """The least effort in (low, high] reaching `target`, to within high / 8 (`high` reaches it)."""
    while high - low > max(1, high // 8):
        middle = (low + high) // 2
        measured[middle] = recall(middle)
        low, high = (low, middle) if measured[middle] >= target else (middle, high)
    return high


def _exact_neighbours(
    queries: np.ndarray, ids: np.ndarray, vectors: np.ndarray, held: np.ndarray
) -> np.ndarray:
    """Ids [Q, k] of the exact top-k of each query among the rows not in `held`."""
    faiss = import_faiss()
    k = min(TUNE_K + len(held), len(ids))
    _, rows = faiss.knn(queries, vectors, k, faiss.METRIC_INNER_PRODUCT)  # [Q, k] row numbers
    keep = ~np.isin(rows, held)  # [Q, k]
    return np.stack([r[m][:TUNE_K] for r, m in zip(ids[rows], keep, strict=True)])


def _efforts(top: int) -> Iterator[int]:
    """1, 2, 4, ... up to and including `top`."""
    effort = 1
    while effort < top:
        yield effort
        effort *= 2
    yield top


def search_reranked(
    index: VectorIndex, query: np.ndarray, k: int, fetch: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k scores and ids [k'] of one query [1, D], re-scored exactly where the index's scores are rough.

    Args:
        fetch: ids [n] -> their stored vectors [n, D] (e.g. `EmbeddingStore.vectors`).
    """
    scores, ids = index.search(query, k * index.candidates)
    ids = ids[0][ids[0] >= 0]
    if index.candidates == 1:
        return scores[0][: len(ids)], ids
    exact = np.asarray(fetch(ids), dtype=np.float32) @ np.asarray(query, dtype=np.float32)[0]  # [n]
    order = np.argsort(-exact, kind="stable")[:k]
    return exact[order], ids[order]


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row of `truth` [Q, k] that `found` [Q, k'] contains."""
    hits = sum(len(np.intersect1d(f, t)) for f, t in zip(found, truth, strict=True))
    return float(hits / truth.size) if truth.size else 1.0


def recall_low(found: np.ndarray, truth: np.ndarray) -> float:
    """Lower end of the normal 95% interval of `recall_at_k` over the rows (queries) of `truth` [Q, k]."""
    per_query = np.array([len(np.intersect1d(f, t)) for f, t in zip(found, truth, strict=True)], dtype=float)
    if len(per_query) < 2:
        return recall_at_k(found, truth)
    spread = per_query.std(ddof=1) / truth.shape[1] / math.sqrt(len(per_query))
    return float(per_query.mean() / truth.shape[1] - 1.96 * spread)
