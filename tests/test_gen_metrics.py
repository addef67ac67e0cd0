"""Reference tests of the generation metrics: Fréchet distance vs closed forms, KID vs a direct O(n^2)
computation, R-precision on hand-built features."""

import numpy as np
import pytest
import scipy.linalg

from clipforge.generate.metrics import (
    frechet_distance,
    frechet_from_moments,
    kernel_inception_distance,
    polynomial_mmd2,
    r_precision_hits,
)


def test_frechet_of_diagonal_gaussians_is_the_closed_form() -> None:
    mu_a, mu_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    var_a, var_b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = 1.0 + 0.0 + 4.0 + sum(a + b - 2 * np.sqrt(a * b) for a, b in zip(var_a, var_b, strict=True))
    got = frechet_from_moments(mu_a, np.diag(var_a), mu_b, np.diag(var_b))
    assert got == pytest.approx(expected, rel=1e-10)  # 5 + (4 + 1 + 0) = 10


def test_frechet_of_full_covariances_matches_the_symmetric_form() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    cov_a, cov_b = x @ x.T + np.eye(4), y @ y.T + 0.1 * np.eye(4)
    mu_a, mu_b = rng.normal(size=4), rng.normal(size=4)
    root_a = scipy.linalg.sqrtm(cov_a).real
    eig = np.linalg.eigvalsh(root_a @ cov_b @ root_a)  # tr((A^1/2 B A^1/2)^1/2): another route
    expected = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b) - 2 * np.sum(np.sqrt(eig))
    assert frechet_from_moments(mu_a, cov_a, mu_b, cov_b) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_fits_sample_moments_and_is_zero_on_equal_sets() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(200, 3)), rng.normal(loc=0.5, size=(150, 3))
    moments = frechet_from_moments(a.mean(0), np.cov(a.T), b.mean(0), np.cov(b.T))
    assert frechet_distance(a, b) == pytest.approx(moments)
    assert abs(frechet_distance(a, a)) < 1e-8 and frechet_distance(a, b) > 0.5


def _direct_mmd2(a: np.ndarray, b: np.ndarray) -> float:
    d = a.shape[1]
    k = lambda x, y: (float(np.dot(x, y)) / d + 1.0) ** 3  # noqa: E731
    n, m = len(a), len(b)
    aa = sum(k(a[i], a[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    bb = sum(k(b[i], b[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    ab = sum(k(a[i], b[j]) for i in range(n) for j in range(m)) / (n * m)
    return aa + bb - 2 * ab


def test_kid_is_the_unbiased_polynomial_mmd_of_a_direct_double_loop() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(12, 5)), rng.normal(loc=0.3, size=(9, 5))
    assert polynomial_mmd2(a, b) == pytest.approx(_direct_mmd2(a, b), rel=1e-10)
    mean, std = kernel_inception_distance(a, b, subsets=1, subset_size=100)  # one subset: all rows, shuffled
    assert std == 0.0
    size_9 = _direct_mmd2(a[np.random.default_rng(0).choice(12, 9, replace=False)], b)
    assert mean == pytest.approx(size_9, rel=1e-10)


def test_kid_is_unbiased_near_zero_for_one_distribution_and_positive_for_two() -> None:
    rng = np.random.default_rng(3)
    same = kernel_inception_distance(rng.normal(size=(400, 8)), rng.normal(size=(400, 8)), 50, 100)
    shifted = kernel_inception_distance(rng.normal(size=(400, 8)), rng.normal(1.0, size=(400, 8)), 50, 100)
    assert abs(same[0]) < 3 * same[1] / np.sqrt(50) + 1e-3 and shifted[0] > 10 * same[1]


def test_r_precision_on_hand_built_features() -> None:
    # image i points at caption i, except image 2, whose own caption is beaten by caption 0
    text = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]])
    images = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    hits = r_precision_hits(images, text, distractors=3)  # every other caption is a distractor
    assert hits.tolist() == [True, True, False, True]
    tied = r_precision_hits(np.array([[1.0, 0.0]] * 4), np.array([[1.0, 0.0]] * 4), distractors=3)
    assert not tied.any()  # a tie is not a hit
    with pytest.raises(ValueError, match="distractors"):
        r_precision_hits(images, text, distractors=4)


def test_r_precision_distractors_are_other_rows() -> None:
    rng = np.random.default_rng(4)
    features = rng.normal(size=(50, 6))
    features /= np.linalg.norm(features, axis=1, keepdims=True)  # unit rows: each is closest to itself
    assert r_precision_hits(features, features, distractors=49).all()  # own row is never a distractor
