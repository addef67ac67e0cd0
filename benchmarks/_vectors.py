"""Synthetic embedding collections that look like CLIP's, for search benchmarks and tests.

Real CLIP image embeddings are not uniform on the sphere: they share a mean direction (random pairs
have cosine ~0.2-0.5), group into topics and sub-topics, and spread within a group along few
directions. `clustered` draws x = normalize(a*mean + b*topic + c*subtopic + e*noise) with Zipf-sized
sub-topics. Two settings:

- ``easy``: 2,000 sub-topics, noise in a 64-d subspace (low intrinsic dimension, like real embeddings);
  nearest neighbours are close (cosine ~0.89) and well separated from the rest.
- ``hard``: 500 sub-topics whose members spread widely in a 48-d subspace (noise larger than the
  structure): clusters overlap and neighbourhoods straddle any partition (nearest neighbour cosine
  ~0.6 against ~0.17 for a random pair; IVF with the old fixed nprobe=8 found 48% of the top-10).

``uniform`` (no structure) is kept as the floor. Queries are fresh draws of the same distribution
(a different seed), never members of the collection.
"""

from __future__ import annotations

import numpy as np

# topics, sub-topics per topic, weights (mean, topic, sub-topic, noise), noise rank (0: full)
SETTINGS = {
    "easy": (100, 20, (0.5, 0.7, 0.7, 0.45), 64),
    "hard": (50, 10, (0.5, 0.4, 0.3, 1.0), 48),
}
CHUNK = 100_000


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def clustered(count: int, dim: int, seed: int, setting: str) -> np.ndarray:
    """[count, dim] float32 unit vectors; the cluster structure is fixed, `seed` draws the members."""
    if setting == "uniform":
        return uniform(count, dim, seed)
    topics_n, subs_n, (a, b, c, e), rank = SETTINGS[setting]
    structure = np.random.default_rng(12345)
    mean = unit(structure.standard_normal(dim))
    topics = unit(structure.standard_normal((topics_n, dim)))
    subs = unit(structure.standard_normal((topics_n * subs_n, dim)))
    basis = np.linalg.qr(structure.standard_normal((dim, rank)))[0].T if rank else None  # [rank, D]
    probs = 1.0 / np.arange(1, topics_n * subs_n + 1) ** 0.8
    rng = np.random.default_rng(seed)
    out = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, CHUNK):
        n = min(CHUNK, count - start)
        which = rng.choice(len(subs), n, p=probs / probs.sum())
        noise = rng.standard_normal((n, rank or dim))
        if basis is not None:  # mostly in the subspace, a little everywhere
            noise = noise @ basis + 0.3 * np.sqrt(rank / dim) * rng.standard_normal((n, dim))
        x = a * mean + b * topics[which // subs_n] + c * subs[which] + e * unit(noise)
        out[start : start + n] = unit(x)
    return out


def uniform(count: int, dim: int, seed: int) -> np.ndarray:
    """Uniform random unit vectors [count, dim] float32, generated in chunks to bound peak memory."""
    rng = np.random.default_rng(seed)
    out = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, CHUNK):
        chunk = rng.standard_normal((min(CHUNK, count - start), dim), dtype=np.float32)
        out[start : start + len(chunk)] = unit(chunk)
    return out
