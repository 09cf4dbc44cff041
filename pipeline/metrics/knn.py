"""Metrics from nearest neighbours in Inception feature space: precision/recall and memorisation.

Distances are Euclidean between 2048-d pool features, computed in float64 in blocks (so 10k × 10k
fits in a few hundred MB).
"""
from __future__ import annotations

import numpy as np

BLOCK = 2048


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances, len(a) × len(b), float64 (clipped at 0 against rounding)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    bb = (b * b).sum(1)
    out = np.empty((len(a), len(b)))
    for s in range(0, len(a), BLOCK):
        x = a[s : s + BLOCK]
        d2 = (x * x).sum(1)[:, None] + bb[None, :] - 2.0 * (x @ b.T)
        out[s : s + BLOCK] = np.sqrt(np.clip(d2, 0, None))
    return out


def knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance of each row of x to its k-th nearest other row (itself excluded)."""
    if len(x) <= k:
        raise ValueError(f"k-NN radii with k={k} need more than {k} samples, got {len(x)}")
    d = distances(x, x)
    np.fill_diagonal(d, np.inf)
    return np.partition(d, k - 1, axis=1)[:, k - 1]


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019).

    Each set's manifold is the union of balls around its samples, each ball reaching that sample's
    k-th nearest neighbour in the same set. Precision: the fraction of generated samples inside the
    real manifold (are the samples realistic?). Recall: the fraction of real samples inside the
    generated manifold (is the variety covered?).
    """
    d = distances(fake, real)  # fake × real
    precision = float((d <= knn_radii(real, k)[None, :]).any(axis=1).mean())
    recall = float((d <= knn_radii(fake, k)[:, None]).any(axis=0).mean())
    return precision, recall


def memorisation(train: np.ndarray, fake: np.ndarray) -> dict[str, np.ndarray | float]:
    """How close each generated sample is to the training set, against how close training images are
    to each other.

    For sample s with nearest training image t, `ratio` = d(s, t) / d(t, t'), where t' is t's nearest
    other training image. ratio < 1 means s is closer to t than any training image is: a likely copy.
    `copy_rate` is the fraction of samples with ratio < 1 (the "authenticity" test of Alaa et al., 2022).
    Even new images from the data distribution pass it often (in high dimensions about as far from
    their nearest training image as training images are from each other), so read it beside
    `heldout_copy_rate`, the same rate for real images held out of the training features.
    """
    d = distances(fake, train)
    nearest = d.argmin(axis=1)
    dist = d[np.arange(len(fake)), nearest]
    own = knn_radii(train, 1)[nearest]
    ratio = dist / np.maximum(own, 1e-12)
    return {"nearest": nearest, "distance": dist, "train_nn_distance": own, "ratio": ratio,
            "copy_rate": float((ratio < 1).mean())}


def heldout_copy_rate(train: np.ndarray, seed: int = 0) -> float:
    """The copy rate a generator that draws new images from the data distribution would get: half of
    the training images, as if generated, against the other half."""
    if len(train) < 4:
        raise ValueError(f"a held-out copy rate needs at least 4 training images, got {len(train)}")
    perm = np.random.default_rng(seed).permutation(len(train))
    half = len(train) // 2
    return memorisation(train[perm[:half]], train[perm[half:]])["copy_rate"]
