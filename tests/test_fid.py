"""FID and KID maths against closed forms, scipy, and explicit loops."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from pipeline.metrics.fid import Reference, frechet_distance, statistics, trace_sqrt_product
from pipeline.metrics.kid import kid, mmd2_unbiased


def random_spd(d: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def scipy_fid(mu1, s1, mu2, s2) -> float:
    """The reference formula with scipy's general matrix square root (real part)."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


# ---- statistics ------------------------------------------------------------------------------------


def test_statistics_are_mean_and_unbiased_covariance():
    x = np.random.default_rng(0).normal(size=(30, 5)).astype(np.float32)
    mu, sigma = statistics(x)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    assert mu.shape == (5,) and sigma.shape == (5, 5)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(mu, x64.mean(axis=0), rtol=1e-12)
    centred = x64 - x64.mean(axis=0)
    np.testing.assert_allclose(sigma, centred.T @ centred / (len(x) - 1), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(sigma, np.cov(x64, rowvar=False), rtol=1e-12)


@pytest.mark.parametrize("shape", [(1, 4), (4,), (2, 3, 4)])
def test_statistics_reject_too_few_rows_or_wrong_rank(shape):
    with pytest.raises(ValueError):
        statistics(np.zeros(shape))


# ---- Fréchet distance ------------------------------------------------------------------------------


def test_diagonal_covariances_match_the_per_dimension_closed_form():
    rng = np.random.default_rng(1)
    m1, m2 = rng.normal(size=6), rng.normal(size=6)
    v1, v2 = rng.uniform(0.1, 3.0, size=6), rng.uniform(0.1, 3.0, size=6)
    expected = np.sum((m1 - m2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    got = frechet_distance(m1, np.diag(v1), m2, np.diag(v2))
    assert got == pytest.approx(expected, rel=1e-10)


def test_one_dimensional_gaussians():
    # N(0, 1) vs N(3, 4): 9 + 1 + 4 - 2*2 = 10
    got = frechet_distance(np.array([0.0]), np.array([[1.0]]), np.array([3.0]), np.array([[4.0]]))
    assert got == pytest.approx(10.0, rel=1e-12)


@pytest.mark.parametrize("c", [0.25, 2.0, 9.0])
def test_scaled_full_covariance_matches_the_closed_form(c):
    d = 64
    s = random_spd(d, seed=2)
    rng = np.random.default_rng(3)
    m1, m2 = rng.normal(size=d), rng.normal(size=d)
    expected = np.sum((m1 - m2) ** 2) + (1 - np.sqrt(c)) ** 2 * np.trace(s)
    got = frechet_distance(m1, s, m2, c * s)
    assert got == pytest.approx(expected, rel=1e-6)


def test_full_covariances_match_scipy_sqrtm():
    d = 32
    s1, s2 = random_spd(d, 4), random_spd(d, 5)
    rng = np.random.default_rng(6)
    m1, m2 = rng.normal(size=d), rng.normal(size=d)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(scipy_fid(m1, s1, m2, s2), rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rank_deficient_covariances_are_finite_and_match_references(seed):
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=(10, 64))
    x2 = rng.normal(size=(10, 64)) * 1.5 + 0.3
    (m1, s1), (m2, s2) = statistics(x1), statistics(x2)
    assert np.linalg.matrix_rank(s1) < 64
    got = frechet_distance(m1, s1, m2, s2)
    assert np.isfinite(got) and got >= 0
    assert got == pytest.approx(scipy_fid(m1, s1, m2, s2), rel=1e-6)
    # exact reference: with S = A Aᵀ, Tr((S1 S2)^½) is the nuclear norm of A1ᵀ A2 (10×10)
    a1 = (x1 - m1).T / np.sqrt(len(x1) - 1)
    a2 = (x2 - m2).T / np.sqrt(len(x2) - 1)
    nuclear = np.linalg.svd(a1.T @ a2, compute_uv=False).sum()
    exact = np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * nuclear
    assert got == pytest.approx(exact, rel=1e-6)
    assert trace_sqrt_product(s1, s2) == pytest.approx(nuclear, rel=1e-6)


def test_identical_statistics_give_zero():
    d = 64
    s = random_spd(d, 7)
    mu = np.random.default_rng(8).normal(size=d)
    assert 0 <= frechet_distance(mu, s, mu, s) < 1e-8 * np.trace(s)  # never below 0, as rounding would leave it


def test_identical_rank_deficient_statistics_give_zero():
    mu, s = statistics(np.random.default_rng(9).normal(size=(10, 64)))
    assert 0 <= frechet_distance(mu, s, mu, s) < 1e-6 * np.trace(s)


def test_frechet_distance_is_symmetric():
    s1, s2 = random_spd(16, 10), random_spd(16, 11)
    m1, m2 = np.zeros(16), np.ones(16)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(frechet_distance(m2, s2, m1, s1), rel=1e-9)


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# ---- KID -------------------------------------------------------------------------------------------


def mmd2_by_loops(x: list[list[float]], y: list[list[float]]) -> float:
    d = len(x[0])

    def k(a, b):
        return (sum(ai * bi for ai, bi in zip(a, b)) / d + 1) ** 3

    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return kxx + kyy - 2 * kxy


def test_mmd2_matches_an_explicit_double_loop():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(6, 3)) + 0.5
    assert mmd2_unbiased(x, y) == pytest.approx(mmd2_by_loops(x.tolist(), y.tolist()), abs=1e-10, rel=1e-10)


def test_mmd2_is_near_zero_for_one_distribution_and_large_for_shifted_samples():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
    shifted = rng.normal(size=(200, 8)) + 1.0
    same = mmd2_unbiased(x, y)
    far = mmd2_unbiased(x, shifted)
    assert abs(same) < 0.1
    assert far > 1.0
    assert far > 50 * abs(same)


def test_mmd2_of_a_sample_against_itself_is_the_unbiased_negative_cross_term():
    x = np.random.default_rng(2).normal(size=(7, 4))
    # identical samples: the unbiased estimate is not exactly 0, but matches the loop definition
    assert mmd2_unbiased(x, x) == pytest.approx(mmd2_by_loops(x.tolist(), x.tolist()), abs=1e-10)


def test_kid_is_seeded_and_uses_at_most_the_smaller_set():
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(40, 6)), rng.normal(size=(30, 6)) + 0.5
    a = kid(real, fake, subsets=5, subset_size=1000, seed=4)
    b = kid(real, fake, subsets=5, subset_size=1000, seed=4)
    assert a == b
    mean, std = a
    assert mean > 0 and std >= 0
    # one subset of all 30 fakes and 30 of the reals, drawn as kid draws them
    g = np.random.default_rng(4)
    ri, fi = g.choice(40, 30, replace=False), g.choice(30, 30, replace=False)
    assert kid(real, fake, subsets=1, subset_size=1000, seed=4) == (
        pytest.approx(mmd2_unbiased(real[ri], fake[fi])),
        0.0,
    )


def test_kid_is_the_mean_and_std_of_the_subsets_mmd2():
    rng = np.random.default_rng(5)
    real, fake = rng.normal(size=(40, 6)), rng.normal(size=(30, 6)) + 0.3
    g = np.random.default_rng(6)
    vals = []
    for _ in range(4):  # subsets of 12 rows of each set, drawn as kid draws them (real first, without replacement)
        ri, fi = g.choice(40, 12, replace=False), g.choice(30, 12, replace=False)
        vals.append(mmd2_by_loops(real[ri].tolist(), fake[fi].tolist()))
    mean = sum(vals) / 4
    std = (sum((v - mean) ** 2 for v in vals) / 4) ** 0.5  # population std (ddof 0), as torch-fidelity reports
    assert std > 0
    got = kid(real, fake, subsets=4, subset_size=12, seed=6)
    assert got == (pytest.approx(mean, rel=1e-9), pytest.approx(std, rel=1e-9))


def test_kid_needs_two_samples():
    with pytest.raises(ValueError):
        kid(np.zeros((1, 3)), np.zeros((5, 3)))


# ---- Reference: the real root once, FID of many generated sets -----------------------------------------------


@pytest.mark.parametrize("n_fake", [12, 64, 200])  # below, at and above the feature dimension (64)
def test_reference_fid_equals_the_exact_fid_of_the_features(n_fake):
    rng = np.random.default_rng(n_fake)
    real = rng.normal(size=(300, 64)) @ rng.normal(size=(64, 64)) * 0.3
    fake = rng.normal(size=(n_fake, 64)) @ rng.normal(size=(64, 64)) * 0.3 + 0.2
    (mr, sr), (mf, sf) = statistics(real), statistics(fake)
    # exact: Tr((Sr Sf)^½) is the nuclear norm of Ar^T Af with S = A A^T (as in the rank-deficient test above)
    ar, af = (real - mr).T / np.sqrt(len(real) - 1), (fake - mf).T / np.sqrt(len(fake) - 1)
    exact = np.sum((mr - mf) ** 2) + np.trace(sr) + np.trace(sf) - 2 * np.linalg.svd(ar.T @ af, compute_uv=False).sum()
    ref = Reference(mr, sr)
    assert ref.fid(fake) == pytest.approx(exact, rel=1e-7)
    assert ref.fid(fake) == pytest.approx(frechet_distance(mf, sf, mr, sr), rel=1e-6)
    assert ref.fid(fake.astype(np.float32)) == pytest.approx(ref.fid(fake), rel=1e-5)  # float32 features in


def test_reference_fid_of_the_real_features_themselves_is_zero():
    real = np.random.default_rng(3).normal(size=(100, 32))
    assert 0 <= Reference(*statistics(real)).fid(real) < 1e-8 * 32


def test_reference_refuses_features_of_another_dimension():
    ref = Reference(np.zeros(8), np.eye(8))
    with pytest.raises(ValueError, match=r"N×8 feature matrix"):
        ref.fid(np.zeros((5, 7)))
