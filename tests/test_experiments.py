"""Compare runs: queued DVC experiments as MLflow runs (stage hashes, dvc.lock), and a DVC remote round trip.

The end-to-end tests run the real `dvc repro`, `dvc exp run --queue` + `--run-all`, `dvc push` and, in a
`git clone` elsewhere, `dvc pull`, on tiny params in a temporary repository (as tests/test_e2e.py).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import copy_project

from pipeline import dvclock

BIN = Path(sys.executable).parent

# --- pipeline/dvclock.py on a hand-written dvc.lock ------------------------------------------------------------

LOCK = """\
schema: '2.0'
stages:
  prepare:
    cmd: python prepare.py
    deps:
    - path: data/in
      hash: md5
      md5: 0123456789abcdef0123456789abcdef.dir
      size: 2048
      nfiles: 2
    - path: prepare.py
      hash: md5
      md5: fedcba9876543210fedcba9876543210
      size: 120
    params:
      params.yaml:
        prepare:
          lr: 1e-05
          size: 32
          flags: [a, b]
    outs:
    - path: data/out
      hash: md5
      md5: 00112233445566778899aabbccddeeff.dir
      size: 4096
      nfiles: 3
  train:
    cmd: python train.py
    deps:
    - path: data/out
      hash: md5
      md5: 00112233445566778899aabbccddeeff.dir
      size: 4096
      nfiles: 3
    outs:
    - path: model.pt
      hash: md5
      md5: 99999999999999999999999999999999
      size: 10
