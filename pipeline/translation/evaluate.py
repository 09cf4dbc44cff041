"""evaluate, task translate: the translator scored on the held-out inputs training never saw, beside two baselines.

- FID and KID of the translated held-out inputs against the style set's real statistics (data/processed/
  fid_stats.npz: the same TF-Inception network, resize and uint8 quantisation as generation's protocol). Few
  held-out images make FID biased upwards: compare FIDs at equal `holdout_images` only (the registry does).
- Paired data: L1, PSNR and SSIM of each translation against its target (pipeline/metrics/translation.py).
- CycleGAN: `cycle_l1`, the L1 of G_BA(G_AB(x)) against x.
- Baselines, the same metrics of `identity` (the inputs unchanged) and `mean_colour` (every pixel the mean colour of
  the training style images); paired, the FID and KID of `target` (the held-out targets themselves: a perfect
  translator, so the floor that FID's small-sample bias sets at this many images); and the ratios the issue's targets read: fid_ratio_identity (target <= 1/3) and
  l1_ratio_identity (target <= 1/2).
- FID curve: every training snapshot translates the first `eval.curve_samples` held-out inputs (by path).
- Memorisation: the first `translate.triplets` held-out translations (by path) above their nearest training style
  image in feature space, with the distance ratio (< 1: closer than any two training style images).
- Registry (`registry.enabled`): the translator as a pyfunc model (image bytes -> PNG bytes), a new version of
  `translate.registry_name`; @champion moves only for a better FID on the same data digest and protocol.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from pipeline import registry, tracking
from pipeline.config import Config, set_threads
from pipeline.errors import ArtganError
from pipeline.evaluation import check_precision, fid_of, pairs_image, read_stats, write_outputs
from pipeline.io import require, torch_load
from pipeline.layout import (
    CHECKPOINT,
    RERUN_TRAIN,
    SNAPSHOTS,
    STATS,
    model_file,
    processed,
    run_file,
)
from pipeline.metrics.fid import UNBIASED_FID_SAMPLES
from pipeline.translation.pairs import holdout_rows
from pipeline.translation.translator import Translator, new_generator, read_translator, translate_uint8

MIN_HOLDOUT = 2  # a covariance (FID) and KID need two images


def mean_colour(styles: np.ndarray) -> np.ndarray:
    """The mean RGB of a set of uint8 images, rounded to uint8 (3,)."""
    return np.rint(styles.reshape(-1, 3).mean(axis=0, dtype=np.float64)).astype(np.uint8)


def score(
    model, images: np.ndarray, reference, real_feats: np.ndarray, e, what: str, feats: np.ndarray | None = None
) -> dict:
    """{"fid", "kid", "kid_std", "features"} of uint8 images against the real statistics. `feats`: their features,
    already extracted. A set of one image repeated (the mean-colour baseline) is scored from that image's features
    alone."""
    from pipeline.metrics.inception import extract_features
    from pipeline.metrics.kid import kid

    if feats is not None:
        fid = reference.fid(feats)
    elif len(images) > 1 and (images == images[:1]).all():
        feats = np.repeat(extract_features(model, images[:1], 1, precision=e.fid_precision), len(images), axis=0)
        fid = reference.fid(feats)
    else:
        fid, feats = fid_of(model, images, reference, e.batch_size, progress=what, precision=e.fid_precision)
    kid_mean, kid_std = kid(real_feats, feats, e.kid_subsets, e.kid_subset_size, seed=e.seed)
    return {"fid": fid, "kid": kid_mean, "kid_std": kid_std, "features": feats}


def curve_size(cfg: Config, holdout: int) -> int:
    """How many held-out inputs (the first, by path) the FID curve translates: eval.curve_samples, or all when
    fewer; 0 (no curve) below MIN_HOLDOUT."""
    n = min(cfg.eval.curve_samples, holdout)
    return n if n >= MIN_HOLDOUT else 0


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape and bool((a[k] == b[k]).all()) for k in a)


def fid_curve(cfg: Config, ckpt: dict, model, reference, inputs: np.ndarray, device, final=None) -> list[dict]:
    """FID of every training snapshot on the first curve_size held-out inputs. `final` (weights, features): a
    snapshot holding exactly those weights (the last one: the generator evaluate scores) takes those features of
    its translations instead of extracting them again."""
    e = cfg.eval
    n = curve_size(cfg, len(inputs))
    if not n:
        return []
    snaps = torch_load(require(model_file(cfg, SNAPSHOTS), "train"), RERUN_TRAIN)
    rows = []
    for step, state in zip(snaps["steps"], snaps["generators"]):
        if final is not None and same_weights(state, final[0]):
            fid = reference.fid(final[1])
        else:
            fid, _ = fid_of(
                model,
                translate_uint8(new_generator(ckpt, state).to(device), inputs[:n], e.batch_size),
                reference,
                e.batch_size,
                progress=f"FID curve, step {step}",
                precision=e.fid_precision,
            )
        rows.append({"step": int(step), "fid": round(fid, 4), "n_samples": n})
    return rows


def stats_features(stats, rows: np.ndarray) -> np.ndarray | None:
    """The features preprocess extracted (fid_stats.npz) of style images `rows`, or None when it left any out
    (preprocess.fid_real_images below the set)."""
    indices = np.asarray(stats["indices"])  # sorted
    pos = np.minimum(np.searchsorted(indices, rows), len(indices) - 1)
    if len(indices) == 0 or not (indices[pos] == rows).all():
        return None
    return np.asarray(stats["features"])[pos]


def translate_and_extract(model, G: Translator, x: np.ndarray, n: int, e) -> tuple[np.ndarray, np.ndarray]:
    """(G's translations of x, their features), the first n (the FID curve's inputs) as a batch sequence of their
    own, so that they are translated and extracted exactly as the curve's other snapshots are."""
    from pipeline.metrics.inception import extract_features

    parts = [(0, n), (n, len(x))] if 0 < n < len(x) else [(0, len(x))]
    fake, feats = [], []
    for a, b in parts:
        fake.append(G(x[a:b], e.batch_size))
        feats.append(
            extract_features(
                model, fake[-1], e.batch_size, progress="translated FID features", precision=e.fid_precision
            )
        )
    return np.concatenate(fake), np.concatenate(feats)


