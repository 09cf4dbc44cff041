"""bench/translate_gap.py: it pairs each input with its own target row, and its retrieval reference never lets a
training pair look up its own colouring (which would score 0 and hide what retrieval really does)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import load_script

ROOT = Path(__file__).resolve().parent.parent


def test_pairs_follow_the_target_column_and_retrieval_skips_itself(tmp_path):
    gap = load_script(ROOT / "bench" / "translate_gap.py")
    rng = np.random.default_rng(0)
    inputs = rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    targets = rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    order = [3, 0, 4, 1, 2]  # input i's target is images.npy row order[i]
    np.save(tmp_path / "inputs.npy", inputs)
    np.save(tmp_path / "images.npy", targets)
    split = ["train", "train", "holdout", "train", "holdout"]
    paths = [f"inputs/images/{i}.png" for i in range(5)]
    pd.DataFrame({"path": paths, "split": split, "target": order}).to_csv(tmp_path / "inputs.csv", index=False)

    pairs = gap.load_pairs(tmp_path)
    x, y = pairs["train"]
    assert (x == inputs[[0, 1, 3]]).all() and (y == targets[[3, 0, 1]]).all()
    hx, hy = pairs["holdout"]
    assert (hx == inputs[[2, 4]]).all() and (hy == targets[[4, 2]]).all()

    # training inputs 0 and 2 are almost identical: each must retrieve the other's target, never its own
    x[2] = np.clip(x[0].astype(int) + 1, 0, 255)
    got = gap.retrieval(x, y, x, k=1, own=np.arange(3))
    assert (got[0] == y[2]).all() and (got[2] == y[0]).all()
    # without `own` (held-out queries), a query equal to a training input gets that input's target
    assert (gap.retrieval(x, y, x[1:2], k=1, own=None)[0] == y[1]).all()
    # k = 3: the per-pixel median of all three training targets
    med = gap.retrieval(x, y, hx, k=3, own=None)
    assert (med == np.median(y, axis=0).round().astype(np.uint8)).all()
    assert gap.l1(hx, hx) == 0 and abs(gap.l1(np.zeros((1, 1)), np.full((1, 1), 255)) - 1) < 1e-9


def test_the_floor_gives_each_group_of_identical_inputs_its_targets_median_and_a_lone_input_its_own():
    gap = load_script(ROOT / "bench" / "translate_gap.py")
    x = np.zeros((5, 2, 2, 3), dtype=np.uint8)
    x[3] = 7  # inputs 0, 1, 2 and 4 are identical (one outline, four colourings); input 3 is alone
    y = np.stack([np.full((2, 2, 3), v, dtype=np.uint8) for v in (0, 10, 30, 200, 12)])
    best = gap.ambiguity_floor(x, y)
    assert (best[[0, 1, 2, 4]] == 11).all() and (best[3] == 200).all()  # the median of 0, 10, 12, 30: 11
    # the group's L1 to its median is the least any one output can reach: here (11 + 1 + 19 + 1) / 5 pairs
    assert abs(gap.l1(best, y) - (11 + 1 + 19 + 1) / 5 / 255) < 1e-9
    for other in (0, 10, 12, 30, 11.5, 20):  # no other constant for the group does better
        alt = best.copy()
        alt[[0, 1, 2, 4]] = other
        assert gap.l1(alt, y) >= gap.l1(best, y) - 1e-12
    assert gap.identical_inputs(x) == (1, 4)


def test_the_multiply_reference_meets_targets_under_the_ink_and_misses_only_what_is_brighter():
    gap = load_script(ROOT / "bench" / "translate_gap.py")
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    layer = rng.random((3, 8, 8, 3))
    y = np.floor(x * layer).astype(np.uint8)  # a colour layer under the ink: the multiply blend's own kind
    assert np.abs(gap.multiply_best(x, y) - y).max() <= 1.0
    ink, paper = np.zeros((1, 2, 2, 3), np.uint8), np.full((1, 2, 2, 3), 255, np.uint8)
    assert gap.multiply_best(ink, paper).max() == 0  # black stays black: white over ink is out of its reach
    assert gap.same_pixels(x, x) == 1 and gap.same_pixels(ink, paper) == 0
    assert gap.same_pixels(ink, ink + 16) == 1 and gap.same_pixels(ink, ink + 17) == 0


def test_the_kinds_come_from_code_point_names_and_split_the_translators_l1():
    gap = load_script(ROOT / "bench" / "translate_gap.py")
    skin, flag, own, other = gap.KINDS
    assert gap.emoji_kind("1F44B-1F3FD") == skin and gap.emoji_kind("1F9D1-1F3FF-200D-1F33E") == skin
    assert gap.emoji_kind("1F1E9-1F1EA") == flag  # two regional indicators: Germany
    assert gap.emoji_kind("1F3F4-E0067-E0062-E0073-E0063-E0074-E007F") == flag  # tags: Scotland
    assert gap.emoji_kind("E0C3") == own and gap.emoji_kind("1F600") == other
    assert gap.emoji_kind("my photo") == other and gap.emoji_kind("") == other

    x = np.zeros((4, 2, 2, 3), dtype=np.uint8)  # two skin-tone variants of one outline, a flag, a smiley
    x[2], x[3] = 50, 90
    y = np.stack([np.full((2, 2, 3), v, dtype=np.uint8) for v in (20, 40, 50, 150)])
    pred = np.stack([np.full((2, 2, 3), v, dtype=np.uint8) for v in (30, 30, 60, 120)])
    names = ["1F44B-1F3FB", "1F44B-1F3FF", "1F1E9-1F1EA", "1F600"]
    rows = {r[0]: r[1:] for r in gap.by_kind(names, x, y, pred)}
    assert own not in rows  # a kind the pairs do not hold gets no row
    n, ident, floor, got, share = rows[skin]
    assert n == 2 and ident == pytest.approx(30 / 255) and floor == pytest.approx(10 / 255)  # the median: 30
    assert got == pytest.approx(10 / 255) and share == pytest.approx(20 / (20 + 10 + 30))
    assert rows[flag] == pytest.approx((1, 0.0, 0.0, 10 / 255, 10 / 60))
    assert rows[other] == pytest.approx((1, 60 / 255, 0.0, 30 / 255, 30 / 60))


def test_the_names_follow_load_pairs_order(tmp_path):
    gap = load_script(ROOT / "bench" / "translate_gap.py")
    from pipeline.translation.pairs import holdout_rows

    split = ["holdout", "train", "holdout", "train"]
    stems = ["1F600", "1F601", "1F1E9-1F1EA", "1F44B-1F3FB"]
    rows = pd.DataFrame({"path": [f"inputs/images/{n}.png" for n in stems], "split": split, "target": [0, 1, 2, 3]})
    rows.to_csv(tmp_path / "inputs.csv", index=False)
    got = gap.split_names(tmp_path)  # no name column: the file's stem
    assert got == {"train": ["1F601", "1F44B-1F3FB"], "holdout": [stems[i] for i in holdout_rows(rows)]}
    rows.assign(name=[s.lower() for s in stems]).to_csv(tmp_path / "inputs.csv", index=False)
    assert gap.split_names(tmp_path)["train"] == ["1f601", "1f44b-1f3fb"]  # the name column when there is one


def test_the_l1_probe_learns_a_colouring_and_leaves_the_translators_norm_alone():
    """bench/translate_l1_probe.py: trained on L1 alone, its U-Net gets below identity on held-out pairs of a
    colouring it can learn (the inside of black frames painted red), for each variant; the batch-norm variant does
    not leak into the translators the pipeline builds."""
    import torch

    import pipeline.models.translators as T

    probe = load_script(ROOT / "bench" / "translate_l1_probe.py")
    rng = np.random.default_rng(0)
    n = 40
    inputs = np.full((n, 16, 16, 3), 255, np.uint8)
    for i in range(n):
        y, x = rng.integers(0, 10, 2)
        inputs[i, y : y + 6, x : x + 6] = 0  # a black frame, one pixel wide, with a white inside
        inputs[i, y + 1 : y + 5, x + 1 : x + 5] = 255
    targets = inputs.copy()
    for i in range(n):  # the inside of each frame (below its top-left ink pixel) is red in the target
        y, x = np.argwhere((inputs[i] == 0).all(-1)).min(0)
        targets[i, y + 1 : y + 5, x + 1 : x + 5] = (255, 0, 0)
    split = ["holdout" if i % 5 == 0 else "train" for i in range(n)]
    pairs = {
        s: (inputs[[i for i in range(n) if split[i] == s]], targets[[i for i in range(n) if split[i] == s]])
        for s in ("train", "holdout")
    }
    identity = float(np.abs(pairs["holdout"][0].astype(float) - pairs["holdout"][1]).mean() / 255)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the figures below are one thread's
    try:
        for variant in probe.VARIANTS:
            ((step, live, _ema, _train, parts),) = probe.probe(
                variant, pairs, steps=300, lr=5e-3, every=300, size=16, channels=8
            )
            assert step == 300 and live < 0.75 * identity, (variant, live, identity)
            assert sum(parts) == pytest.approx(live, rel=1e-4)  # the split of the L1 adds up to it
    finally:
        torch.set_num_threads(threads)
    assert T._norm(4).__class__ is torch.nn.InstanceNorm2d