"""


def _by_hand_prepare_hash() -> str:
    """The run-cache key of `prepare` written out: outs as paths, no size / nfiles (a param named `size`
    goes too, as DVC filters the key at every depth), YAML 1.2 types (1e-05 is a float)."""
    entry = {
        "cmd": "python prepare.py",
        "deps": [
            {"path": "data/in", "hash": "md5", "md5": "0123456789abcdef0123456789abcdef.dir"},
            {"path": "prepare.py", "hash": "md5", "md5": "fedcba9876543210fedcba9876543210"},
        ],
        "params": {"params.yaml": {"prepare": {"lr": 1e-05, "flags": ["a", "b"]}}},
        "outs": ["data/out"],
    }
    return hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()


def test_stage_hash_is_dvcs_run_cache_key(tmp_path):
    (tmp_path / "dvc.lock").write_text(LOCK)
    lock = dvclock.load(tmp_path / "dvc.lock")
    hashes = dvclock.stage_hashes(lock)
    assert list(hashes) == ["prepare", "train"]
    assert hashes["prepare"] == _by_hand_prepare_hash()

    # the same function as DVC's own run-cache key over the same entries, read as DVC reads them
    from dvc.stage.cache import _get_cache_hash
    from dvc.utils.serialize import parse_yaml

    dvc_lock = parse_yaml(LOCK, "dvc.lock")
    for name, entry in dvc_lock["stages"].items():
        assert hashes[name] == _get_cache_hash(copy.deepcopy(entry), key=True), name

    assert dvclock.tags(hashes) == {"dvc.stage.prepare": hashes["prepare"], "dvc.stage.train": hashes["train"]}
    assert list(dvclock.stage_hashes(lock, exclude="train")) == ["prepare"]

    # what the stage did changes the key; what its outputs hold does not (DVC keeps that in the lock)
    def changed(old: str, new: str) -> dict[str, str]:
        return dvclock.stage_hashes(dvclock.parse(LOCK.replace(old, new, 1)))

    assert changed("python prepare.py", "python prepare.py --fast")["prepare"] != hashes["prepare"]
    assert changed("fedcba9876543210fedcba9876543210", "f" * 32)["prepare"] != hashes["prepare"]
    assert changed("lr: 1e-05", "lr: 2e-05")["prepare"] != hashes["prepare"]
    assert changed("md5: 99999999999999999999999999999999", "md5: " + "8" * 32)["train"] == hashes["train"]
    assert changed("size: 120", "size: 121")["prepare"] == hashes["prepare"]


def test_the_record_is_this_runs_stages_and_only_under_dvc(tmp_path):
    lock_file = tmp_path / "dvc.lock"
    assert dvclock.current(lock_file, running="train") is None  # no dvc.lock: nothing to record
    lock_file.write_text(LOCK)
    assert dvclock.current(lock_file, running=None) is None  # run by hand: dvc.lock may be another run's

    hashes, text = dvclock.current(lock_file, running="train")
    full = dvclock.stage_hashes(dvclock.parse(LOCK))
    assert hashes == {"prepare": full["prepare"]}  # train's own entry is its previous run
    logged = dvclock.parse(text)
    assert list(logged["stages"]) == ["prepare"] and logged["schema"] == "2.0"
    assert logged["stages"]["prepare"] == dvclock.parse(LOCK)["stages"]["prepare"]

    hashes, text = dvclock.current(lock_file, running="evaluate")  # a stage dvc.lock has not seen yet
    assert hashes == full and text == LOCK


def test_a_queued_workspace_tracks_into_the_repository_store(tmp_path, monkeypatch):
    """A queued experiment runs in .dvc/tmp/exps/<tmp>/ with DVC_ROOT = the repository: the runs, their
    artifacts (a new experiment's too) and the dvc.lock record land in the repository's store."""
    from mlflow import MlflowClient

    from pipeline import tracking

    root = tmp_path / "repo"
    workspace = root / ".dvc" / "tmp" / "exps" / "tmpabc"
    workspace.mkdir(parents=True)
    (workspace / "dvc.lock").write_text(LOCK)
    monkeypatch.chdir(workspace)
    for var in ("MLFLOW_TRACKING_URI", "DVC_STAGE", "DVC_EXP_NAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DVC_ROOT", str(root))
    assert tracking.tracking_uri() == f"sqlite:///{root / 'mlflow.db'}"

    with tracking.new_run("render", {"train.loss": "hinge"}) as run:
        assert dvclock.log_dvc_lock(run) == {}  # not under DVC (no DVC_STAGE): nothing
        monkeypatch.setenv("DVC_STAGE", "train")
        hashes = dvclock.log_dvc_lock(run)
        run_id = run.run_id
    assert hashes == {"prepare": dvclock.stage_hashes(dvclock.parse(LOCK))["prepare"]}

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    got = client.get_run(run_id)
    assert _stage_tags(got) == {"dvc.stage.prepare": hashes["prepare"]}
    lock_copy = Path(client.download_artifacts(run_id, dvclock.DVC_LOCK_ARTIFACT, str(tmp_path)))
    assert list(dvclock.load(lock_copy)["stages"]) == ["prepare"]
    experiment = client.get_experiment(got.info.experiment_id)
    assert Path(experiment.artifact_location) == root / "mlruns" / tracking.EXPERIMENT
    assert (root / "mlruns" / tracking.EXPERIMENT / run_id / "artifacts" / "dvc" / "dvc.lock").is_file()
    assert not (workspace / "mlflow.db").exists() and not (workspace / "mlruns").exists()


# --- end to end: queued experiments, then a DVC remote -----------------------------------------------------------


def _tiny() -> dict:
    """As tests/test_workflows.py's TINY; no FID curve and no Model Registry: neither is under test."""
    tiny = {
        "data": {"image_size": 16, "max_images": 128},
        "validate": {"min_images": 100},
        "preprocess": {"workers": 1},
        "model": {"g_channels": 8, "d_channels": 8},
        "train": {
            "steps": 10,
            "batch_size": 32,
            "log_every": 5,
            "sample_every": 10,
            "snapshot_every": 5,
            "checkpoint_every": 10,
        },
        "eval": {"n_samples": 64, "kid_subset_size": 50, "curve_samples": 0},
        "registry": {"enabled": False},
    }
    return tiny


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))}  # the default store
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["GX_ANALYTICS_ENABLED"] = "False"
    env.update(
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
    )
    return env


def _sh(args: list, cwd: Path, env: dict, ok: bool = True, log: Path | None = None) -> subprocess.CompletedProcess:
    """Run a command; with `log`, its stdout and stderr go to that file instead of pipes (a command that leaves
    detached children behind, which inherit the pipes, would otherwise block the read until they exit) and come
    back as the result's stdout."""
    args = [str(a) for a in args]
    if log is None:
        res = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    else:
        with log.open("w") as out:
            res = subprocess.run(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=1200)
        res.stdout, res.stderr = log.read_text(), ""
    if ok:
        assert res.returncode == 0, f"{args}: {res.stdout[-3000:]}{res.stderr[-3000:]}"
    return res


DVC = BIN / "dvc"


