"""bench/quality_exps.py: a recipe is summarised over seeds only when its runs are seeds: two runs of the same
params at the same seed are other code (a fix between their baselines), and their mean would mix them."""

from __future__ import annotations

from pathlib import Path

from helpers import load_script

ROOT = Path(__file__).resolve().parent.parent


def _row(name: str, seed: int, baseline: bool = False, **params) -> dict:
    changed = {**params, "train.seed": seed} if seed else dict(params)
    return {
        "name": name,
        "baseline": baseline,
        "changed": {} if baseline else changed,
        "params": {"train.seed": seed, "train.threads": 1, **params},
        "metrics": {"fid": 60.0 + seed},
    }


def test_seed_groups_take_distinct_seeds_of_one_recipe_only():
    exps = load_script(ROOT / "bench" / "quality_exps.py")
    rows = [
        _row("baseline", 0, baseline=True),
        _row("a-s0", 0, **{"train.beta2": 0.99}),
        _row("a-s1", 1, **{"train.beta2": 0.99}),
        _row("b-before-fix", 0, **{"data.label": "label"}),
        _row("b-after-fix", 0, **{"data.label": "label"}),
        _row("c", 0, **{"train.cr": 0.1}),
    ]
    groups = exps.seed_groups(rows)
    assert list(groups) == ["`train.beta2=0.99`"]  # not b: its two runs share seed 0
    (runs,) = groups.values()
    assert [r["name"] for r in runs] == ["a-s0", "a-s1"]
