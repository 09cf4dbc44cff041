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


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((S1 S2)^½) = Σ √λ(S1^½ S2 S1^½): two symmetric eigen-decompositions, no general sqrtm.

    S1^½ S2 S1^½ is symmetric positive semi-definite and similar to S1 S2, so its eigenvalues are those
    of S1 S2; rounding can push zero eigenvalues of a rank-deficient covariance slightly negative, and
    those are clipped to 0 rather than turned into imaginary parts.
    """
    w, v = np.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
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
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2))
