"""evaluate and render under task translate, on a tiny hand-made project (processed data, FID statistics, a 16 px
translator checkpoint and snapshots, the training run): the metrics beside the identity and mean-colour baselines,
the registered translator and its champion, the pyfunc model, the triplets and the report, and the ONNX export."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import isolate_mlflow, tiny_cfg
from PIL import Image

from pipeline.config import parse
from pipeline.errors import ArtganError

SIZE, N_STYLE, N_HOLDOUT = 16, 12, 4
NAME = "artgan-translator"

pytestmark = pytest.mark.slow  # make test-fast leaves these out (docs/testing.md)


# ----------------------------------------------------------------------------------------- a tiny project
def _images(n: int, seed: int) -> np.ndarray:
    """n uint8 16 px images: smooth colour blobs (random noise would all look alike to the FID network)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    out = []
    for _ in range(n):
        cx, cy, r = rng.uniform(0.2, 0.8, 3)
        blob = ((xx - cx) ** 2 + (yy - cy) ** 2 < (r / 2) ** 2)[..., None]
        colour, back = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        out.append(np.where(blob, colour, back).astype(np.uint8))
    return np.stack(out)


def project_cfg(root: Path, model: str = "pix2pix", **over):
    return parse(
        tiny_cfg(
            root,
            task="translate",
            translate={"model": model, "triplets": 3, **over.pop("translate", {})},
            eval={"batch_size": 8, "kid_subset_size": 4, "kid_subsets": 2, "curve_samples": 3, **over.pop("eval", {})},
            **over,
        )
    )


def translator_pair(model: str, seed: int):
    from pipeline.models.translators import TRANSLATORS

    torch.manual_seed(seed)
    return TRANSLATORS[model](SIZE, 8, 8)


def write_checkpoint(cfg, model: str = "pix2pix", run_id: str = "", blend: str | None = None) -> dict:
    """models/checkpoint.pt and snapshots.pt as train writes them (the design's format), from fresh translators:
    the raw and EMA weights differ; cyclegan has its way back. `blend` None: a checkpoint from before
    translate.blend (no such key)."""
    G, D = translator_pair(model, 1)
    G_ema, _ = translator_pair(model, 2)
    back, D_a = translator_pair(model, 3) if model == "cyclegan" else (None, None)
    ckpt = {
        "kind": "translator",
        "model": model,
        "image_size": SIZE,
        "g_channels": 8,
        "generator": G.state_dict(),
        "generator_ema": G_ema.state_dict(),
        "discriminator": D.state_dict(),
        "generator_ba": back.state_dict() if back is not None else None,
        "generator_ba_ema": None,
        "discriminator_a": D_a.state_dict() if D_a is not None else None,
        "step": 4,
        "config": cfg.model_dump(by_alias=True),
        "mlflow_run_id": run_id,
        "images_sha256": None,
        "classes": [],
        "class_counts": [],
    }
    if blend is not None:
        ckpt["blend"] = blend
    out = Path(cfg.train.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, out / "checkpoint.pt")
    torch.save({"steps": [2, 4], "generators": [G.state_dict(), G_ema.state_dict()]}, out / "snapshots.pt")
    return ckpt


def write_processed(cfg, paired: bool = True) -> dict:
    """data/processed for task translate: N_STYLE style images, as many inputs (input i paired with style i), the
    first N_HOLDOUT by path held out; the style images' real FID statistics."""
    from pipeline.metrics.fid import statistics
    from pipeline.metrics.inception import FastInception, extract_features

    d = Path(cfg.data.processed_dir)
    d.mkdir(parents=True, exist_ok=True)
    styles, inputs = _images(N_STYLE, 0), _images(N_STYLE, 1)
    names = [f"e{i:03d}" for i in range(N_STYLE)]
    split = ["holdout" if i < N_HOLDOUT else "train" for i in range(N_STYLE)]
    style_df = pd.DataFrame(
        {
            "path": [f"images/{n}.png" for n in names],
            "sha256": [f"{i:064x}" for i in range(N_STYLE)],
            "split": split if paired else ["train"] * N_STYLE,
            "key": names,
        }
    )
    # inputs listed in reverse: the held-out order is by path, not by row
    order = list(range(N_STYLE))[::-1]
    inputs_df = pd.DataFrame(
        {
            "path": [f"inputs/{names[i]}.png" for i in order],
            "sha256": [f"{i + 100:064x}" for i in order],
            "split": [split[i] for i in order],
            "key": [names[i] for i in order],
            "target": [i if paired else -1 for i in order],
        }
    )
    inputs = inputs[order]
    np.save(d / "images.npy", styles)
    style_df.to_parquet(d / "manifest.parquet")
    np.save(d / "inputs.npy", inputs)
    inputs_df.to_parquet(d / "inputs.parquet")
    feats = extract_features(FastInception(), styles, 12)
    mu, sigma = statistics(feats)
    np.savez(
        d / "fid_stats.npz",
        mu=mu,
        sigma=sigma,
        features=feats,
        indices=np.arange(N_STYLE),
        image_size=SIZE,
        digest=np.array("0" * 64),
        precision=np.array("fp32"),
    )
    return {"styles": styles, "inputs": inputs, "inputs_df": inputs_df, "style_df": style_df}


