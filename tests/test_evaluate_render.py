"""evaluate and render on a real miniature pipeline (fetch → validate → preprocess → train, in-process):
the metrics a user reads, the FID curve over training snapshots, the memorisation pairs, every picture
render promises, and the report, all in the same MLflow run."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import isolate_mlflow, tiny_cfg
from PIL import Image

from pipeline.config import parse
from pipeline.errors import ArtganError

N_IMAGES, SIZE = 40, 16
STEPS, EVERY = 6, 3

pytestmark = pytest.mark.slow  # make test-fast leaves these out (docs/testing.md)


def make_cfg(root: Path, **over):
    return parse(
        tiny_cfg(
            root,
            train={"steps": STEPS, "snapshot_every": EVERY, **over.pop("train", {})},
            eval={
                "n_samples": 24,
                "batch_size": 12,
                "kid_subset_size": 30,
                "kid_subsets": 3,
                "curve_samples": 12,
                "memorisation_pairs": 5,
            },
            **over,
        )
    )


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    """The six stages in-process on 40 OpenMoji images; returns (cfg, stage results, captured stderr)."""
    from pipeline.stages import evaluate, fetch, preprocess, render, train, validate

    root = tmp_path_factory.mktemp("pipeline")
    cfg = make_cfg(root)
    with pytest.MonkeyPatch.context() as mp:
        isolate_mlflow(mp, root)
        out = {}
        for stage in (fetch, validate, preprocess, train):
            out[stage.__name__.rsplit(".", 1)[1]] = stage.run(cfg)
        import contextlib
        import io

        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            out["evaluate"] = evaluate.run(cfg)
        out["render"] = render.run(cfg)
        yield cfg, out, err.getvalue()


def test_metrics_use_every_real_image_and_record_the_sample_counts(pipeline_run):
    cfg, out, _ = pipeline_run
    m = json.loads((Path(cfg.reports_dir) / "metrics.json").read_text())
    # all training images (fid_real_images: 0): the 40 fetched less the duplicates preprocess dropped
    assert m["fid_n_real"] == out["preprocess"]["images"] and m["fid_n_fake"] == 24
    assert N_IMAGES - 2 <= m["fid_n_real"] <= N_IMAGES
    assert m["fid"] > 0 and m["kid_std"] >= 0
    assert 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1 and m["pr_n"] == 24
    assert 0 <= m["copy_rate"] <= 1 and 0 <= m["copy_rate_heldout_real"] <= 1 and m["nn_ratio_min"] > 0
    assert {k: out["evaluate"][k] for k in m} == m


def test_fid_from_fewer_than_2048_samples_warns(pipeline_run):
    _, _, stderr = pipeline_run
    assert "warning: FID from 24 < 2048 generated samples is biased" in stderr


def test_kid_subsets_larger_than_a_set_are_capped_recorded_and_warned_about(pipeline_run):
    cfg, out, stderr = pipeline_run
    m = json.loads((Path(cfg.reports_dir) / "metrics.json").read_text())
    assert m["kid_subset_size"] == 24  # eval.kid_subset_size 30, but only 24 generated images
    assert "warning: KID subsets hold 24 images, not eval.kid_subset_size=30 (24 generated" in stderr


def test_the_metrics_are_those_of_the_generated_and_real_features(pipeline_run):
    """Recomputed from the same samples: each metric compares the sets it names, in the right direction."""
    from pipeline.artifacts import load_generator
    from pipeline.metrics.fid import Reference
    from pipeline.metrics.inception import FastInception, extract_features
    from pipeline.metrics.kid import kid
    from pipeline.metrics.knn import memorisation, precision_recall
    from pipeline.stages.evaluate import generate_uint8

    cfg, _, _ = pipeline_run
    e = cfg.eval
    m = json.loads((Path(cfg.reports_dir) / "metrics.json").read_text())
    stats = dict(np.load(Path(cfg.data.processed_dir) / "fid_stats.npz"))
    G, z_dim, _, counts = load_generator(cfg)
    images = generate_uint8(G, z_dim, e.n_samples, e.seed, e.batch_size, counts)
    fake = extract_features(FastInception(), images, e.batch_size)
    real = stats["features"]
    assert m["fid"] == round(Reference(stats["mu"], stats["sigma"]).fid(fake), 4)
    assert m["kid_mean"] == round(kid(real, fake, e.kid_subsets, e.kid_subset_size, seed=e.seed)[0], 6)
    rng = np.random.default_rng(e.seed)  # precision/recall on equal-sized sets: a seeded subset of the real ones
    n = min(len(real), len(fake))
    sub = real[np.sort(rng.choice(len(real), n, replace=False))]
    p, r = precision_recall(sub, fake, k=e.pr_k)
    assert (m["precision"], m["recall"]) == (round(p, 4), round(r, 4))
    assert m["copy_rate"] == round(memorisation(real, fake)["copy_rate"], 4)
    mem = memorisation(real, fake)
    assert m["nn_ratio_min"] == round(float(mem["ratio"].min()), 4)
    # memorisation.png: the closest sample (by ratio) top left, its nearest training image below it, 4x upscaled
    first = int(np.argmin(mem["ratio"]))
    train_img = np.load(Path(cfg.data.processed_dir) / "images.npy")[stats["indices"][mem["nearest"][first]]]
    pairs = np.asarray(Image.open(Path(cfg.reports_dir) / "memorisation.png").convert("RGB"))
    s, pad = SIZE * 4, 4
    up = lambda img: np.kron(img, np.ones((4, 4, 1), dtype=np.uint8))  # noqa: E731
    assert np.array_equal(pairs[pad : pad + s, pad : pad + s], up(images[first]))
    assert np.array_equal(pairs[2 * pad + s : 2 * pad + 2 * s, pad : pad + s], up(train_img))


def test_fid_curve_has_one_point_per_snapshot(pipeline_run):
    cfg, out, _ = pipeline_run
    with open(Path(cfg.reports_dir) / "fid_curve.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [3, 6]
    assert all(int(r["n_samples"]) == 12 and float(r["fid"]) > 0 for r in rows)
    from mlflow import MlflowClient

    history = MlflowClient().get_metric_history(out["train"]["run_id"], "fid_curve")
    assert sorted(h.step for h in history) == [3, 6]


def test_memorisation_pairs_show_samples_above_their_nearest_training_images(pipeline_run):
    cfg, _, _ = pipeline_run
    with Image.open(Path(cfg.reports_dir) / "memorisation.png") as im:
        assert im.width == 5 * (SIZE * 4 + 4) + 4  # five pairs of 4× upscaled tiles
        assert im.height > 2 * SIZE * 4


def test_render_writes_every_picture(pipeline_run):
    cfg, out, _ = pipeline_run
    d = Path(cfg.reports_dir) / "render"
    assert json.loads((d / ".artgan").read_text())["stage"] == "render"  # the folder is marked as artgan's
    names = {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file() and p.name != ".artgan"}
    # large/: the nearest-neighbour upscaled copies the report shows (the files above stay 1:1)
    assert names == {
        "grid.png",
        "grid_raw.png",
        "real.png",
        "interp.png",
        "interp.gif",
        "progress.png",
        "loss_curves.png",
        "fid_curve.png",
        "large/grid.png",
        "large/grid_raw.png",
        "large/real.png",
        "large/progress.png",
        "large/memorisation.png",
    }
    assert sorted(out["render"]["files"]) == sorted(names)
    ema, raw = (np.asarray(Image.open(d / n)) for n in ("grid.png", "grid_raw.png"))
    assert ema.shape == raw.shape == (8 * (SIZE + 2) + 2, 8 * (SIZE + 2) + 2, 3)
    assert not np.array_equal(ema, raw)  # EMA and raw weights differ
    real = np.asarray(Image.open(d / "real.png"))
    assert real.shape == ema.shape  # training images drawn as the generated grid is, to compare cell for cell
    with Image.open(d / "interp.gif") as gif:
        assert gif.n_frames == 32 and gif.info["loop"] == 0
    with Image.open(d / "progress.png") as prog:
        assert prog.width == 2 * (SIZE + 4) * 2  # one column per snapshot (steps 3 and 6), 2× upscaled
    html = (Path(cfg.reports_dir) / "index.html").read_text()
    summary = json.loads((Path(cfg.reports_dir) / "validation_summary.json").read_text())
    assert f"<td>{summary['images']} / {summary['ok']} / {summary['quarantined']}" in html  # what validation set aside
    assert "duplicates removed" in html and 'src="render/large/progress.png"' in html


def test_the_real_report_opens_in_chromium_with_every_image_loaded(pipeline_run, browser):
    """reports/index.html as render wrote it from this pipeline's own pictures (test_report.py covers the rest)."""
    import re

    from test_report import assert_all_loaded, assert_not_blank, open_report

    cfg, _, _ = pipeline_run
    index = Path(cfg.reports_dir) / "index.html"
    srcs = re.findall(r'<img[^>]*\bsrc="([^"]*)"', index.read_text())
    assert {
        "render/large/grid.png",
        "render/large/grid_raw.png",
        "render/large/real.png",
        "render/interp.gif",
        "render/large/progress.png",
        "render/loss_curves.png",
        "render/fid_curve.png",
        "render/large/memorisation.png",
    } <= set(srcs)
    view = open_report(browser, index)
    assert_all_loaded(view, len(srcs))
    assert_not_blank(view["png"])
    assert "FID from 24 < 2048 generated images is biased" in view["text"]


