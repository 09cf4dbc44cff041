"""bench/gpu_recipes.py: the GPU recipes docs/training.md shows are the ones bench/gpu_kit.sh runs, each is a valid
set of params, and `run` trains a recipe through the train stage and draws its grid (here on the CPU, 2 steps)."""

from __future__ import annotations

import contextlib
import csv
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import load_script
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def _module():
    return load_script(ROOT / "bench" / "gpu_recipes.py")


def test_docs_show_every_recipe_exactly_as_the_kit_runs_it():
    mod = _module()
    doc = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    assert set(mod.RECIPES) == {"dcgan-64", "resnet-128", "fastgan-128"}
    for name in mod.RECIPES:
        assert mod.command(name) in doc, f"docs/training.md lacks {name}: paste `python bench/gpu_recipes.py show`"
    assert "bench/gpu_recipes.py run" in (ROOT / "bench" / "gpu_kit.sh").read_text()


@pytest.mark.parametrize("name", ["dcgan-64", "resnet-128", "fastgan-128"])
def test_every_recipe_is_valid_params_for_a_model_of_its_size(name):
    from pipeline.config import load, parse
    from pipeline.models import build

    mod = _module()
    cfg = parse(mod.apply(load(ROOT / "params.yaml").model_dump(by_alias=True), mod.RECIPES[name]))
    size = int(name.split("-")[1])
    assert cfg.data.image_size == size and cfg.model.arch == name.split("-")[0]
    assert cfg.fetch.render_size >= size  # OpenMoji rendered at least that large
    G, D = build(cfg.model.arch, size, cfg.model.z_dim, 4, 4)  # the layout at this size (narrow: a quick build)
    assert G(torch.randn(2, cfg.model.z_dim)).shape == (2, 3, size, size)


@pytest.mark.slow
def test_run_trains_a_recipe_through_the_train_stage_and_draws_its_grid(tmp_path, monkeypatch, capsys):
    import pipeline.tracking as tracking
    from pipeline.training.loop import NullRun

    mod = _module()
    repo = tmp_path / "repo"
    (repo / "data" / "raw" / "images").mkdir(parents=True)
    (repo / "data" / "processed").mkdir(parents=True)
    shutil.copy(ROOT / "params.yaml", repo / "params.yaml")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(24):
        rel = f"images/{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (80, 96, 4), dtype=np.uint8), "RGBA").save(repo / "data" / "raw" / rel)
        paths.append(rel)
    with open(repo / "data" / "processed" / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "name"])
        w.writerows([p, Path(p).stem] for p in paths)
    monkeypatch.setattr(mod, "REPO", repo)
    small = [o for o in mod.RECIPES["dcgan-64"] if not o.startswith(("model.", "train.batch_size"))]
    monkeypatch.setitem(
        mod.RECIPES, "dcgan-64", small + ["model.g_channels=4", "model.d_channels=4", "train.batch_size=8"]
    )

    def no_tracking():  # bench/cuda_check's null run, undone after the test
        monkeypatch.setattr(tracking, "new_run", lambda *a, **k: contextlib.nullcontext(NullRun()))
        monkeypatch.setattr(tracking, "run_exists", lambda run_id: False)
        monkeypatch.setattr(tracking, "tracking_uri", lambda: "none")

    monkeypatch.setattr(mod, "disable_tracking", no_tracking)
    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    monkeypatch.setattr(sys, "argv", ["gpu_recipes.py", "run", "dcgan-64", "--steps", "2", "--device", "cpu"])
    mod.main()
    table = capsys.readouterr().out.splitlines()
    row = next(line for line in table if line.startswith("| dcgan-64 |")).split("|")
    assert row[2].strip() == "cpu" and row[3].strip() == "2"
    # the full recipe's 30,000 steps of 8 images at the measured speed
    img_s, minutes = float(row[4]), float(row[5])
    assert minutes == pytest.approx(30000 * 8 / img_s / 60, rel=0.05)  # img/s printed to 0.1
    grid = Image.open(tmp_path / "out" / "dcgan-64.png")
    assert grid.size == (8 * 66 + 2, 8 * 66 + 2)  # 8×8 tiles of 64 px, 2 px apart