def _experiments(show: list) -> dict[str, dict]:
    """{name: {"rev", "loss"}} of the experiments `dvc exp show --json` lists under the baseline."""
    out = {}
    for commit in show:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs") or []:
                params = rev["data"]["params"]["params.yaml"]["data"]
                out[rev["name"]] = {"rev": rev["rev"], "loss": params["train"]["loss"]}
    return out


@pytest.fixture(scope="module")
def queued(tmp_path_factory):
    """A baseline `dvc repro`, committed, then two queued experiments (`-S train.loss=hinge,lsgan`, a sweep)
    run at the same time by two queue workers (`dvc exp run --run-all -j 2`) on the default SQLite store: both
    runs must come out complete (issue 22)."""
    base = tmp_path_factory.mktemp("experiments")
    repo = base / "repo"
    copy_project(repo, _tiny())
    env = _env()
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "tiny"]):
        _sh(cmd, repo, env)
    _sh([DVC, "repro"], repo, env)
    for cmd in (["git", "add", "-A"], ["git", "commit", "-q", "-m", "baseline"]):
        _sh(cmd, repo, env)
    baseline = _sh(["git", "rev-parse", "HEAD"], repo, env).stdout.strip()

    queue = _sh([DVC, "exp", "run", "--queue", "-S", "train.loss=hinge,lsgan"], repo, env)
    assert queue.stdout.count("Queued experiment") == 2, queue.stdout
    # --run-all starts a queue worker and follows the experiments to the end (as `dvc queue start` would,
    # without the polling); it exits 0 even when one fails, hence `dvc queue status`. Its output goes to a file:
    # a worker that outlives its tasks (a race in dvc-task's shutdown-on-empty-queue) would hold a pipe open
    run_all = _sh([DVC, "exp", "run", "--run-all", "-j", "2"], repo, env, log=base / "run_all.log")
    status = _sh([DVC, "queue", "status"], repo, env).stdout
    _sh([DVC, "queue", "stop"], repo, env, ok=False)  # a worker left idle by that race is told to go
    show = json.loads(_sh([DVC, "exp", "show", "--json"], repo, env).stdout)
    exps = _experiments(show)
    assert len(exps) == 2 and status.count("Success") == 2, status + run_all.stdout[-3000:]
    return {"base": base, "repo": repo, "env": env, "baseline": baseline, "exps": exps}


