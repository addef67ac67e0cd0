"""Distribution and alignment metrics of generated images, on features of any image encoder.

- Fréchet distance: ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` between Gaussians fitted to
  the two feature sets (FID's formula; here on CLIP features). Biased upwards at small n, so compare
  only sets of equal size, beside the real-vs-real floor.
- KID (Bińkowski et al. 2018): the unbiased estimate of the squared MMD with the cubic polynomial kernel
  ``k(x, y) = (x.y / d + 1)^3``, averaged over random subsets; its std over subsets is reported with it.
- R-precision (Xu et al. 2018, AttnGAN): an image counts as a hit when its own caption scores strictly
  higher than every one of `distractors` random captions of other images.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg


def frechet_from_moments(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray
                         ) -> float:
    """Fréchet distance of N(mu_a, cov_a) and N(mu_b, cov_b)."""
    root = scipy.linalg.sqrtm(cov_a @ cov_b)
    root = np.real(root)  # round-off gives (S_a S_b)^(1/2) a tiny imaginary part
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(root))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance of the Gaussians fitted to feature sets a [N, D] and b [M, D]."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return frechet_from_moments(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def polynomial_mmd2(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased squared MMD of a [N, D] and b [M, D] under the cubic polynomial kernel."""
    dim = a.shape[1]
    k_aa = (a @ a.T / dim + 1.0) ** 3  # [N, N]
    k_bb = (b @ b.T / dim + 1.0) ** 3  # [M, M]
    k_ab = (a @ b.T / dim + 1.0) ** 3  # [N, M]
    n, m = len(a), len(b)
    within_a = (k_aa.sum() - np.trace(k_aa)) / (n * (n - 1))  # the diagonal would bias it upwards
    within_b = (k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
    return float(within_a + within_b - 2.0 * k_ab.mean())


def kernel_inception_distance(a: np.ndarray, b: np.ndarray, subsets: int = 100, subset_size: int = 250,
                              seed: int = 0) -> tuple[float, float]:
    """KID of feature sets a and b: (mean, std) of `polynomial_mmd2` over `subsets` random subsets of
    `subset_size` rows of each (drawn without replacement within a subset; capped at the set sizes)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    size = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    values = [polynomial_mmd2(a[rng.choice(len(a), size, replace=False)],
                              b[rng.choice(len(b), size, replace=False)]) for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


def r_precision_hits(image_features: np.ndarray, text_features: np.ndarray, distractors: int = 99,
                     seed: int = 0) -> np.ndarray:
    """Per image, whether its caption (same row of `text_features`) beats `distractors` random captions
    of other rows on the dot product (ties are misses), [N] bool."""
    n = len(image_features)
    if not 1 <= distractors < n:
        raise ValueError(f"r-precision needs 1 <= distractors < {n} captions, got {distractors}")
    rng = np.random.default_rng(seed)
    others = np.stack([rng.choice(n - 1, distractors, replace=False) for _ in range(n)])  # [N, R]
    others += others >= np.arange(n)[:, None]  # skip each image's own row
    own = np.einsum("nd,nd->n", image_features, text_features)  # [N]
    rivals = np.einsum("nd,nrd->nr", image_features, text_features[others])  # [N, R]
    return np.asarray(own > rivals.max(axis=1))