def _round(metrics: dict) -> dict:
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}


def run(cfg: Config) -> dict:
    from pipeline.metrics.inception import FastInception, feature_device
    from pipeline.metrics.knn import memorisation
    from pipeline.metrics.translation import l1, paired_metrics
    from pipeline.translation.pairs import load_translation_data

    e, tr = cfg.eval, cfg.translate
    set_threads(cfg)
    data = load_translation_data(cfg)
    stats = read_stats(cfg)
    check_precision(cfg, stats)
    path = model_file(cfg, CHECKPOINT)
    ckpt = read_translator(require(path, "train"), f"task is translate: {RERUN_TRAIN}")
    check_trained_on(ckpt, data, path)
    held = holdout_rows(data.inputs_df)
    if len(held) < MIN_HOLDOUT:
        raise ArtganError(
            f"translate.holdout: {len(held)} held-out input(s) in {processed(cfg, 'inputs.parquet')}; evaluate "
            f"needs at least {MIN_HOLDOUT} (raise translate.holdout or add input images, then `dvc repro`)"
        )
    style_train = np.flatnonzero(data.style_df["split"].astype(str).to_numpy() == "train")
    indices = np.asarray(stats["indices"])
    train_feats = np.flatnonzero(np.isin(indices, style_train))  # rows of the real features that are training images
    if len(train_feats) < MIN_HOLDOUT:
        raise ArtganError(
            f"{processed(cfg, STATS)}: {len(train_feats)} training style image(s) in the FID statistics; evaluate "
            f"needs at least {MIN_HOLDOUT} (add images to data.source and rerun `dvc repro`)"
        )
    require(model_file(cfg, SNAPSHOTS), "train")  # fail now, not after minutes of work
    tracking.read_run_id(run_file(cfg))  # likewise models/mlflow_run.json
    device = feature_device(e.device)
    G = Translator.from_checkpoint(ckpt, path).to(device)
    G_back = Translator.from_checkpoint(ckpt, path, key="generator_ba").to(device) if ckpt.get("generator_ba") else None
    model = FastInception().to(device)
    from pipeline.metrics.fid import Reference

    with tracking.resume_run("evaluate", run_file(cfg)) as mlrun:
        mlrun.set_tags({"eval_device": device.type, "eval_fid_precision": e.fid_precision, "eval_weights": G.weights})
        if cfg.registry.enabled:
            registry.check_name(tr.registry_name, "translator")  # a name collision fails now
        reference = Reference(stats["mu"], stats["sigma"])
        real_feats = stats["features"]
        x = np.ascontiguousarray(data.inputs[held])
        n_curve = curve_size(cfg, len(x))
        fake, fake_feats = translate_and_extract(model, G, x, n_curve, e)
        curve = fid_curve(cfg, ckpt, model, reference, x, device, final=(G.G.state_dict(), fake_feats[:n_curve]))
        colour = np.broadcast_to(mean_colour(data.styles[style_train]), x.shape).copy()
        scores = {
            "": score(model, fake, reference, real_feats, e, "translated FID features", fake_feats),
            "identity_": score(model, x, reference, real_feats, e, "identity FID features"),
            "mean_colour_": score(model, colour, reference, real_feats, e, "mean colour FID features"),
        }
        if data.paired:  # a perfect translator: the FID floor of this many held-out images
            rows = data.inputs_df["target"].to_numpy()[held]
            target = np.ascontiguousarray(data.styles[rows])
            # their features are in preprocess's statistics (the real style set) unless it took a subset
            feats = stats_features(stats, rows)
            scores["target_"] = score(model, target, reference, real_feats, e, "target FID features", feats)
        metrics: dict = {"task": "translate", "model": str(ckpt["model"]), "holdout_images": int(len(held))}
        metrics["n_train"] = int((data.inputs_df["split"].astype(str) == "train").sum())
        metrics["n_train_style"] = int(len(style_train))
        for prefix, s in scores.items():
            metrics |= {f"{prefix}fid": s["fid"], f"{prefix}kid": s["kid"], f"{prefix}kid_std": s["kid_std"]}
        if data.paired:
            for prefix, images in (("", fake), ("identity_", x), ("mean_colour_", colour)):
                metrics |= {f"{prefix}{k}": v for k, v in paired_metrics(images, target).items()}
        if G_back is not None:
            metrics["cycle_l1"] = l1(G_back(fake, e.batch_size), x)
        metrics["fid_ratio_identity"] = metrics["fid"] / max(metrics["identity_fid"], 1e-12)
        if data.paired:
            metrics["l1_ratio_identity"] = metrics["l1"] / max(metrics["identity_l1"], 1e-12)
        kid_size = min(e.kid_subset_size, len(real_feats), len(held))
        metrics |= {
            "kid_subset_size": int(kid_size),
            "fid_n_fake": int(len(held)),
            "fid_n_real": int(len(real_feats)),
            "image_size": int(stats["image_size"]),
        }
        metrics = _round(metrics)
        if len(held) < UNBIASED_FID_SAMPLES:
            print(
                f"evaluate: warning: FID from {len(held)} < {UNBIASED_FID_SAMPLES} held-out inputs is biased "
                "upwards; compare FID only at equal holdout_images (KID is unbiased)",
                file=sys.stderr,
            )

        k = min(tr.triplets, len(held))
        mem = memorisation(real_feats[train_feats], scores[""]["features"][:k])
        nearest = data.styles[indices[train_feats[mem["nearest"]]]]
        pairs = pairs_image(fake[:k], np.asarray(nearest), mem["ratio"])

        registered = register(cfg, ckpt, mlrun.run_id, metrics) if cfg.registry.enabled else {}

        write_outputs(cfg, mlrun, metrics, curve, pairs)  # every number is in hand: only now do outputs appear
    return {**metrics, "fid_curve": [(r["step"], r["fid"]) for r in curve], **registered}


def check_trained_on(ckpt: dict, data, path: Path) -> None:
    """A one-line error when the translator was trained on other data than data/processed holds now."""
    from pipeline.translation.pairs import data_digest

    trained = ckpt.get("images_sha256")
    if trained is not None and trained != data_digest(data):
        raise ArtganError(
            f"{path} was trained on other images than data/processed holds (preprocessed again since); {RERUN_TRAIN}"
        )


def register(cfg: Config, ckpt: dict, run_id: str, metrics: dict) -> dict:
    """The translator (EMA weights when trained with them) as a pyfunc model of the run, then a registry version."""
    import tempfile

    import torch

    from pipeline.translation.translator import translator_only

    digest = tracking.run_data(run_id)["tags"].get("data_digest") or ckpt.get("images_sha256") or "unknown"
    with tempfile.TemporaryDirectory(prefix="artgan-model-") as tmp:
        path = Path(tmp) / "translator.pt"
        torch.save(translator_only(ckpt), path)
        uri = registry.log_translator_model(path, int(ckpt["image_size"]))
    return registry.publish(
        cfg.translate.registry_name,
        uri,
        run_id,
        metrics["fid"],
        digest,
        registry.protocol(metrics, cfg.eval.fid_precision),
        kind="translator",
    )
