"""bench/translate_gap.py: it pairs each input with its own target row, and its retrieval reference never lets a
training pair look up its own colouring (which would score 0 and hide what retrieval really does)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
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
