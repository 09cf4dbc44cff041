"""The MLflow UI as a user meets it: readable run names, the `artgan` experiment as a training experiment, and the
runs page of a real `mlflow server` in headless Chromium listing both runs with their FID once the fid column is
ticked as the README says (Columns -> Metrics -> fid).

The store holds two tiny finished runs made through pipeline.tracking (no training): one named after a DVC
experiment, one with the readable default name.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
from helpers import isolate_mlflow
from pgserver import MlflowServer

from pipeline import tracking

PARAMS = {"model.arch": "dcgan", "train.loss": "ns", "data.source": "openmoji", "data.image_size": 32}
DVC_NAME = "tipsy-bush"
FIDS = {"default": 106.365, DVC_NAME: 123.456}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two finished runs in the experiment `artgan` of a fresh SQLite store: (db dir, {name: run id}, experiment id)."""
    root = tmp_path_factory.mktemp("ui")
    with pytest.MonkeyPatch.context() as mp:
        isolate_mlflow(mp, root)
        ids = {}
        with tracking.new_run("train", PARAMS) as run:
            run.log_metrics({"fid": FIDS["default"], "kid_mean": 0.081231})
        ids[tracking.run_data(run.run_id)["name"]] = run.run_id
        mp.setenv("DVC_EXP_NAME", DVC_NAME)
        with tracking.new_run("train", {**PARAMS, "train.loss": "hinge"}) as run:
            run.log_metrics({"fid": FIDS[DVC_NAME], "kid_mean": 0.0987})
        ids[tracking.run_data(run.run_id)["name"]] = run.run_id
        import mlflow

        experiment = mlflow.get_experiment_by_name(tracking.EXPERIMENT)
        yield root, ids, experiment


def test_runs_are_named_after_the_dvc_experiment_or_what_they_trained(store):
    _, ids, _ = store
    default = next(n for n in ids if n != DVC_NAME)
    assert re.fullmatch(r"dcgan-ns-openmoji-32px(-[0-9a-f]{7})?", default), default
    assert DVC_NAME in ids
    assert tracking.run_data(ids[DVC_NAME])["tags"]["dvc_exp_name"] == DVC_NAME
    assert all(tracking.run_data(i)["status"] == "FINISHED" for i in ids.values())


def test_the_experiment_is_mlflow_3s_training_kind(store):
    _, _, experiment = store
    assert experiment.tags[tracking.EXPERIMENT_KIND_TAG] == tracking.EXPERIMENT_KIND == "custom_model_development"


@pytest.mark.parametrize(
    ("source", "slug"),
    [
        ("openmoji", "openmoji"),
        ("folder:/home/me/art/impressionists/", "impressionists"),
        ("url:https://example.org/WikiArt.tar.gz?dl=1", "wikiart"),
        ("hf:huggan/wikiart", "wikiart"),
        ("torchvision:CIFAR10", "cifar10"),
        ("hf:/data/my_saved ds", "my-saved-ds"),
    ],
)
def test_the_dataset_part_of_a_run_name(source, slug):
    assert tracking.dataset_slug(source) == slug


def test_data_stage_runs_are_named_after_their_stage():
    assert re.fullmatch(
        r"fetch-cifar10-64px(-[0-9a-f]{7})?",
        tracking.run_name("fetch", {**PARAMS, "data.source": "torchvision:CIFAR10", "data.image_size": 64}),
    )


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    root, _, _ = store
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    srv = MlflowServer(
        tmp_path_factory.mktemp("server"),
        ["--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--workers", "1"],
        env,
    )
    try:
        srv.wait_healthy(timeout=180)
        yield srv
    finally:
        srv.stop()


def test_the_runs_page_lists_both_runs_and_their_fid(store, server, browser):
    """As the README says: the Model training view of `artgan` is its runs table; Columns -> fid shows the FID."""
    _, ids, experiment = store
    page = browser.new_page(viewport={"width": 2560, "height": 900})  # the grid draws only the columns in view
    try:
        # MLflow 3.17's UI opens in its GenAI view, whatever the experiment's kind: one click on "Model training"
        # (top left, as the README says), which the browser then keeps, or ?workflowType=machine_learning
        page.goto(f"{server.url}/#/experiments/{experiment.experiment_id}")
        page.get_by_text("Model training", exact=True).first.click(timeout=90_000)
        for name in ids:
            page.get_by_text(name, exact=True).first.wait_for(timeout=90_000)
        assert "/runs" in page.url, page.url  # the runs tab, not the GenAI overview
        page.goto(f"{server.url}/#/experiments/{experiment.experiment_id}")  # a later visit: still the runs
        page.reload()
        for name in ids:
            page.get_by_text(name, exact=True).first.wait_for(timeout=90_000)
        assert "/runs" in page.url, page.url
        assert "No data available" not in page.inner_text("body")
        page.get_by_role("button", name="Columns").click()
        for metric in ("fid", "kid_mean"):  # the items under Metrics in the Columns menu
            page.get_by_text(metric, exact=True).last.click()
        page.keyboard.press("Escape")
        if os.environ.get("ARTGAN_UI_SHOT"):
            page.screenshot(path=os.environ["ARTGAN_UI_SHOT"] + ".columns.png")
        for fid in FIDS.values():
            page.get_by_text(f"{fid}", exact=True).first.wait_for(timeout=30_000)
        text = page.inner_text("body")
        png = page.screenshot(full_page=True)
    finally:
        page.close()
    for name in ids:
        assert name in text
    for fid in FIDS.values():
        assert str(fid) in text
    assert len(png) > 10_000
    if os.environ.get("ARTGAN_UI_SHOT"):  # a look at it by hand: ARTGAN_UI_SHOT=/tmp/ui.png pytest ...
        Path(os.environ["ARTGAN_UI_SHOT"]).write_bytes(png)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