def _client(repo: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")


def _stage_tags(run) -> dict[str, str]:
    return {k: v for k, v in run.data.tags.items() if k.startswith(dvclock.TAG_PREFIX)}


@pytest.mark.e2e
def test_each_queued_experiment_is_one_mlflow_run_named_after_it(queued):
    repo, env, exps = queued["repo"], queued["env"], queued["exps"]
    assert sorted(e["loss"] for e in exps.values()) == ["hinge", "lsgan"]
    client = _client(repo)  # the repository's store: the queued runs did not stay in their temporary copies
    runs = client.search_runs([client.get_experiment_by_name("artgan").experiment_id])
    by_name: dict[str, list] = {}
    for run in runs:
        by_name.setdefault(run.info.run_name, []).append(run)
    assert len(runs) == 3 and set(exps) <= set(by_name), sorted(by_name)  # the baseline + one per experiment
    baseline_run = next(r for r in runs if r.info.run_name not in exps)
    digest = baseline_run.data.tags["dataset_digest"]
    assert len(digest) == 64

    for name, exp in exps.items():
        assert len(by_name[name]) == 1, name
        run = by_name[name][0]
        assert run.info.status == "FINISHED" and run.data.tags["dvc_exp_name"] == name
        assert run.data.params["train.loss"] == exp["loss"] and run.data.params["eval.n_samples"] == "64"
        assert run.data.tags["git_commit"] == queued["baseline"]  # the commit the experiment was queued on
        assert run.data.tags["dataset_digest"] == digest  # the same data: only train and later stages re-ran
        assert run.data.tags["stages"] == "train,evaluate,render" and "fid" in run.data.metrics

        # the stage hashes are those of the experiment's dvc.lock (render's own entry is written after it)
        exp_lock = dvclock.parse(_sh(["git", "show", f"{exp['rev']}:dvc.lock"], repo, env).stdout)
        expected = dvclock.stage_hashes(exp_lock, exclude="render")
        assert list(expected) == ["fetch", "validate", "preprocess", "train", "evaluate"]
        assert _stage_tags(run) == dvclock.tags(expected)
        for stage in ("train", "evaluate"):  # DVC's run-cache key: DVC filed the run under it
            h = expected[stage]
            assert (repo / ".dvc" / "cache" / "runs" / h[:2] / h).is_dir(), stage
        (dst := queued["base"] / "artifacts" / name).mkdir(parents=True)
        logged = dvclock.load(client.download_artifacts(run.info.run_id, "dvc/dvc.lock", str(dst)))
        assert logged["stages"] == {k: v for k, v in exp_lock["stages"].items() if k != "render"}

    hinge, lsgan = (by_name[n][0] for n in sorted(exps, key=lambda n: exps[n]["loss"]))
    assert _stage_tags(hinge)["dvc.stage.train"] != _stage_tags(lsgan)["dvc.stage.train"]
    assert _stage_tags(hinge)["dvc.stage.preprocess"] == _stage_tags(lsgan)["dvc.stage.preprocess"]
    # the baseline run, from the workspace's `dvc repro`, records the committed dvc.lock the same way
    committed = dvclock.parse((repo / "dvc.lock").read_text())
    assert _stage_tags(baseline_run) == dvclock.tags(dvclock.stage_hashes(committed, exclude="render"))


def _sha256_tree(root: Path, rel: str) -> dict[str, str]:
    path = root / rel
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.e2e
def test_dvc_push_to_a_local_remote_then_pull_in_a_clone_restores_everything(queued):
    base, repo, env = queued["base"], queued["repo"], queued["env"]
    remote, clone = base / "remote", base / "clone"
    _sh([DVC, "remote", "add", "-d", "local", remote], repo, env)
    for cmd in (["git", "add", ".dvc/config"], ["git", "commit", "-q", "-m", "DVC remote"]):
        _sh(cmd, repo, env)
    _sh([DVC, "push"], repo, env)
    assert "in sync" in _sh([DVC, "status", "-c"], repo, env).stdout

    _sh(["git", "clone", "-q", repo, clone], base, env)
    assert not (clone / "models").exists() and not (clone / "data" / "processed").exists()  # git has none of them
    _sh([DVC, "pull"], clone, env)

    lock = dvclock.parse((repo / "dvc.lock").read_text())
    outs = sorted({out["path"] for entry in lock["stages"].values() for out in entry.get("outs", [])})
    assert {
        "data/raw",
        "data/validated",
        "data/processed",
        "models/checkpoint.pt",
        "models/snapshots.pt",
        "models/mlflow_run.json",
        "reports/render",
        "reports/index.html",
    } <= set(outs)
    for out in outs:
        original = _sha256_tree(repo, out)
        assert original, out
        assert _sha256_tree(clone, out) == original, out  # byte-identical, file for file
    status = _sh([DVC, "status"], clone, env).stdout
    assert "Data and pipelines are up to date." in status, status


@pytest.mark.e2e
def test_a_moved_folder_param_moves_what_dvc_tracks_and_one_outside_the_project_is_refused(queued, tmp_path):
    """The path params have one owner, params.yaml: dvc.yaml interpolates them, so `-S train.out_dir=...` moves the
    checkpoint and DVC's record of it together. (Runs last: it changes the workspace's params.yaml.)"""
    repo, env = queued["repo"], queued["env"]
    _sh([DVC, "exp", "run", "-S", "train.out_dir=models_b"], repo, env)
    assert (repo / "models_b" / "checkpoint.pt").is_file() and (repo / "models_b" / "mlflow_run.json").is_file()
    lock = dvclock.parse((repo / "dvc.lock").read_text())
    outs = {out["path"] for out in lock["stages"]["train"]["outs"]}
    assert {"models_b/checkpoint.pt", "models_b/snapshots.pt", "models_b/mlflow_run.json"} <= outs
    assert not any(o.startswith("models/") for o in outs)
    assert {d["path"] for d in lock["stages"]["evaluate"]["deps"]} >= {o for o in outs if o.startswith("models_b/")}
    assert "Data and pipelines are up to date." in _sh([DVC, "status"], repo, env).stdout
    assert json.loads((repo / "reports" / "metrics.json").read_text())["fid"] > 0

    outside = tmp_path / "models_outside"
    res = _sh([DVC, "exp", "run", "-S", f"train.out_dir={outside}"], repo, env, ok=False)
    assert res.returncode != 0
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "train.out_dir" in errors[0] and "outside the DVC project" in errors[0], res.stderr
    assert not outside.exists()  # refused before anything was written there