def test_render_is_the_same_picture_every_time(pipeline_run, tmp_path, monkeypatch):
    from pipeline.stages import render

    cfg, _, _ = pipeline_run
    before = {
        n: (Path(cfg.reports_dir) / "render" / n).read_bytes() for n in ("grid.png", "interp.png", "progress.png")
    }
    isolate_mlflow(monkeypatch, Path(cfg.reports_dir).parent)
    render.run(cfg)
    for n, data in before.items():
        assert (Path(cfg.reports_dir) / "render" / n).read_bytes() == data, n


def test_evaluate_and_render_log_into_the_training_run(pipeline_run):
    _, out, _ = pipeline_run
    from mlflow import MlflowClient

    client = MlflowClient()
    run_id = out["train"]["run_id"]
    metrics = client.get_run(run_id).data.metrics
    assert {"fid", "kid_mean", "kid_std", "precision", "recall", "copy_rate"} <= set(metrics)
    # eval.device is auto: the run says where the features were computed
    assert client.get_run(run_id).data.tags["eval_device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"memorisation.png", "index.html", "render"} <= top
    rendered = {a.path for a in client.list_artifacts(run_id, "render")}
    assert {"render/grid.png", "render/interp.gif", "render/progress.png", "render/fid_curve.png"} <= rendered


def test_real_statistics_of_another_precision_are_refused_before_any_work(pipeline_run):
    from pipeline.stages import evaluate

    cfg, _, _ = pipeline_run
    stats = Path(cfg.data.processed_dir) / "fid_stats.npz"
    assert str(np.load(stats)["precision"]) == "fp32"  # preprocess records the precision of the real features
    metrics = Path(cfg.reports_dir) / "metrics.json"
    before = metrics.read_bytes()
    raw = cfg.model_dump(by_alias=True, mode="json")
    half = parse({**raw, "eval": {**raw["eval"], "fid_precision": "fp16"}})
    with pytest.raises(
        ArtganError, match=r"eval.fid_precision is fp16 but .*fid_stats.npz holds fp32 features; rerun preprocess"
    ):
        evaluate.run(half)
    assert metrics.read_bytes() == before


def test_a_generator_trained_on_other_images_is_refused_before_any_score(pipeline_run, tmp_path, monkeypatch):
    # data/processed made again from another dataset, models/ still holding the old generator (stages run by hand)
    from pipeline.stages import evaluate

    cfg0, _, _ = pipeline_run
    isolate_mlflow(monkeypatch, tmp_path)
    cfg = make_cfg(tmp_path, train={"out_dir": cfg0.train.out_dir})
    dst = Path(cfg.data.processed_dir)
    shutil.copytree(Path(cfg0.data.processed_dir), dst)
    images = np.load(dst / "images.npy")
    images[0, 0, 0, 0] ^= 1
    np.save(dst / "images.npy", images)
    before = Path(cfg0.train.out_dir, "checkpoint.pt").read_bytes()
    with pytest.raises(ArtganError, match=r"checkpoint\.pt was trained on other images than .*images\.npy holds"):
        evaluate.run(cfg)
    assert not (Path(cfg.reports_dir) / "metrics.json").exists()
    assert Path(cfg0.train.out_dir, "checkpoint.pt").read_bytes() == before


def test_fewer_than_four_training_images_is_a_clear_error_before_any_work(tmp_path, monkeypatch):
    from pipeline.stages import evaluate

    isolate_mlflow(monkeypatch, tmp_path)
    cfg = make_cfg(tmp_path)
    d = Path(cfg.data.processed_dir)
    d.mkdir(parents=True)
    np.save(d / "images.npy", np.zeros((3, 16, 16, 3), np.uint8))
    np.savez(d / "fid_stats.npz", features=np.zeros((3, 2048), np.float32))
    with pytest.raises(ArtganError, match=r"fid_stats\.npz: 3 training images; evaluate needs at least 4"):
        evaluate.run(cfg)


def test_conditional_models_get_a_grid_per_class(pipeline_run, tmp_path, monkeypatch):
    from pipeline.data import manifest
    from pipeline.stages import evaluate, render, train

    cfg0, _, _ = pipeline_run
    src = Path(cfg0.data.processed_dir)
    isolate_mlflow(monkeypatch, tmp_path)
    cfg = make_cfg(tmp_path, data={"label": "group"})
    dst = Path(cfg.data.processed_dir)
    shutil.copytree(src, dst)
    df = manifest.read(dst / "manifest.parquet")
    df["group"] = ["a", "b", "c"] * (len(df) // 3) + ["a"] * (len(df) % 3)
    manifest.write(df, dst / "manifest.parquet")
    train.run(cfg)
    evaluate.run(cfg)
    out = render.run(cfg)
    grids = sorted(p.name for p in (Path(cfg.reports_dir) / "render" / "class_grids").iterdir())
    assert grids == ["class_000.png", "class_001.png", "class_002.png"] and out["classes"] == 3
    pictures = [np.asarray(Image.open(Path(cfg.reports_dir) / "render" / "class_grids" / g)) for g in grids]
    assert len({p.shape for p in pictures}) == 1
    assert all(not np.array_equal(a, b) for i, a in enumerate(pictures) for b in pictures[i + 1 :])  # one class each


def test_the_vae_baseline_is_scored_and_rendered_like_a_gan(pipeline_run, tmp_path, monkeypatch):
    from pipeline.stages import evaluate, render, train

    cfg0, _, _ = pipeline_run
    isolate_mlflow(monkeypatch, tmp_path)
    cfg = make_cfg(tmp_path, model={"arch": "vae"})
    shutil.copytree(cfg0.data.processed_dir, cfg.data.processed_dir)
    train.run(cfg)
    evaluate.run(cfg)
    m = json.loads((Path(cfg.reports_dir) / "metrics.json").read_text())
    gan = json.loads((Path(cfg0.reports_dir) / "metrics.json").read_text())
    assert m.keys() == gan.keys()  # the same table, so GAN and VAE rows compare
    assert m["fid_n_fake"] == 24 and m["fid"] > 0 and 0 <= m["precision"] <= 1 and 0 <= m["copy_rate"] <= 1
    out = render.run(cfg)
    d = Path(cfg.reports_dir) / "render"
    assert {"grid.png", "interp.gif", "progress.png", "fid_curve.png", "loss_curves.png"} <= set(out["files"])
    assert all((d / n).is_file() for n in out["files"])
    grid = np.asarray(Image.open(d / "grid.png"))
    assert grid.shape == (8 * (SIZE + 2) + 2, 8 * (SIZE + 2) + 2, 3) and grid.std() > 1  # decoded samples, not blank
    html = (Path(cfg.reports_dir) / "index.html").read_text()
    assert "vae" in html and 'src="render/large/grid.png"' in html


def test_slerp_ends_at_its_endpoints_and_keeps_the_norm_of_equal_norm_latents():
    from pipeline.stages.render import slerp

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 16, generator=g), torch.randn(3, 16, generator=g)
    b = b / b.norm(dim=1, keepdim=True) * a.norm(dim=1, keepdim=True)
    torch.testing.assert_close(slerp(a, b, torch.zeros(3, 1)), a)
    torch.testing.assert_close(slerp(a, b, torch.ones(3, 1)), b)
    mid = slerp(a, b, torch.full((3, 1), 0.5))
    torch.testing.assert_close(mid.norm(dim=1), a.norm(dim=1))  # a straight line would shrink it
    torch.testing.assert_close(slerp(a, a.clone(), torch.full((3, 1), 0.3)), a)  # parallel: no NaN


GARBAGE = bytes(range(256)) * 8  # not a torch file


def _on_a_copy(cfg, section: str, key: str, dst: Path, **top):
    """cfg with the folder `section.key` copied to dst and pointed at there (plus top-level overrides)."""
    raw = cfg.model_dump(by_alias=True, mode="json")
    shutil.copytree(raw[section][key], dst)
    return parse({**raw, section: {**raw[section], key: str(dst)}, **top})


def test_a_corrupt_checkpoint_is_one_line_naming_it_before_any_work(pipeline_run, tmp_path):
    from pipeline.stages import evaluate, render

    cfg, _, _ = pipeline_run
    models = tmp_path / "models"
    broken = _on_a_copy(cfg, "train", "out_dir", models, reports_dir=str(tmp_path / "reports"))
    (models / "checkpoint.pt").write_bytes(GARBAGE)
    for stage in (evaluate, render):
        with pytest.raises(
            ArtganError,
            match=rf"^{models / 'checkpoint.pt'}: not an artgan checkpoint \(.*\); "
            r"re-run `artgan train`",
        ) as info:
            stage.run(broken)
        assert "\n" not in str(info.value) and "weights_only" not in str(info.value)
    assert not (tmp_path / "reports").exists()


def test_corrupt_snapshots_are_one_line_naming_the_file(pipeline_run, tmp_path):
    from pipeline.artifacts import load_snapshots

    cfg, _, _ = pipeline_run
    models = tmp_path / "models"
    copy = _on_a_copy(cfg, "train", "out_dir", models)
    assert [step for step, _ in load_snapshots(copy)] == [EVERY, STEPS]
    (models / "snapshots.pt").write_bytes(GARBAGE[:700])
    with pytest.raises(
        ArtganError, match=rf"^{models / 'snapshots.pt'}: unreadable \(\w+: .*\); re-run `artgan train`"
    ):
        load_snapshots(copy)


def test_corrupt_real_statistics_are_one_line_naming_the_file(pipeline_run, tmp_path):
    from pipeline.stages import evaluate

    cfg, _, _ = pipeline_run
    processed = tmp_path / "processed"
    broken = _on_a_copy(cfg, "data", "processed_dir", processed, reports_dir=str(tmp_path / "reports"))
    (processed / "fid_stats.npz").write_bytes(GARBAGE)
    with pytest.raises(
        ArtganError, match=rf"^{processed / 'fid_stats.npz'}: unreadable \(.*\); re-run `artgan preprocess`"
    ):
        evaluate.run(broken)
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize("text", ["{", "{}", '{"run_id": ""}', "[]"])
def test_a_broken_mlflow_run_json_is_one_line_naming_it_and_train_before_any_work(pipeline_run, tmp_path, text):
    from pipeline.stages import evaluate

    cfg, _, _ = pipeline_run
    models = tmp_path / "models"
    broken = _on_a_copy(cfg, "train", "out_dir", models, reports_dir=str(tmp_path / "reports"))
    (models / "mlflow_run.json").write_text(text)
    with pytest.raises(
        ArtganError,
        match=rf"^{models / 'mlflow_run.json'}: unreadable \(\w+: .+\); "
        r"re-run `artgan train` \(or `dvc repro`\)$",
    ) as info:
        evaluate.run(broken)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "reports").exists()


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("code", ["ENOSPC", "EROFS", "EPERM"])
@pytest.mark.parametrize("stage_name, param", [("render", "reports_dir"), ("fetch", "data.raw_dir")])
def test_a_refused_write_is_one_line_and_leaves_the_old_outputs_and_no_temp_files(
    pipeline_run, monkeypatch, stage_name, param, code
):
    """A full disk, a read-only file system or an immutable folder, met when a stage renames its output into
    place: one line naming the path, the param and the remedy; the earlier outputs unchanged, no temp left."""
    import errno
    import importlib
    import os

    from pipeline.layout import folder, write_errors

    cfg, _, _ = pipeline_run
    out = folder(cfg, param)
    before = _tree(out)
    real_replace = os.replace

    def refuse(src, dst, *a, **kw):
        if Path(dst).resolve().is_relative_to(out.resolve()) and str(src).endswith(".tmp"):  # the new output
            err = getattr(errno, code)
            raise OSError(err, os.strerror(err), str(dst))
        return real_replace(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", refuse)
    stage = importlib.import_module(f"pipeline.stages.{stage_name}")
    with pytest.raises(ArtganError) as exc, write_errors(cfg, stage_name):
        stage.run(cfg)
    monkeypatch.undo()
    line = str(exc.value)
    assert "\n" not in line and line.startswith(f"{stage_name}: cannot write {out}") and param in line
    assert os.strerror(getattr(errno, code)) in line and "unchanged" in line
    assert {"ENOSPC": "free space", "EROFS": "read-only", "EPERM": "chattr -i"}[code] in line
    assert _tree(out) == before  # the old outputs, byte for byte
    assert not [p.name for p in out.parent.iterdir() if p.name.endswith(".tmp") or p.name.endswith(".old")]
