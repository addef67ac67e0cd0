"""Fréchet distance, KID, R-precision and CLIPScore against closed forms and reference implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg

from clipforge.errors import DataError
from clipforge.skills.alignment import clipscore, r_precision
from clipforge.skills.quality import frechet_distance, frechet_from_moments, kid, polynomial_mmd2

torch = pytest.importorskip("torch")


def _random_cov(rng: np.random.Generator, d: int) -> np.ndarray:
    factor = rng.normal(size=(d, d)) / np.sqrt(d)
    return factor @ factor.T + 0.1 * np.eye(d)


def test_frechet_matches_closed_forms() -> None:
    rng = np.random.default_rng(0)
    mu_a, mu_b = rng.normal(size=5), rng.normal(size=5)
    var_a, var_b = rng.uniform(0.2, 3.0, 5), rng.uniform(0.2, 3.0, 5)
    # Diagonal covariances commute: tr(S_a + S_b - 2 (S_a S_b)^1/2) = sum (sqrt(a) - sqrt(b))^2.
    want = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    assert frechet_from_moments(mu_a, np.diag(var_a), mu_b, np.diag(var_b)) == pytest.approx(want, rel=1e-12)
    cov, mu = _random_cov(rng, 6), mu_a[:1].repeat(6)
    assert frechet_from_moments(mu, cov, mu, cov) == pytest.approx(0, abs=1e-9)
    # Scaled copies: S_b = c^2 S_a gives (1 - c)^2 tr(S_a).
    zero = np.zeros(6)
    assert frechet_from_moments(zero, cov, zero, 4 * cov) == pytest.approx(np.trace(cov), rel=1e-9)


def test_frechet_of_gaussian_samples_approaches_the_population_value() -> None:
    rng = np.random.default_rng(1)
    d, n = 4, 200_000
    cov_a, cov_b = _random_cov(rng, d), _random_cov(rng, d)
    mu_b = np.full(d, 0.5)
    a = rng.multivariate_normal(np.zeros(d), cov_a, size=n)
    b = rng.multivariate_normal(mu_b, cov_b, size=n)
    want = frechet_from_moments(np.zeros(d), cov_a, mu_b, cov_b)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    assert want == pytest.approx(d * 0.25 + np.trace(cov_a + cov_b - 2 * root), rel=1e-9)
    assert frechet_distance(a, b) == pytest.approx(want, rel=0.02)


def test_frechet_matches_scipy_and_torchmetrics_on_random_features() -> None:
    fid_module = pytest.importorskip("torchmetrics.image.fid")
    rng = np.random.default_rng(2)
    a = rng.normal(size=(300, 24))
    b = rng.normal(0.2, 1.0, size=(250, 24)) @ rng.normal(size=(24, 24)) * 0.4
    ours = frechet_distance(a, b)
    mu_a, mu_b, cov_a, cov_b = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    scipy_value = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * root)
    assert ours == pytest.approx(scipy_value, rel=1e-3)

    class Identity(torch.nn.Module):
        num_features = 24

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    metric = fid_module.FrechetInceptionDistance(feature=Identity())
    metric.set_dtype(torch.float64)
    metric.update(torch.from_numpy(a), real=True)
    metric.update(torch.from_numpy(b), real=False)
    assert ours == pytest.approx(float(metric.compute()), rel=1e-3)


def test_kid_matches_torchmetrics() -> None:
    kid_module = pytest.importorskip("torchmetrics.image.kid")
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(120, 16)), rng.normal(0.3, 1.3, size=(120, 16))

    class Identity(torch.nn.Module):
        num_features = 16

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    # One subset of every row: the unbiased MMD of the full sets, whatever the subset order.
    metric = kid_module.KernelInceptionDistance(feature=Identity(), subsets=1, subset_size=120)
    metric.update(torch.from_numpy(a), real=True)
    metric.update(torch.from_numpy(b), real=False)
    reference = float(metric.compute()[0])
    assert polynomial_mmd2(a, b) == pytest.approx(reference, rel=1e-3)
    whole = kid(a, b, subsets=3, subset_size=500)
    assert whole.mean == pytest.approx(reference, rel=1e-3) and (whole.subsets, whole.std) == (1, 0.0)


def _cubic_kernel_mean(mu_x: np.ndarray, var_x: float, mu_y: np.ndarray, var_y: float) -> float:
    """E[(x.y / d + 1)^3] for independent x ~ N(mu_x, var_x I), y ~ N(mu_y, var_y I), by moments."""
    d = len(mu_x)
    eye = np.eye(d)

    def third(mu: np.ndarray, var: float) -> np.ndarray:  # E[x_i x_j x_k] of a Gaussian
        return (np.einsum("i,j,k->ijk", mu, mu, mu) + var * (np.einsum("i,jk->ijk", mu, eye)
                + np.einsum("j,ik->ijk", mu, eye) + np.einsum("k,ij->ijk", mu, eye)))

    second_x, second_y = np.outer(mu_x, mu_x) + var_x * eye, np.outer(mu_y, mu_y) + var_y * eye
    s1 = mu_x @ mu_y  # E[x.y]
    s2 = np.trace(second_x @ second_y)  # E[(x.y)^2]
    s3 = np.einsum("ijk,ijk->", third(mu_x, var_x), third(mu_y, var_y))  # E[(x.y)^3]
    return float(s3 / d**3 + 3 * s2 / d**2 + 3 * s1 / d + 1)


def test_kid_is_unbiased_for_the_closed_form_mmd_of_gaussians() -> None:
    rng = np.random.default_rng(4)
    d = 4
    mu_x, mu_y, var_x, var_y = np.zeros(d), np.full(d, 0.5), 1.0, 1.5
    want = (_cubic_kernel_mean(mu_x, var_x, mu_x, var_x) + _cubic_kernel_mean(mu_y, var_y, mu_y, var_y)
            - 2 * _cubic_kernel_mean(mu_x, var_x, mu_y, var_y))
    x = rng.normal(mu_x, np.sqrt(var_x), size=(20_000, d))
    y = rng.normal(mu_y, np.sqrt(var_y), size=(20_000, d))
    result = kid(x, y, subsets=100, subset_size=200, seed=0)
    assert want > 0.1 and abs(result.mean - want) < 4 * result.std / np.sqrt(100)
    same = kid(x[:10_000], x[10_000:], subsets=100, subset_size=200, seed=1)
    assert abs(same.mean) < 4 * same.std / np.sqrt(100)  # zero for one distribution, not positive


def test_polynomial_mmd2_matches_a_direct_double_loop() -> None:
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(12, 5)), rng.normal(0.3, size=(9, 5))
    k = lambda u, v: (float(u @ v) / 5 + 1.0) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(12) for j in range(12) if i != j) / (12 * 11)
    yy = sum(k(y[i], y[j]) for i in range(9) for j in range(9) if i != j) / (9 * 8)
    xy = sum(k(x[i], y[j]) for i in range(12) for j in range(9)) / (12 * 9)
    assert polynomial_mmd2(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)


def test_quality_rejects_bad_shapes() -> None:
    with pytest.raises(DataError, match="feature sizes differ"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(DataError, match=r"\[N, D\]"):
        kid(np.zeros(5), np.zeros((5, 4)))


def test_clipscore_is_two_and_a_half_times_the_positive_cosine() -> None:
    images = np.array([[1.0, 0.0], [1.0, 0.0], [0.6, 0.8]])
    texts = np.array([[0.6, 0.8], [-1.0, 0.0], [0.6, 0.8]])
    assert clipscore(images, texts) == pytest.approx([1.5, 0.0, 2.5])


def test_r_precision_ranks_against_distinct_distractors() -> None:
    rng = np.random.default_rng(5)
    pool = rng.normal(size=(300, 16))
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    true = rng.integers(0, 300, size=200)
    perfect = r_precision(pool[true], true, pool, seed=0)
    assert perfect.candidates == 100 and perfect.summary() == {"mean": 1.0, "std": 0.0, "n": 200,
                                                                  "candidates": 100}
    # For other images, a hit needs all 99 distractors drawn from the texts scoring below the true one:
    # probability C(below, 99) / C(299, 99), averaged over the images.
    noise = rng.normal(size=(200, 16))
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    scores = noise @ pool.T  # [200, 300]
    below = (scores < scores[np.arange(200), true][:, None]).sum(axis=1)
    want = np.mean([math.comb(int(b), 99) / math.comb(299, 99) for b in below])
    drawn = r_precision(noise, true, pool, repeats=400, seed=1).summary()["mean"]
    assert drawn == pytest.approx(want, abs=0.004)
    # A text's own row is never its distractor: a pool of two texts gives one distractor.
    small = r_precision(pool[:2], np.array([0, 1]), pool[:2])
    assert small.candidates == 2 and small.summary()["mean"] == 1.0
    with pytest.raises(DataError, match="two distinct texts"):
        r_precision(pool[:1], np.array([0]), pool[:1])


def test_r_precision_draws_only_allowed_distractors() -> None:
    # Image 0 is text 0 but text 1 scores higher: a miss, unless text 1 may not be drawn.
    pool = np.eye(4)
    image = np.array([[0.6, 0.8, 0.0, 0.0]])
    assert r_precision(image, np.array([0]), pool).summary()["mean"] == 0.0
    allowed = np.array([[True, False, True, True]])
    ruled_out = r_precision(image, np.array([0]), pool, allowed=allowed)
    assert ruled_out.candidates == 3 and ruled_out.summary()["mean"] == 1.0
