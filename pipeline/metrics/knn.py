"""Metrics from nearest neighbours in Inception feature space: precision/recall and memorisation.

Distances are Euclidean between 2048-d pool features, computed in float64 in row blocks of at most
CELLS distances (128 MB), and reduced block by block: no step holds an N × N matrix, so memory stays flat
as the training set grows (50k training images need the same few hundred MB as 5k).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

BLOCK = 2048  # rows of a block at most
CELLS = 1 << 24  # distances a block holds at most (float64: 128 MB)


def _blocks(a: np.ndarray, b: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(start, Euclidean distances of a[start:start + m] to every row of b) for consecutive row blocks."""
    same = a is b
    a = np.asarray(a, np.float64)
    b = a if same else np.asarray(b, np.float64)
    bb = (b * b).sum(1)
    step = max(1, min(BLOCK, CELLS // max(len(b), 1)))
    for s in range(0, len(a), step):
        x = a[s : s + step]
        d2 = (x * x).sum(1)[:, None] + bb[None, :] - 2.0 * (x @ b.T)
        yield s, np.sqrt(np.clip(d2, 0, None))


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances, len(a) × len(b), float64 (clipped at 0 against rounding)."""
    out = np.empty((len(a), len(b)))
    for s, d in _blocks(a, b):
        out[s : s + len(d)] = d
    return out


def knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance of each row of x to its k-th nearest other row (itself excluded)."""
    if len(x) <= k:
        raise ValueError(f"k-NN radii with k={k} need more than {k} samples, got {len(x)}")
    out = np.empty(len(x))
    for s, d in _blocks(x, x):
        rows = np.arange(len(d))
        d[rows, s + rows] = np.inf
        out[s : s + len(d)] = np.partition(d, k - 1, axis=1)[:, k - 1]
    return out


def nearest(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row of a: the index of its nearest row of b and the distance to it."""
    index, dist = np.empty(len(a), dtype=np.int64), np.empty(len(a))
    for s, d in _blocks(a, b):
        j = d.argmin(axis=1)
        index[s : s + len(d)], dist[s : s + len(d)] = j, d[np.arange(len(d)), j]
    return index, dist


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019).

    Each set's manifold is the union of balls around its samples, each ball reaching that sample's
    k-th nearest neighbour in the same set. Precision: the fraction of generated samples inside the
    real manifold (are the samples realistic?). Recall: the fraction of real samples inside the
    generated manifold (is the variety covered?).
    """
    r_real, r_fake = knn_radii(real, k), knn_radii(fake, k)
    inside = np.zeros(len(fake), dtype=bool)  # generated sample inside the real manifold
    covered = np.zeros(len(real), dtype=bool)  # real sample inside the generated manifold
    for s, d in _blocks(fake, real):  # fake × real
        inside[s : s + len(d)] = (d <= r_real[None, :]).any(axis=1)
        covered |= (d <= r_fake[s : s + len(d), None]).any(axis=0)
    return float(inside.mean()), float(covered.mean())


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
    index, dist = nearest(fake, train)
    own = knn_radii(train, 1)[index]
    ratio = dist / np.maximum(own, 1e-12)
    return {
        "nearest": index,
        "distance": dist,
        "train_nn_distance": own,
        "ratio": ratio,
        "copy_rate": float((ratio < 1).mean()),
    }


HELDOUT_MIN_IMAGES = 4  # two halves of at least 2: each half's images have a nearest other image


def heldout_copy_rate(train: np.ndarray, seed: int = 0) -> float:
    """The copy rate a generator that draws new images from the data distribution would get: half of
    the training images, as if generated, against the other half."""
    if len(train) < HELDOUT_MIN_IMAGES:
        raise ValueError(f"a held-out copy rate needs at least {HELDOUT_MIN_IMAGES} training images, got {len(train)}")
    perm = np.random.default_rng(seed).permutation(len(train))
    half = len(train) // 2
    return memorisation(train[perm[:half]], train[perm[half:]])["copy_rate"]
