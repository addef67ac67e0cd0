"""Image-quality distances between two sets of image features: Fréchet distance and KID.

Both compare feature distributions, so they are only as meaningful as the feature space: reports name it
("Fréchet distance in <model> image features"); "FID" is reserved for Inception-v3 pool features.

- Fréchet distance (Heusel et al. 2017): ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` between
  Gaussians fitted to the two sets. ``tr((S_a S_b)^(1/2))`` is computed as the sum of square roots of the
  eigenvalues of the symmetric ``S_a^(1/2) S_b S_a^(1/2)``, which has the same eigenvalues and, unlike a
  general matrix square root, is stable for the singular covariances of small sets. The estimate is
  biased upwards at small N.
- KID (Bińkowski et al. 2018): the unbiased estimate of the squared MMD with the cubic polynomial kernel
  ``k(x, y) = (x.y / d + 1)^3``, averaged over random subsets (mean and standard deviation reported).
  Unbiased, so it is the one to trust at small N (it can be slightly negative when the sets match).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clipforge.errors import DataError

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


def _features(name: str, values: np.ndarray, least: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or len(array) < least:
        raise DataError(f"{name}: need a [N, D] feature array with N >= {least}, got shape {array.shape}")
    return array


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative rounding noise clipped)."""
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_from_moments(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    """Fréchet distance between N(mu_a, cov_a) and N(mu_b, cov_b)."""
    root_a = _psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    cross = float(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum())
    diff = mu_a - mu_b
    # Non-negative in exact arithmetic; identical sets can round to -1e-15.
    return max(0.0, float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * cross))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted (unbiased covariance) to feature sets a [N, D], b [M, D]."""
    a, b = _features("frechet a", a, 2), _features("frechet b", b, 2)
    if a.shape[1] != b.shape[1]:
        raise DataError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
    return frechet_from_moments(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased squared MMD of x [n, d] and y [m, d] with the kernel ``(x.y / d + 1)^3``."""
    d = x.shape[1]
    k_xx = (x @ x.T / d + 1.0) ** 3  # [n, n]
    k_yy = (y @ y.T / d + 1.0) ** 3  # [m, m]
    k_xy = (x @ y.T / d + 1.0) ** 3  # [n, m]
    n, m = len(x), len(y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (n * (n - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())


@dataclass(frozen=True)
class KID:
    """KID over subsets: mean, standard deviation, and the subsets' settings."""

    mean: float
    std: float
    subsets: int
    subset_size: int


def kid(a: np.ndarray, b: np.ndarray, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE,
        seed: int = 0) -> KID:
    """KID of feature sets a [N, D] and b [M, D]: `polynomial_mmd2` averaged over `subsets` random pairs
    of subsets of ``min(subset_size, N, M)`` rows each (drawn without replacement, seeded). When that
    size takes both sets whole, every subset is the same pair of sets: one is computed and the result says
    ``subsets=1`` (its std of 0 is no spread, not certainty)."""
    a, b = _features("kid a", a, 2), _features("kid b", b, 2)
    size = min(subset_size, len(a), len(b))
    subsets = 1 if size == len(a) == len(b) else subsets
    rng = np.random.default_rng(seed)
    values = [polynomial_mmd2(a[rng.choice(len(a), size, replace=False)],
                              b[rng.choice(len(b), size, replace=False)]) for _ in range(subsets)]
    return KID(float(np.mean(values)), float(np.std(values)), subsets, size)