def start_run(cfg, digest: str = "d" * 64) -> str:
    """The train stage's MLflow run (models/mlflow_run.json), which evaluate and render log into."""
    from pipeline import tracking
    from pipeline.io import write_json

    with tracking.new_run("train", cfg.flat()) as run:
        run.set_tags({"data_digest": digest})
        run_id = run.run_id
    write_json(Path(cfg.train.out_dir) / "mlflow_run.json", {"run_id": run_id})
    return run_id


def make_project(root: Path, model: str = "pix2pix", paired: bool = True, **over):
    cfg = project_cfg(root, model, **over)
    data = write_processed(cfg, paired)
    run_id = start_run(cfg)
    ckpt = write_checkpoint(cfg, model, run_id)
    return cfg, data, ckpt, run_id


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A pix2pix project on paired data, evaluated (registers v1) and rendered."""
    from pipeline.stages import evaluate, render

    root = tmp_path_factory.mktemp("translate")
    with pytest.MonkeyPatch.context() as mp:
        isolate_mlflow(mp, root)
        cfg, data, ckpt, run_id = make_project(root)
        import contextlib

        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            figures = evaluate.run(cfg)
        rendered = render.run(cfg)
        yield {"cfg": cfg, "data": data, "ckpt": ckpt, "run_id": run_id, "figures": figures, "render": rendered}


def holdout(data: dict) -> tuple[np.ndarray, np.ndarray]:
    """(held-out inputs, their targets), in path order."""
    df = data["inputs_df"]
    rows = [i for i in np.argsort(df["path"].to_numpy()) if df["split"][i] == "holdout"]
    return data["inputs"][rows], data["styles"][df["target"].to_numpy()[rows]]


def translated(ckpt: dict, x: np.ndarray) -> np.ndarray:
    from pipeline.translation.translator import Translator

    return Translator(ckpt)(x)


# ------------------------------------------------------------------------------------------------ metrics
def test_a_perfect_translation_scores_l1_0_psnr_capped_and_ssim_1_and_the_identity_l1_is_by_hand():
    from pipeline.metrics.translation import PSNR_CAP, l1, paired_metrics

    a = _images(5, 3)
    perfect = paired_metrics(a, a)
    assert perfect["l1"] == 0.0 and perfect["psnr"] == PSNR_CAP and perfect["ssim"] == pytest.approx(1.0, abs=1e-12)
    b = _images(5, 4)
    by_hand = sum(abs(int(p) - int(q)) for p, q in zip(a.ravel(), b.ravel())) / a.size / 255
    assert l1(a, b) == pytest.approx(by_hand, abs=1e-12)
    off = a.copy()
    off[0, 0, 0, 0] ^= 1  # one level off in one value
    m = paired_metrics(off, a)
    assert m["l1"] == pytest.approx(1 / 255 / a.size) and 0.9999 < m["ssim"] < 1 and m["psnr"] < PSNR_CAP


def test_ssim_is_the_mean_of_torchmetrics_per_image_ssim_over_the_whole_set_at_once():
    # ssim() calls torchmetrics one image at a time (its float64 window is 10x faster so on the CPU): the number
    # must be the library's own, taken over the whole set in one call
    import torch
    from torchmetrics.functional.image import structural_similarity_index_measure

    from pipeline.metrics.translation import ssim

    a, b = _images(7, 5), _images(7, 6)
    unit = [torch.from_numpy(v).permute(0, 3, 1, 2).double() / 255 for v in (a, b)]
    whole = structural_similarity_index_measure(*unit, data_range=1.0, reduction="none")
    assert whole.shape == (7,)
    assert ssim(a, b) == pytest.approx(float(whole.mean()), abs=1e-12)  # the mean's summation order
    assert ssim(a, b) != pytest.approx(1.0, abs=1e-3)  # a real score, not the identical-image one


def test_metrics_json_holds_the_scores_the_baselines_and_the_protocol(project):
    cfg, data = project["cfg"], project["data"]
    m = json.loads((Path(cfg.reports_dir) / "metrics.json").read_text())
    assert {
        "task",
        "model",
        "holdout_images",
        "n_train",
        "fid",
        "kid",
        "l1",
        "psnr",
        "ssim",
        "identity_fid",
        "identity_l1",
        "identity_psnr",
        "identity_ssim",
        "mean_colour_fid",
        "mean_colour_l1",
        "fid_ratio_identity",
        "l1_ratio_identity",
        "fid_n_fake",
        "fid_n_real",
        "image_size",
    } <= set(m)
    assert "cycle_l1" not in m  # pix2pix has no way back
    assert (m["task"], m["model"], m["holdout_images"], m["n_train"]) == ("translate", "pix2pix", 4, 8)
    assert (m["fid_n_fake"], m["fid_n_real"], m["image_size"]) == (N_HOLDOUT, N_STYLE, SIZE)
    x, target = holdout(data)
    by_hand = np.abs(x.astype(float) - target.astype(float)).mean() / 255
    assert m["identity_l1"] == pytest.approx(by_hand, abs=1e-6)
    fake = translated(project["ckpt"], x)
    assert m["l1"] == pytest.approx(np.abs(fake.astype(float) - target.astype(float)).mean() / 255, abs=1e-6)
    assert m["fid_ratio_identity"] == pytest.approx(m["fid"] / m["identity_fid"], rel=1e-4)
    assert m["l1_ratio_identity"] == pytest.approx(m["l1"] / m["identity_l1"], rel=1e-4)
    assert all(m[k] >= 0 for k in ("fid", "identity_fid", "mean_colour_fid"))
    assert {k: project["figures"][k] for k in m} == m


def test_the_mean_colour_baseline_is_the_training_style_images_mean(project):
    from pipeline.metrics.translation import l1
    from pipeline.translation.evaluate import mean_colour

    cfg, data = project["cfg"], project["data"]
    train = data["style_df"]["split"].to_numpy() == "train"
    colour = mean_colour(data["styles"][train])
    assert np.array_equal(colour, np.rint(data["styles"][train].reshape(-1, 3).mean(0)).astype(np.uint8))
    _, target = holdout(data)
    m = json.loads((Path(cfg.reports_dir) / "metrics.json").read_text())
    assert m["mean_colour_l1"] == pytest.approx(l1(np.broadcast_to(colour, target.shape).copy(), target), abs=1e-6)


def test_the_perfect_translator_baseline_is_the_held_out_targets_own_fid(project):
    """The FID floor at this many held-out images: what the targets themselves score (paired data only)."""
    from pipeline.metrics.fid import Reference
    from pipeline.metrics.inception import FastInception, extract_features

    cfg, data = project["cfg"], project["data"]
    _, target = holdout(data)
    stats = np.load(Path(cfg.data.processed_dir) / "fid_stats.npz")
    by_hand = Reference(stats["mu"], stats["sigma"]).fid(extract_features(FastInception(), target, 8))
    m = json.loads((Path(cfg.reports_dir) / "metrics.json").read_text())
    assert m["target_fid"] == pytest.approx(by_hand, rel=1e-4)
    assert m["target_fid"] < m["mean_colour_fid"]


def test_the_fid_curve_has_a_point_per_snapshot_on_the_held_out_inputs(project):
    cfg = project["cfg"]
    with open(Path(cfg.reports_dir) / "fid_curve.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames[:2] == ["step", "fid"]
    assert [int(r["step"]) for r in rows] == [2, 4] and all(int(r["n_samples"]) == 3 for r in rows)
    from mlflow import MlflowClient

    history = MlflowClient().get_metric_history(project["run_id"], "fid_curve")
    assert sorted(h.step for h in history) == [2, 4]


def test_every_point_of_the_fid_curve_is_its_snapshots_fid_by_hand(project):
    """The last snapshot holds the weights evaluate scores (EMA): its point reuses their features, and must equal
    what the snapshot scores by hand, as the other point does."""
    from pipeline.metrics.fid import Reference
    from pipeline.metrics.inception import FastInception, extract_features
    from pipeline.translation.translator import new_generator, translate_uint8

    cfg, ckpt = project["cfg"], project["ckpt"]
    x, _ = holdout(project["data"])
    stats = np.load(Path(cfg.data.processed_dir) / "fid_stats.npz")
    reference = Reference(stats["mu"], stats["sigma"])
    snaps = torch.load(Path(cfg.train.out_dir) / "snapshots.pt", weights_only=True)
    assert all(torch.equal(v, ckpt["generator_ema"][k]) for k, v in snaps["generators"][-1].items())
    by_hand = [
        reference.fid(extract_features(FastInception(), translate_uint8(new_generator(ckpt, state), x[:3], 8), 8))
        for state in snaps["generators"]
    ]
    with open(Path(cfg.reports_dir) / "fid_curve.csv", newline="") as f:
        curve = [float(r["fid"]) for r in csv.DictReader(f)]
    assert curve == pytest.approx(by_hand, abs=1e-4)
    assert curve[0] != pytest.approx(curve[1], abs=1e-3)  # two different generators: the points are not one copied


def test_the_targets_features_come_from_preprocess_statistics_only_when_it_has_every_one():
    from pipeline.translation.evaluate import stats_features

    feats = np.arange(12.0).reshape(4, 3)
    stats = {"indices": np.array([0, 2, 5, 9]), "features": feats}
    np.testing.assert_array_equal(stats_features(stats, np.array([9, 0, 5])), feats[[3, 0, 2]])
    assert stats_features(stats, np.array([2, 3])) is None  # 3: a subset left it out (preprocess.fid_real_images)
    assert stats_features(stats, np.array([10])) is None
    assert stats_features({"indices": np.array([], int), "features": feats[:0]}, np.array([0])) is None


def test_memorisation_shows_the_first_held_out_translations_above_training_style_images(project):
    cfg, data = project["cfg"], project["data"]
    pairs = np.asarray(Image.open(Path(cfg.reports_dir) / "memorisation.png").convert("RGB"))
    s, pad = SIZE * 4, 4
    assert pairs.shape[1] == 3 * (s + pad) + pad  # translate.triplets = 3 columns
    x, _ = holdout(data)
    up = lambda img: np.kron(img, np.ones((4, 4, 1), dtype=np.uint8))  # noqa: E731
    assert np.array_equal(pairs[pad : pad + s, pad : pad + s], up(translated(project["ckpt"], x[:1])[0]))
    below = pairs[2 * pad + s : 2 * pad + 2 * s, pad : pad + s]
    train = data["styles"][data["style_df"]["split"].to_numpy() == "train"]
    assert any(np.array_equal(below, up(t)) for t in train)  # a training style image, never a held-out one


# ----------------------------------------------------------------------------------------------- registry
def test_the_translator_is_registered_and_champion_moves_only_for_a_better_fid(project):
    from mlflow import MlflowClient

    from pipeline import registry

    figures = project["figures"]
    assert figures["registered"] == f"{NAME}/1" and figures["champion_moved"]
    client = MlflowClient()
    assert client.get_registered_model(NAME).tags["artgan"] == "translator"
    mv = client.get_model_version(NAME, "1")
    digest, proto = mv.tags["data_digest"], mv.tags["fid_protocol"]
    assert digest == "d" * 64 and proto == f"tf-inception-2015-12-05 n_fake={N_HOLDOUT} n_real={N_STYLE} size={SIZE}"
    fid = figures["fid"]
    worse = registry.publish(NAME, mv.source, mv.run_id, fid + 1, digest, proto, kind="translator")
    assert not worse["champion_moved"] and worse["champion"] == "1"
    other = registry.publish(NAME, mv.source, mv.run_id, fid - 1, "e" * 64, proto, kind="translator")
    assert not other["champion_moved"] and "not comparable" in other["champion_reason"]
    better = registry.publish(NAME, mv.source, mv.run_id, fid - 1, digest, proto, kind="translator")
    assert better["champion_moved"] and better["champion"] == better["registered"].split("/")[1]
    registry.promote(NAME, "1")  # back, for the tests below
    with pytest.raises(ArtganError, match=r"^registry.name: the registered model 'artgan-translator' .* holds artgan"):
        registry.check_name(NAME, "generator")  # a generator is never registered under the translator's name


def test_the_pyfunc_model_answers_image_bytes_of_any_size_and_mode_with_png_translations(project):
    import mlflow.pyfunc

    from pipeline.translation.translator import Translator

    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    cmyk, rgba = io.BytesIO(), io.BytesIO()
    Image.fromarray(_images(1, 9)[0]).resize((40, 24)).convert("CMYK").save(cmyk, format="JPEG")
    Image.new("RGBA", (10, 30), (200, 30, 30, 128)).save(rgba, format="PNG")
    out = model.predict(pd.DataFrame({"image": [cmyk.getvalue(), rgba.getvalue()]}))
    assert list(out.columns) == ["image"] and len(out) == 2
    tr = Translator(project["ckpt"])
    for png, src in zip(out["image"], (cmyk, rgba)):
        img = Image.open(io.BytesIO(png))
        assert img.format == "PNG" and img.size == (SIZE, SIZE)
        src.seek(0)
        assert np.array_equal(np.asarray(img.convert("RGB")), tr(tr.convert(src)[None])[0])
    with pytest.raises(Exception, match="row 0: not a readable image"):
        model.predict(pd.DataFrame({"image": [b"not an image"]}))


# ------------------------------------------------------------------------------------------------- render
def test_triplets_show_input_translated_and_target_upscaled_for_fixed_held_out_rows(project):
    from pipeline.translation.render import tile_scale

    cfg, data = project["cfg"], project["data"]
    img = np.asarray(Image.open(Path(cfg.reports_dir) / "render" / "triplets.png").convert("RGB"))
    k = tile_scale(SIZE)
    s, pad, top = SIZE * k, 4, 16
    assert s >= 256 and img.shape == (top + 3 * (s + pad) + pad, 3 * (s + pad) + pad, 3)
    x, target = holdout(data)
    fake = translated(project["ckpt"], x[:3])
    up = lambda a: np.kron(a, np.ones((k, k, 1), dtype=np.uint8))  # noqa: E731
    for r in range(3):
        y = top + pad + r * (s + pad)
        for c, want in enumerate((x[r], fake[r], target[r])):
            xx = pad + c * (s + pad)
            assert np.array_equal(img[y : y + s, xx : xx + s], up(want)), (r, c)


def test_render_writes_its_pictures_and_the_report_has_a_translation_section(project):
    cfg = project["cfg"]
    d = Path(cfg.reports_dir) / "render"
    names = {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file() and p.name != ".artgan"}
    assert {"triplets.png", "progress.png", "large/progress.png", "large/memorisation.png"} <= names
    assert sorted(project["render"]["files"]) == sorted(names)
    html = (Path(cfg.reports_dir) / "index.html").read_text().replace("&#39;", "'").replace("&#x27;", "'")
    assert "<h2>Translation</h2>" in html and 'src="render/triplets.png"' in html
    assert "identity (input unchanged)" in html and "mean colour" in html
    m = json.loads((Path(cfg.reports_dir) / "metrics.json").read_text())
    fid_met = "met" if m["fid_ratio_identity"] <= 1 / 3 else "not met"
    assert f"FID at most 1/3 of the identity's: {m['fid_ratio_identity']:.6g} of it, <span class=" in html
    assert f">{fid_met}</span>" in html
    assert "<h2>Samples</h2>" not in html  # generation's sections are not shown
    from mlflow import MlflowClient

    top = {a.path for a in MlflowClient().list_artifacts(project["run_id"])}
    assert {"memorisation.png", "index.html", "render"} <= top


def test_render_draws_the_same_triplets_every_time(project, monkeypatch):
    from pipeline.stages import render

    cfg = project["cfg"]
    path = Path(cfg.reports_dir) / "render" / "triplets.png"
    before = path.read_bytes()
    isolate_mlflow(monkeypatch, Path(cfg.reports_dir).parent)
    render.run(cfg)
    assert path.read_bytes() == before


# ------------------------------------------------------------------------------------ cyclegan, unpaired
def test_cyclegan_on_unpaired_data_reports_the_cycle_error_and_no_paired_metrics(tmp_path, monkeypatch):
    from pipeline.metrics.translation import l1
    from pipeline.stages import evaluate
    from pipeline.translation.translator import Translator

    isolate_mlflow(monkeypatch, tmp_path)
    cfg, data, ckpt, _ = make_project(
        tmp_path, "cyclegan", paired=False, registry={"enabled": False}, eval={"curve_samples": 0}
    )
    m = evaluate.run(cfg)
    assert m["model"] == "cyclegan" and not {"l1", "psnr", "ssim", "l1_ratio_identity"} & set(m)
    df = data["inputs_df"]
    rows = [i for i in np.argsort(df["path"].to_numpy()) if df["split"][i] == "holdout"]
    x = data["inputs"][rows]
    back = Translator(ckpt, key="generator_ba")
    assert m["cycle_l1"] == pytest.approx(l1(back(Translator(ckpt)(x)), x), abs=1e-6)
    assert "registered" not in m
    assert (Path(cfg.reports_dir) / "fid_curve.csv").read_text().splitlines() == ["step,fid,n_samples"]


# ------------------------------------------------------------------------------------------- wrong kinds
def test_a_generator_checkpoint_under_task_translate_is_one_line(tmp_path, monkeypatch):
    from pipeline.stages import evaluate

    isolate_mlflow(monkeypatch, tmp_path)
    cfg, *_ = make_project(tmp_path, registry={"enabled": False})
    path = Path(cfg.train.out_dir) / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)
    torch.save({**ckpt, "kind": "gan"}, path)
    with pytest.raises(
        ArtganError, match=r"checkpoint\.pt: a generator \(made by task generate.*re-run `artgan train`"
    ):
        evaluate.run(cfg)
    assert not (Path(cfg.reports_dir) / "metrics.json").exists()


def test_a_translator_under_task_generate_is_one_line(tmp_path, monkeypatch):
    from pipeline.stages import evaluate, render

    isolate_mlflow(monkeypatch, tmp_path)
    cfg, *_ = make_project(tmp_path, registry={"enabled": False})
    generate = parse({**cfg.model_dump(by_alias=True), "task": "generate"})
    for stage in (evaluate, render):
        with pytest.raises(ArtganError, match=r"checkpoint\.pt: a translator \(made by task translate\), but task is"):
            stage.run(generate)


def test_too_few_held_out_inputs_is_a_clear_error_before_any_work(tmp_path, monkeypatch):
    from pipeline.stages import evaluate

    isolate_mlflow(monkeypatch, tmp_path)
    cfg, *_ = make_project(tmp_path, registry={"enabled": False})
    d = Path(cfg.data.processed_dir)
    df = pd.read_parquet(d / "inputs.parquet")
    df["split"] = ["holdout"] + ["train"] * (len(df) - 1)
    df.to_parquet(d / "inputs.parquet")
    with pytest.raises(ArtganError, match=r"translate.holdout: 1 held-out input\(s\) .* needs at least 2"):
        evaluate.run(cfg)


# ---------------------------------------------------------------------------------------------------- ONNX
@pytest.mark.parametrize("model,blend", [("pix2pix", None), ("cyclegan", None), ("pix2pix", "multiply")])
def test_onnx_export_of_a_translator_matches_torch(tmp_path, model, blend):
    import onnx
    import onnxruntime as ort

    from pipeline.export import TOLERANCE, export_onnx
    from pipeline.models.translators import multiply
    from pipeline.translation.translator import Translator

    cfg = project_cfg(tmp_path, model)
    ckpt = write_checkpoint(cfg, model, blend=blend)
    out = tmp_path / "translator.onnx"
    figures = export_onnx(Path(cfg.train.out_dir) / "checkpoint.pt", out)
    assert figures["max_abs_diff"] <= TOLERANCE and figures["weights"] == "ema" and figures["model"] == model
    proto = onnx.load(str(out))
    assert [i.name for i in proto.graph.input] == ["image"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["task"] == "translate" and meta["image_size"] == str(SIZE)
    x = torch.rand(5, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3)) * 2 - 1
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        ref = Translator(ckpt).G(x).numpy()
        if blend == "multiply":  # the export multiplies the same network's colour layer with the input
            layer = Translator({k: v for k, v in ckpt.items() if k != "blend"}).G(x)
            assert np.abs(multiply(x, layer).numpy() - ref).max() <= 1e-6
    assert got.shape == (5, 3, SIZE, SIZE) and np.abs(got - ref).max() <= TOLERANCE
