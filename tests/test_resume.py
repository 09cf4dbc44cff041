"""Resume and multi-process training, through the real command in subprocesses.

- SIGKILL at a random step, run `artgan train` again: the final weights are bitwise those of a run
  that was never interrupted (CPU; on CUDA, bench/cuda_check.py checks the same on a GPU).
- torchrun with 2 gloo processes gives the weights of 1 process with the same global batch (float
  tolerance), and a checkpoint written at one world size resumes at another.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_cfg, write_params

N_IMAGES, SIZE = 96, 16

pytestmark = pytest.mark.slow  # make test-fast leaves these out (docs/testing.md)


@pytest.fixture
def work(tmp_path) -> tuple[Path, dict]:
    d = tmp_path / "data" / "processed"
    d.mkdir(parents=True)
    np.save(d / "images.npy", np.random.default_rng(0).integers(0, 256, (N_IMAGES, SIZE, SIZE, 3), dtype=np.uint8))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_", "WORLD_SIZE", "RANK"))}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return tmp_path, env


def params(tmp_path: Path, name: str, model: dict | None = None, **train) -> Path:
    raw = tiny_cfg(
        tmp_path,
        model=model or {},
        train={"out_dir": str(tmp_path / name / "models"), "checkpoint_dir": str(tmp_path / name / "ckpt"), **train},
        reports_dir=str(tmp_path / name / "reports"),
    )
    return write_params(tmp_path / f"{name}.yaml", raw)


def artgan(args: list[str], cwd: Path, env: dict, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, **kw
    )


def weights(tmp_path: Path, name: str) -> dict:
    return torch.load(tmp_path / name / "models" / "checkpoint.pt", map_location="cpu", weights_only=True)


NETS = ("generator", "discriminator", "generator_ema")


def test_sigkill_at_a_random_step_then_resume_is_bitwise_identical(work):
    tmp_path, env = work
    train = {
        "steps": 400,
        "checkpoint_every": 7,
        "log_every": 5,
        "sample_every": 1000,
        "ema_decay": 0.99,
        "augment": ["color", "translation", "cutout"],
        "augment_p": 0.5,
        "lecam": 0.1,  # its anchors are state of the run: a resume that lost them would not end bitwise
        "cr": 1.0,  # lazy bCR on every 3rd step: its draws come on those steps only, by the step
        "cr_every": 3,
        "lr_decay_start": 0.5,  # the rates fall over the last 200 steps, by the step: the same after a resume
        "threads": 1,
    }
    ref = artgan(["train", "--params", str(params(tmp_path, "ref", **train))], tmp_path, env)
    assert ref.returncode == 0, ref.stderr[-2000:]

    p = params(tmp_path, "killed", **{**train, "checkpoint_dir": str(tmp_path / "killed_ckpt")})
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "train", "--params", str(p)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    latest = None
    deadline = time.monotonic() + 300
    while latest is None and time.monotonic() < deadline and proc.poll() is None:
        found = list((tmp_path / "killed_ckpt").glob("*/latest.pt"))
        latest = found[0] if found else None
        time.sleep(0.05)
    assert latest is not None, "no checkpoint appeared"
    time.sleep(random.Random(os.getpid()).uniform(0.0, 1.0))  # a random step after the first checkpoint
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "training finished before it could be killed; raise steps"
    killed_at = torch.load(latest, map_location="cpu", weights_only=False)["step"]
    assert 0 < killed_at < 400
    assert not (tmp_path / "killed" / "models" / "checkpoint.pt").exists()  # no output looks complete

    again = artgan(["train", "--params", str(p)], tmp_path, env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming from step {killed_at}" in again.stdout
    a, b = weights(tmp_path, "ref"), weights(tmp_path, "killed")
    for net in NETS:
        assert a[net].keys() == b[net].keys()
        assert all(torch.equal(a[net][k], b[net][k]) for k in a[net]), net
    assert b["step"] == 400


def _close(a: dict, b: dict, tol: float) -> float:
    worst = 0.0
    for net in NETS:
        for k, v in a[net].items():
            if v.is_floating_point():
                worst = max(worst, (v - b[net][k]).abs().max().item() / (v.abs().max().item() + 1e-12))
    assert worst < tol, worst
    return worst


@pytest.mark.e2e
def test_two_gloo_processes_match_one_process_and_resume_across_world_sizes(work):
    tmp_path, env = work
    train = {"steps": 6, "batch_size": 16, "log_every": 1, "sample_every": 100, "checkpoint_every": 3, "threads": 1}
    # Well-conditioned rates, as below: at the default 1.6e-3 / 8e-4 a 2-core AMD EPYC (2026-12-07) ended these
    # 6 steps 2.7e-2 apart (3e-4 after step 1: the order of fp32 sums, amplified by the steps that follow)
    train |= {"lr_g": 2e-4, "lr_d": 2e-4}
    one = artgan(["train", "--params", str(params(tmp_path, "one", **train))], tmp_path, env)
    assert one.returncode == 0, one.stderr[-2000:]
    two = artgan(["train", "--nproc", "2", "--params", str(params(tmp_path, "two", **train))], tmp_path, env)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    a, b = weights(tmp_path, "one"), weights(tmp_path, "two")
    assert not all(torch.equal(a["generator"][k], b["generator"][k]) for k in a["generator"])  # two real runs
    _close(a, b, tol=1e-3)
    assert "'world_size': 2" in two.stdout or '"world_size": 2' in two.stdout
    # rank 0 alone logs: one MLflow run for the two processes, each step logged once
    import mlflow

    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 2  # "one" and "two"
    run_id = json.loads((tmp_path / "two" / "models" / "mlflow_run.json").read_text())["run_id"]
    assert client.get_run(run_id).data.tags["world_size"] == "2"
    assert [m.step for m in client.get_metric_history(run_id, "loss_d")] == [1, 2, 3, 4, 5, 6]

    # half the steps on 2 processes, the rest on 1, from the same checkpoint folder
    half = params(tmp_path, "mixed", **{**train, "steps": 3})
    r = artgan(["train", "--nproc", "2", "--params", str(half)], tmp_path, env)
    assert r.returncode == 0, r.stderr[-2000:]
    rest = params(tmp_path, "mixed", **train)
    r = artgan(["train", "--params", str(rest)], tmp_path, env)
    assert r.returncode == 0 and "resuming from step 3" in r.stdout, r.stdout[-1000:] + r.stderr[-2000:]
    _close(a, weights(tmp_path, "mixed"), tol=1e-3)


@pytest.mark.e2e
@pytest.mark.parametrize(
    "penalty",
    [
        {"loss": "wgan-gp", "n_critic": 2},
        # the default's lazy R1, on every 2nd step here, with LeCam (its anchors: means over the global batch)
        # and dcgan's minibatch standard deviation over groups of 4 consecutive rows (each inside one rank's 8)
        # and bCR (its second augmentations drawn for the global batch, each rank keeping its rows)
        {"loss": "ns", "r1_gamma": 0.1, "r1_every": 2, "lecam": 0.3, "cr": 1.0, "model": {"mbstd_group": 4}},
        {"loss": "ns", "r1_gamma": 0.1, "r1_every": 2, "model": {"arch": "fastgan"}},
        # top-k over the global batch (k falls to 15 of the 16 at step 43, in epoch 7 of the 96 images)
        {"loss": "ns", "topk": 0.5, "steps": 48},
    ],
    ids=["wgan-gp", "lazy-r1", "fastgan", "topk"],
)
def test_two_gloo_processes_match_one_process_with_the_gradient_penalty(work, penalty):
    """wgan-gp draws its interpolation weights per sample: each rank draws the global batch's and keeps its rows.
    R1 is a per-sample penalty on the rank's own real rows, averaged with the other ranks' like the loss (LeCam's
    too, against anchors that move with the global batch's mean logits); fastgan's
    reconstruction loss is a mean over the rank's real rows too."""
    tmp_path, env = work
    penalty = dict(penalty)
    model = penalty.pop("model", None)
    train = {"steps": 4, "batch_size": 16, "log_every": 1, "sample_every": 100, "threads": 1, **penalty}
    # Rates at which these 4 steps are well conditioned. At the default 1.6e-3 / 8e-4 this tiny run amplifies the
    # order of fp32 sums itself (on the Xeon: one process at 1 and at 2 threads 1e-4 apart, two processes with R1
    # on every 2nd step 2e-2 apart), so the summation order, not the arithmetic under test, would set the
    # tolerance. 8e-4 / 4e-4 held on the Xeon, but fastgan's two runs ended more than 1e-3 apart on a 2-core AMD
    # EPYC (2026-12-07), where 2e-4 holds.
    train |= {"lr_g": 2e-4, "lr_d": 2e-4}
    one = artgan(["train", "--params", str(params(tmp_path, "one", model, **train))], tmp_path, env)
    assert one.returncode == 0, one.stderr[-2000:]
    two = artgan(["train", "--nproc", "2", "--params", str(params(tmp_path, "two", model, **train))], tmp_path, env)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    _close(weights(tmp_path, "one"), weights(tmp_path, "two"), tol=1e-3)


@pytest.mark.parametrize("preset, expected", [(None, ":4096:8"), (":16:8", ":16:8")])
def test_importing_the_package_asks_for_deterministic_cublas_and_keeps_a_users_choice(preset, expected):
    # cuBLAS reads CUBLAS_WORKSPACE_CONFIG once, at its first handle: set on import, before any CUDA work,
    # so a resumed GPU run can end bitwise where an uninterrupted one would (checked on an H200)
    env = {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"}
    if preset:
        env["CUBLAS_WORKSPACE_CONFIG"] = preset
    out = subprocess.run(
        [sys.executable, "-c", "import os, pipeline; print(os.environ['CUBLAS_WORKSPACE_CONFIG'])"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == expected


def test_an_unreadable_resume_checkpoint_is_one_line_saying_what_to_do(tmp_path):
    from pipeline.errors import ArtganError
    from pipeline.training import checkpoint

    latest = tmp_path / "abc123" / "latest.pt"
    assert checkpoint.load(latest) is None  # none yet: train from the start
    latest.parent.mkdir()
    latest.write_bytes(b"PK\x03\x04" + bytes(100))  # a truncated zip, as a full disk could leave outside atomic writes
    with pytest.raises(
        ArtganError, match=rf"^{latest}: unreadable \(RuntimeError: .*\); delete {latest.parent} to train"
    ) as info:
        checkpoint.load(latest)
    assert "\n" not in str(info.value)
    assert latest.read_bytes() == b"PK\x03\x04" + bytes(100)  # left for the user to look at


def translate_params(tmp_path: Path, name: str, model: str, **train) -> Path:
    """A translate run over the shared data/processed of `tmp_path` (translate_data), its own models and checkpoints."""
    raw = tiny_cfg(
        tmp_path,
        task="translate",
        translate={"model": model, "pool_size": 4},
        train={
            "out_dir": str(tmp_path / name / "models"),
            "checkpoint_dir": str(tmp_path / name / "ckpt"),
            "loss": "lsgan",
            "log_every": 1,
            "sample_every": 100,
            "checkpoint_every": 2,
            "threads": 1,
            **train,
        },
        reports_dir=str(tmp_path / name / "reports"),
    )
    return write_params(tmp_path / f"{name}.yaml", raw)


def translate_data(tmp_path: Path) -> None:
    """data/processed for task translate as preprocess writes it: 24 style images, 24 inputs paired by row, the
    first 4 held out."""
    import pandas as pd

    d = tmp_path / "data" / "processed"
    rng = np.random.default_rng(1)
    n = 24
    split = ["holdout" if i < 4 else "train" for i in range(n)]
    keys = [f"e{i:03d}" for i in range(n)]
    np.save(d / "images.npy", rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8))
    np.save(d / "inputs.npy", rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8))
    pd.DataFrame(
        {
            "path": [f"images/{k}.png" for k in keys],
            "sha256": [f"{i:064x}" for i in range(n)],
            "split": split,
            "key": keys,
        }
    ).to_parquet(d / "manifest.parquet")
    pd.DataFrame(
        {
            "path": [f"inputs/{k}.png" for k in keys],
            "sha256": [f"{i + 100:064x}" for i in range(n)],
            "split": split,
            "key": keys,
            "target": list(range(n)),
        }
    ).to_parquet(d / "inputs.parquet")


def translator_weights(tmp_path: Path, name: str) -> dict:
    ck = torch.load(tmp_path / name / "models" / "checkpoint.pt", map_location="cpu", weights_only=False)
    return {k: v for k, v in ck.items() if isinstance(v, dict) and v and all(torch.is_tensor(t) for t in v.values())}


@pytest.mark.e2e
@pytest.mark.parametrize("model", ["pix2pix", "cyclegan"])
def test_a_translator_trains_on_two_gloo_processes_the_same_way_every_time_and_resumes_on_one(work, model):
    """Task translate runs on several processes like generation: a run is repeatable, and a checkpoint of 2
    processes resumes on 1. pix2pix draws its dropout masks for the global batch, so 2 processes give the weights
    of 1 (to float summation order); CycleGAN's history buffer draws per process, so its weights depend on the
    process count (docs/translation.md)."""
    tmp_path, env = work
    translate_data(tmp_path)
    runs = {}
    for name in ("a", "b"):
        r = artgan(
            ["train", "--nproc", "2", "--params", str(translate_params(tmp_path, name, model, steps=4))], tmp_path, env
        )
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        assert '"world_size": 2' in r.stdout or "'world_size': 2" in r.stdout, r.stdout[-1000:]
        runs[name] = translator_weights(tmp_path, name)
    assert runs["a"].keys() == runs["b"].keys() and {"generator", "discriminator"} <= runs["a"].keys()
    for net, sd in runs["a"].items():
        assert all(torch.equal(v, runs["b"][net][k]) for k, v in sd.items()), net
        assert all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point()), net
    assert torch.load(tmp_path / "a" / "models" / "checkpoint.pt", map_location="cpu", weights_only=False)["step"] == 4
    if model == "pix2pix":
        r = artgan(["train", "--params", str(translate_params(tmp_path, "one", model, steps=4))], tmp_path, env)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        one = translator_weights(tmp_path, "one")
        assert not all(torch.equal(v, one["generator"][k]) for k, v in runs["a"]["generator"].items())  # two runs
        for net, sd in runs["a"].items():
            worst = max((v - one[net][k]).abs().max().item() / (v.abs().max().item() + 1e-12) for k, v in sd.items())
            assert worst < 1e-3, (net, worst)

    # two steps on 2 processes, the other two on 1, from the same checkpoint folder
    r = artgan(
        ["train", "--nproc", "2", "--params", str(translate_params(tmp_path, "mixed", model, steps=2))], tmp_path, env
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    r = artgan(["train", "--params", str(translate_params(tmp_path, "mixed", model, steps=4))], tmp_path, env)
    assert r.returncode == 0 and "resuming from step 2" in r.stdout, r.stdout[-1000:] + r.stderr[-2000:]
    mixed = torch.load(tmp_path / "mixed" / "models" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert mixed["step"] == 4
