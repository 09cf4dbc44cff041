"""End to end: the real `dvc repro` on tiny params in a temporary copy of the repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import copy_project

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.e2e  # `pytest -m "not e2e"` for the quick unit suite

TINY = {
    "data": {"image_size": 16, "max_images": 256},
    "validate": {"min_images": 100},
    "preprocess": {"fid_real_images": 0},
    "model": {"g_channels": 16, "d_channels": 16},
    "train": {"steps": 30, "batch_size": 32, "log_every": 5, "sample_every": 10, "snapshot_every": 10},
    "eval": {"n_samples": 64, "kid_subset_size": 50, "curve_samples": 32},
}


def _sh(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A git repository holding the project's files (not its data, models or MLflow store) + tiny params."""
    dst = tmp_path_factory.mktemp("e2e") / "repo"
    copy_project(dst, TINY)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["GX_ANALYTICS_ENABLED"] = "False"
    env.update(
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
    )
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "tiny"]):
        subprocess.run(cmd, cwd=dst, env=env, check=True)

    first = _sh([str(BIN / "dvc"), "repro"], dst, env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    return dst, env, first


def _mlflow_client(root: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")


def test_repro_runs_all_six_stages_and_writes_every_declared_output(repo):
    root, _, first = repo
    for stage in ("fetch", "validate", "preprocess", "train", "evaluate", "render"):
        assert f"Running stage '{stage}'" in first.stdout

    import pandas as pd
    from PIL import Image

    manifest = pd.read_parquet(root / "data/raw/manifest.parquet")
    assert len(manifest) == 256 and manifest["sha256"].is_unique
    assert {"path", "sha256", "width", "height", "mode", "label"} <= set(manifest.columns)
    assert all((root / "data/raw" / p).is_file() for p in manifest["path"])

    validation = json.loads((root / "reports/validation.json").read_text())
    assert validation["summary"]["success"] is True

    images = np.load(root / "data/processed/images.npy")
    kept = pd.read_parquet(root / "data/processed/manifest.parquet")
    duplicates = pd.read_csv(root / "reports/duplicates.csv")
    assert len(kept) + len(duplicates) == 256 and len(kept) >= 250  # near duplicates removed and listed
    assert images.shape == (len(kept), 16, 16, 3) and images.dtype == np.uint8
    stats = np.load(root / "data/processed/fid_stats.npz")
    assert stats["mu"].shape == (2048,) and stats["sigma"].shape == (2048, 2048)

    import torch

    ckpt = torch.load(root / "models/checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["step"] == 30 and ckpt["config"]["train"]["loss"] == "ns"

    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert np.isfinite(metrics["fid"]) and metrics["fid"] > 0
    assert metrics["fid_n_fake"] == 64 and metrics["fid_n_real"] == len(kept)  # every training image
    assert np.isfinite(metrics["kid_mean"])

    assert {"precision", "recall", "copy_rate", "copy_rate_heldout_real"} <= set(metrics)
    fid_curve = (root / "reports/fid_curve.csv").read_text().splitlines()
    assert fid_curve[0] == "step,fid,n_samples"
    assert [int(r.split(",")[0]) for r in fid_curve[1:]] == [10, 20, 30]
    assert (root / "reports/memorisation.png").is_file() and (root / "reports/index.html").is_file()
    with Image.open(root / "reports/render/grid.png") as grid:
        assert grid.size == (8 * 18 + 2, 8 * 18 + 2)  # 8×8 tiles of 16 px with 2 px padding

    curves = (root / "reports/train_curves.csv").read_text().splitlines()
    assert curves[0].startswith("step,") and {
        "loss_d",
        "loss_g",
        "d_real",
        "d_fake",
        "grad_norm_d",
        "grad_norm_g",
        "lr_g",
        "lr_d",
        "img_per_s",
    } <= set(curves[0].split(","))
    assert len(curves) == 1 + 30 // 5
    assert ckpt["generator_ema"] is not None  # evaluate and render use the EMA generator

    assert (root / "dvc.lock").is_file()
    assert not list(root.rglob("*.tmp")), "a temporary file was left behind"


def test_train_evaluate_and_render_log_into_one_mlflow_run(repo):
    root, _, _ = repo
    run_id = json.loads((root / "models/mlflow_run.json").read_text())["run_id"]
    client = _mlflow_client(root)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert {"fid", "kid_mean", "loss_d", "loss_g", "d_real", "d_fake"} <= set(run.data.metrics)
    assert len(client.get_metric_history(run_id, "loss_d")) == 30 // 5
    assert run.data.params["train.loss"] == "ns" and run.data.params["eval.n_samples"] == "64"
    assert run.data.tags["stages"] == "train,evaluate,render"
    assert len(run.data.tags["git_commit"]) == 40
    artifacts = [a.path for a in client.list_artifacts(run_id)]
    assert {"render", "index.html", "memorisation.png"} <= set(artifacts)
    assert "render/grid.png" in [a.path for a in client.list_artifacts(run_id, "render")]
    # the fixed-z sample grids logged by train, one per sample_every steps
    assert client.list_artifacts(run_id, "images"), artifacts
    data_runs = client.search_runs([client.get_experiment_by_name("artgan-data").experiment_id])
    assert {r.data.tags["stage"] for r in data_runs} == {"fetch", "validate", "preprocess"}


def test_second_repro_runs_nothing(repo):
    root, env, _ = repo
    again = _sh([str(BIN / "dvc"), "repro"], root, env)
    assert again.returncode == 0, again.stderr
    assert "Running stage" not in again.stdout
    assert "up to date" in again.stdout


def test_dvc_exp_with_another_loss_is_a_second_named_mlflow_run(repo):
    root, env, _ = repo
    exp = _sh([str(BIN / "dvc"), "exp", "run", "-n", "hinge-try", "-S", "train.loss=hinge"], root, env)
    assert exp.returncode == 0, exp.stdout[-3000:] + exp.stderr[-3000:]
    assert "Running stage 'fetch'" not in exp.stdout  # only train and what follows it re-run
    client = _mlflow_client(root)
    runs = client.search_runs([client.get_experiment_by_name("artgan").experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    assert len(runs) == 2 and "hinge-try" in by_name
    hinge = by_name["hinge-try"]
    assert hinge.data.params["train.loss"] == "hinge" and "fid" in hinge.data.metrics


def test_dvc_exp_of_task_translate_trains_scores_registers_and_renders_a_translator(repo):
    """The same repository, one `dvc exp run -S task=translate ...`: the built-in line art -> colour pairs, a pix2pix
    translator in its own MLflow run and registered model, held-out scores beside the baselines, the triplets and
    the report; then `artgan translate` with it on a folder holding a file that is not an image."""
    import pandas as pd
    import torch

    root, env, _ = repo
    sets = ["task=translate", "data.source=openmoji:color", "data.max_images=120", "validate.min_images=50"]
    sets += ["translate.holdout=0.2", "translate.triplets=4", "translate.blend=multiply"]  # as make translate
    sets += ["train.steps=10", "train.batch_size=8"]
    sets += ["eval.curve_samples=8", "eval.kid_subset_size=8"]
    exp = _sh([str(BIN / "dvc"), "exp", "run", "-n", "colouring", *(a for s in sets for a in ("-S", s))], root, env)
    assert exp.returncode == 0, exp.stdout[-3000:] + exp.stderr[-3000:]

    raw = pd.read_parquet(root / "data/raw/manifest.parquet")
    assert set(raw["domain"]) == {"style", "input"} and (raw["domain"] == "input").sum() == 120
    inputs = pd.read_parquet(root / "data/processed/inputs.parquet")
    assert {"split", "target", "key"} <= set(inputs.columns) and (inputs["target"] >= 0).all()
    assert (inputs["split"] == "holdout").sum() >= 2
    assert np.load(root / "data/processed/inputs.npy").shape == (len(inputs), 16, 16, 3)

    ckpt = torch.load(root / "models/checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["kind"] == "translator" and ckpt["model"] == "pix2pix" and ckpt["step"] == 10
    assert ckpt["blend"] == "multiply"
    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert metrics["task"] == "translate" and metrics["holdout_images"] == (inputs["split"] == "holdout").sum()
    for key in ("fid", "identity_fid", "mean_colour_fid", "l1", "identity_l1", "psnr", "ssim", "fid_ratio_identity"):
        assert np.isfinite(metrics[key]), key
    assert (root / "reports/render/triplets.png").is_file()
    assert "Translation" in (root / "reports/index.html").read_text()

    client = _mlflow_client(root)
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("artgan").experiment_id])}
    run = runs["colouring"]
    assert run.data.params["task"] == "translate" and "fid" in run.data.metrics
    assert run.data.tags["stages"] == "train,evaluate,render"
    versions = client.search_model_versions("name='artgan-translator'")
    assert [v.run_id for v in versions] == [run.info.run_id]

    photos = root.parent / "photos"
    photos.mkdir()
    (photos / "notes.txt").write_text("not an image")
    from PIL import Image

    Image.new("RGBA", (40, 30), (0, 0, 0, 0)).save(photos / "a.png")
    out = root.parent / "translated"
    done = _sh([str(BIN / "artgan"), "translate", str(photos), "--out", str(out)], root, env)
    assert done.returncode == 1 and "notes.txt" in done.stderr  # one line for the bad file, the rest translated
    with Image.open(out / "a.png") as im:
        assert im.size == (16, 16)


def test_a_stage_run_before_its_inputs_exist_says_which_stage_to_run(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    res = _sh([str(BIN / "artgan"), "train"], tmp_path, env)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "artgan preprocess" in lines[0], res.stderr
    assert not (tmp_path / "models" / "checkpoint.pt").exists()
