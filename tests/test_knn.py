"""Precision/recall and memorisation on hand-built feature sets whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from pipeline.metrics.knn import distances, heldout_copy_rate, knn_radii, memorisation, precision_recall


def line(*xs: float, dim: int = 5) -> np.ndarray:
    """Points on the first axis of R^dim."""
    out = np.zeros((len(xs), dim))
    out[:, 0] = xs
    return out


def test_distances_match_scipy_across_blocks(monkeypatch):
    import pipeline.metrics.knn as knn

    monkeypatch.setattr(knn, "BLOCK", 7)  # several blocks
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 16)) * 50, rng.normal(size=(11, 16)) * 50
    np.testing.assert_allclose(distances(a, b), cdist(a, b), rtol=1e-9, atol=1e-9)


def test_knn_radius_excludes_the_point_itself():
    x = line(0, 1, 3, 7)
    np.testing.assert_allclose(knn_radii(x, 1), [1, 1, 2, 4])
    np.testing.assert_allclose(knn_radii(x, 2), [3, 2, 3, 6])
    with pytest.raises(ValueError, match="more than 4"):
        knn_radii(x, 4)


def test_precision_recall_by_hand():
    real = line(0, 1, 2, 3, 4, 5, 6, 7, 8, 9)  # k=1 radii: 1 everywhere
    fake = line(0.5, 100)  # 0.5 lies in the real manifold, 100 does not; fake radii (k=1): 99.5 each
    precision, recall = precision_recall(real, fake, k=1)
    assert precision == 0.5
    assert recall == 1.0  # every real point is within 99.5 of 0.5 (or of 100)
    fake = line(0.5, 1.5, 200, 201)  # fake radii (k=1): 1 each; the far pair covers no real point
    precision, recall = precision_recall(real, fake, k=1)
    assert precision == 0.5
    assert recall == pytest.approx(3 / 10)  # 0, 1, 2 lie within 1 of 0.5 or 1.5


def test_identical_sets_have_full_precision_and_recall_and_far_sets_none():
    x = np.random.default_rng(1).normal(size=(200, 8))
    assert precision_recall(x, x.copy(), k=3) == (1.0, 1.0)
    assert precision_recall(x, x + 1000, k=3) == (0.0, 0.0)


def test_memorisation_flags_samples_closer_than_training_images_are_to_each_other():
    train = line(0, 10, 30)  # nearest-other-training distances: 10, 10, 20
    fake = line(0.5, 18, 45)
    m = memorisation(train, fake)
    np.testing.assert_array_equal(m["nearest"], [0, 1, 2])
    np.testing.assert_allclose(m["distance"], [0.5, 8, 15])
    np.testing.assert_allclose(m["ratio"], [0.05, 0.8, 0.75])
    assert m["copy_rate"] == 1.0
    m = memorisation(train, line(-20, 55))
    np.testing.assert_allclose(m["ratio"], [2.0, 1.25])
    assert m["copy_rate"] == 0.0


def test_a_copying_generator_is_far_above_the_held_out_rate():
    rng = np.random.default_rng(2)
    train = rng.normal(size=(400, 64))
    new = rng.normal(size=(200, 64))  # new draws from the same distribution
    copies = train[:200] + rng.normal(scale=0.01, size=(200, 64))
    base = heldout_copy_rate(train, seed=0)
    assert memorisation(train, copies)["copy_rate"] == 1.0
    assert abs(memorisation(train, new)["copy_rate"] - base) < 0.25
    assert base < 0.9


def test_every_metric_is_the_same_whatever_the_block_size(monkeypatch):
    """Large training sets are reduced in row blocks (memory stays flat): blocks of 2 rows give what one block gives."""
    import pipeline.metrics.knn as knn

    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(41, 12)), rng.normal(size=(23, 12)) * 1.1 + 0.1

    def everything():
        mem = memorisation(real, fake)
        return (
            knn_radii(real, 3),
            precision_recall(real, fake, k=3),
            mem["nearest"],
            mem["distance"],
            mem["ratio"],
            mem["copy_rate"],
        )

    whole = everything()
    monkeypatch.setattr(knn, "CELLS", 2 * len(real))  # blocks of 2 rows
    blocked = everything()
    np.testing.assert_allclose(blocked[0], whole[0], rtol=1e-12)
    assert blocked[1] == whole[1] and np.array_equal(blocked[2], whole[2]) and blocked[5] == whole[5]
    np.testing.assert_allclose(blocked[3], whole[3], rtol=1e-12)
    np.testing.assert_allclose(blocked[4], whole[4], rtol=1e-12)
    # and against scipy: radii and nearest neighbours by brute force
    d = cdist(real, real)
    np.fill_diagonal(d, np.inf)
    np.testing.assert_allclose(blocked[0], np.sort(d, axis=1)[:, 2], rtol=1e-9)
    assert np.array_equal(blocked[2], cdist(fake, real).argmin(axis=1))
