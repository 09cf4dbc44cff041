"""train: deterministic on CPU for a seed, tracked in MLflow, every loss trains, clear missing-input error."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import isolate_mlflow, tiny_cfg

from pipeline.config import parse
from pipeline.errors import ArtganError

N_IMAGES, SIZE = 64, 16


@pytest.fixture(scope="module")
def mlflow_dir(tmp_path_factory) -> Path:
    """One tracking store for the module: each run is looked up by its own id."""
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture
def processed(tmp_path, monkeypatch, mlflow_dir) -> Path:
    """A tiny images.npy where preprocess would put it (no Inception needed)."""
    isolate_mlflow(monkeypatch, tmp_path, mlflow_dir)
    d = tmp_path / "data" / "processed"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.save(d / "images.npy", rng.integers(0, 256, (N_IMAGES, SIZE, SIZE, 3), dtype=np.uint8))
    return d


@pytest.fixture(autouse=True)
def _restore_torch_globals():
    # train switches on deterministic algorithms for the process; leave other tests as they were
    before = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    yield
    torch.use_deterministic_algorithms(before)
    torch.set_num_threads(threads)


def train(tmp_path: Path, name: str, **overrides) -> tuple[dict, Path, Path]:
    from pipeline.stages import train as stage

    train_over = {"out_dir": str(tmp_path / name / "models"), **overrides.pop("train", {})}
    cfg = parse(tiny_cfg(tmp_path, train=train_over, reports_dir=str(tmp_path / name / "reports"), **overrides))
    figures = stage.run(cfg)
    return figures, Path(cfg.train.out_dir), Path(cfg.reports_dir)


def load_ckpt(out_dir: Path) -> dict:
    return torch.load(out_dir / "checkpoint.pt", map_location="cpu", weights_only=True)


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_is_bitwise_reproducible_and_seeded(processed, tmp_path):
    _, out1, _ = train(tmp_path, "a")
    _, out2, _ = train(tmp_path, "b")
    _, out3, _ = train(tmp_path, "c", train={"seed": 1})
    c1, c2, c3 = load_ckpt(out1), load_ckpt(out2), load_ckpt(out3)
    assert same_weights(c1["generator"], c2["generator"])
    assert same_weights(c1["discriminator"], c2["discriminator"])
    assert not same_weights(c1["generator"], c3["generator"])
    assert c1["step"] == 6
    # training moved the weights away from the seed's initialisation
    from pipeline.models import build

    torch.manual_seed(0)
    g0, _ = build("dcgan", SIZE, 16, 8, 8)
    assert not same_weights(g0.state_dict(), c1["generator"])


def test_training_is_tracked_in_mlflow_and_writes_curves(processed, tmp_path):
    from pipeline.tracking import run_data

    figures, out, reports = train(tmp_path, "run", train={"loss": "hinge"})
    run_id = json.loads((out / "mlflow_run.json").read_text())["run_id"]
    assert figures["run_id"] == run_id
    assert load_ckpt(out)["mlflow_run_id"] == run_id

    data = run_data(run_id)
    assert data["status"] == "FINISHED"
    assert data["params"]["train.loss"] == "hinge"
    assert data["params"]["validate.min_images"] == "10"
    assert data["params"]["data.image_size"] == str(SIZE)
    for key in ("loss_d", "loss_g"):
        assert key in data["metrics"] and math.isfinite(data["metrics"][key])
    assert data["metrics"]["loss_d"] == pytest.approx(figures["loss_d"])
    assert data["tags"].get("git_commit")
    assert data["tags"]["stage"] == "train"

    with open(reports / "train_curves.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {"step", "loss_d", "loss_g"} <= set(rows[0])
    assert [int(r["step"]) for r in rows] == [2, 4, 6]  # log_every 2 over 6 steps
    assert all(math.isfinite(float(r["loss_d"])) and math.isfinite(float(r["loss_g"])) for r in rows)
    assert float(rows[-1]["loss_d"]) == pytest.approx(figures["loss_d"])


@pytest.mark.parametrize("loss", ["bce", "ns", "hinge"])
def test_every_loss_trains_to_a_finite_loss(processed, tmp_path, loss):
    figures, out, _ = train(tmp_path, loss, train={"loss": loss, "steps": 3, "log_every": 1, "sample_every": 3})
    assert figures["steps"] == 3
    assert math.isfinite(figures["loss_d"]) and math.isfinite(figures["loss_g"])
    ckpt = load_ckpt(out)
    assert ckpt["config"]["train"]["loss"] == loss
    assert all(torch.isfinite(v).all() for v in ckpt["generator"].values() if v.is_floating_point())


def test_checkpoint_reloads_as_a_generator(processed, tmp_path):
    from pipeline.stages.train import load_generator, to_uint8

    _, out, _ = train(tmp_path, "g", train={"steps": 2})
    cfg = parse(tiny_cfg(tmp_path, train={"out_dir": str(out)}))
    G, z_dim = load_generator(cfg)
    assert z_dim == 16 and not G.training
    with torch.no_grad():
        imgs = to_uint8(G(torch.randn(3, z_dim)))
    assert imgs.shape == (3, SIZE, SIZE, 3) and imgs.dtype == torch.uint8


def test_missing_processed_data_says_to_run_preprocess(tmp_path, monkeypatch, mlflow_dir):
    from pipeline.stages import train as stage

    isolate_mlflow(monkeypatch, tmp_path, mlflow_dir)
    cfg = parse(tiny_cfg(tmp_path, data={"processed_dir": str(tmp_path / "nowhere")}))
    with pytest.raises(ArtganError, match="artgan preprocess"):
        stage.run(cfg)
    assert not (tmp_path / "models" / "checkpoint.pt").exists()


def test_image_size_mismatch_says_to_rerun_preprocess(processed, tmp_path):
    from pipeline.stages import train as stage

    cfg = parse(tiny_cfg(tmp_path, data={"image_size": 32}))
    with pytest.raises(ArtganError, match="artgan preprocess"):
        stage.run(cfg)


def test_batch_larger_than_the_dataset_is_a_clear_error(processed, tmp_path):
    from pipeline.stages import train as stage

    cfg = parse(tiny_cfg(tmp_path, train={"batch_size": N_IMAGES + 1}))
    with pytest.raises(ArtganError, match="train.batch_size"):
        stage.run(cfg)
