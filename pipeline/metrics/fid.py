"""Fréchet Inception Distance from feature statistics (float64 throughout)."""

from __future__ import annotations

import numpy as np

# below this many generated images FID's upward bias is large enough to mislead (Heusel et al. use 10k+;
# 2,048 is the feature dimension, below which the sample covariance is rank-deficient)
UNBIASED_FID_SAMPLES = 2048


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of N×D features, in float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need an N×D feature matrix with N >= 2, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def sqrt_psd(sigma: np.ndarray) -> np.ndarray:
    """The symmetric square root of a positive semi-definite matrix (eigenvalues rounded below 0 clipped)."""
    w, v = np.linalg.eigh(np.asarray(sigma, np.float64))
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((S1 S2)^½) = Σ √λ(S1^½ S2 S1^½): two symmetric eigen-decompositions, no general sqrtm.

    S1^½ S2 S1^½ is symmetric positive semi-definite and similar to S1 S2, so its eigenvalues are those
    of S1 S2; rounding can push zero eigenvalues of a rank-deficient covariance slightly negative, and
    those are clipped to 0 rather than turned into imaginary parts.
    """
    root1 = sqrt_psd(sigma1)
    m = root1 @ sigma2 @ root1
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(ev, 0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||² + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^½), in float64; stable for rank-deficient S."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError(f"statistics differ in shape: {mu1.shape}/{s1.shape} vs {mu2.shape}/{s2.shape}")
    diff = mu1 - mu2
    # FID >= 0; rounding leaves identical sets a hair below it (about -1e-4 for rank-deficient ones)
    return max(0.0, float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2)))


class Reference:
    """FID against fixed real statistics, many times (the final score and every point of the FID curve).

    The real covariance's square root R is computed once. For generated features X (n×D, centred Xc),
    S_fake = Xc^T Xc / (n - 1), so R S_fake R = Y^T Y with Y = Xc R / sqrt(n - 1), whose nonzero eigenvalues
    are those of the n×n Gram matrix Y Y^T: Tr((S_real S_fake)^½) is the sum of the singular values of Y.
    Exact (the same quantity as `frechet_distance`, float64), and with n < D (a FID-curve point of a few
    hundred samples) an n×n eigen-decomposition replaces two D×D ones.
    """

    def __init__(self, mu: np.ndarray, sigma: np.ndarray):
        self.mu = np.asarray(mu, np.float64)
        self.sigma = np.asarray(sigma, np.float64)
        self.root = sqrt_psd(self.sigma)
        self.trace = float(np.trace(self.sigma))

    def fid(self, features: np.ndarray) -> float:
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or f.shape[0] < 2 or f.shape[1] != self.mu.shape[0]:
            raise ValueError(f"need an N×{self.mu.shape[0]} feature matrix with N >= 2, got shape {f.shape}")
        mu = f.mean(axis=0)
        y = (f - mu) @ self.root / np.sqrt(f.shape[0] - 1)
        gram = y @ y.T if y.shape[0] <= y.shape[1] else y.T @ y
        ev = np.linalg.eigvalsh((gram + gram.T) / 2)
        diff = mu - self.mu
        trace_fake = float(np.einsum("ij,ij->", f - mu, f - mu) / (f.shape[0] - 1))
        return max(0.0, float(diff @ diff + self.trace + trace_fake - 2.0 * np.sqrt(np.clip(ev, 0, None)).sum()))
