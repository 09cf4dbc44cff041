"""evaluate: FID, KID, precision/recall and memorisation of the generator, and FID over training.

Protocol: the real statistics are those of every training image (preprocess, cached by DVC per
dataset version) against `eval.n_samples` generated images; the sample counts go into metrics.json
beside the numbers. Generated images are quantised to uint8 exactly as a saved PNG would be, then
take the same path through the TF-Inception network as the real images did in preprocess.

- KID (unbiased) is reported as mean ± std over subsets; FID from fewer than 2,048 samples is biased
  upwards and the stage warns.
- Precision and recall: k-NN manifolds (Kynkäänniemi et al., 2019) on the same features, with as many
  real images as generated ones (a random subset), since the k-NN radii depend on the set size.
- Memorisation: each sample's nearest training image in feature space; `copy_rate` is the fraction of
  samples closer to a training image than any other training image is to it, beside the same rate for
  real images (half the training set against the other half), which a generator of genuinely new
  images should not exceed by much. The closest pairs are drawn side by side in reports/memorisation.png.
- FID curve: every generator snapshot training kept (`train.snapshot_every`) scored with
  `eval.curve_samples` samples -> reports/fid_curve.csv (DVC plot) and MLflow metric steps.
- Registry (`registry.enabled`): the generator is logged to the run as an MLflow pyfunc model (seeds -> PNG)
  and registered as a new version of `registry.name`; `@champion` moves to it only when its FID beats the
  champion's on the same data digest and protocol (pipeline/registry.py).
Task translate scores the translator instead: pipeline/translation/evaluate.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from pipeline import registry, tracking
from pipeline.artifacts import (
    check_images,
    check_trained_on,
    generator_only,
    load_generator,
    load_snapshots,
    read_checkpoint,
)
from pipeline.config import Config, set_threads
from pipeline.errors import ArtganError
from pipeline.evaluation import check_precision, fid_of, pairs_image, read_stats, write_outputs
from pipeline.imaging import to_uint8
from pipeline.io import read_input, require
from pipeline.layout import (
    CHECKPOINT,
    IMAGES,
    SNAPSHOTS,
    STATS,
    model_file,
    run_file,
)
from pipeline.metrics.fid import UNBIASED_FID_SAMPLES


def generate_uint8(G, z_dim: int, n: int, seed: int, batch_size: int, class_counts: list[int] = ()) -> np.ndarray:
    """n samples as uint8 NHWC from seeded latents; a conditional G gets labels drawn with the training
    set's class frequencies, so the samples are compared with a like-for-like real distribution."""
    import torch

    from pipeline.metrics.inception import exact_gpu, model_device

    device = model_device(G)
    gen = torch.Generator().manual_seed(seed)  # on the CPU: the same latents whatever G's device
    weights = torch.tensor(list(class_counts), dtype=torch.float64) if len(class_counts) else None
    out = []
    with torch.no_grad(), exact_gpu(device, deterministic=True):  # the same samples on every run
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            z = torch.randn(b, z_dim, generator=gen)
            y = torch.multinomial(weights, b, replacement=True, generator=gen) if weights is not None else None
            out.append(to_uint8(G(z.to(device), y.to(device) if y is not None else None)).cpu().numpy())
    return np.concatenate(out)


def fid_curve(cfg: Config, model, reference, class_counts: list[int]) -> list[dict]:
    """FID of every training snapshot, all from the same latents (eval.seed)."""
    from pipeline.metrics.inception import model_device

    e = cfg.eval
    rows = []
    device = model_device(model)
    for step, G in load_snapshots(cfg) if e.curve_samples else ():
        fake = generate_uint8(G.to(device), G.z_dim, e.curve_samples, e.seed, e.batch_size, class_counts)
        G.cpu()  # one snapshot on the device at a time
        fid, _ = fid_of(
            model, fake, reference, e.batch_size, progress=f"FID curve, step {step}", precision=e.fid_precision
        )
        rows.append({"step": step, "fid": round(fid, 4), "n_samples": e.curve_samples})
    return rows


def run(cfg: Config) -> dict:
    from pipeline.metrics.fid import Reference
    from pipeline.metrics.inception import FastInception, feature_device
    from pipeline.metrics.kid import kid
    from pipeline.metrics.knn import HELDOUT_MIN_IMAGES, heldout_copy_rate, memorisation, precision_recall
    from pipeline.translation.translator import check_task

    if cfg.task == "translate":  # the image-to-image GAN's scores: pipeline/translation/evaluate.py
        from pipeline.translation.evaluate import run as run_translate

        return run_translate(cfg)
    e = cfg.eval
    set_threads(cfg)
    processed = Path(cfg.data.processed_dir)
    stats = read_stats(cfg)
    images = check_images(
        read_input(processed / IMAGES, "preprocess", lambda p: np.load(p, mmap_mode="r")), processed / IMAGES
    )
    real_feats = stats["features"]
    if len(real_feats) < HELDOUT_MIN_IMAGES:  # the held-out copy rate compares two halves of the training images
        raise ArtganError(
            f"{processed / STATS}: {len(real_feats)} training images; evaluate needs at least "
            f"{HELDOUT_MIN_IMAGES} (add images to data.source and rerun `dvc repro`)"
        )
    check_precision(cfg, stats)
    device = feature_device(e.device)
    check_task(cfg)  # a translator in models/ is one line, not a state-dict mismatch
    check_trained_on(cfg, images)  # not a generator of another dataset, scored and logged as this one's
    G, z_dim, _, class_counts = load_generator(cfg)
    G = G.to(device)
    require(model_file(cfg, SNAPSHOTS), "train")  # fail now, not after minutes of work
    tracking.read_run_id(run_file(cfg))  # likewise models/mlflow_run.json, truncated or without a run_id
    model = FastInception().to(device)
    with tracking.resume_run("evaluate", run_file(cfg)) as mlrun:
        mlrun.set_tags({"eval_device": device.type, "eval_fid_precision": e.fid_precision})  # eval.device may say auto
        if cfg.registry.enabled:
            registry.check_name(cfg.registry.name)  # a name collision fails now, not after minutes of work
        reference = Reference(stats["mu"], stats["sigma"])  # the real covariance's root, once for every FID
        curve = fid_curve(cfg, model, reference, class_counts)
        fake = generate_uint8(G, z_dim, e.n_samples, e.seed, e.batch_size, class_counts)
        fid, feats = fid_of(
            model, fake, reference, e.batch_size, progress="fake FID features", precision=e.fid_precision
        )
        kid_mean, kid_std = kid(real_feats, feats, e.kid_subsets, e.kid_subset_size, seed=e.seed)
        kid_size = min(e.kid_subset_size, len(real_feats), len(feats))  # what kid() drew
        if kid_size < e.kid_subset_size:
            print(
                f"evaluate: warning: KID subsets hold {kid_size} images, not eval.kid_subset_size="
                f"{e.kid_subset_size} ({len(feats)} generated, {len(real_feats)} real); subsets that are (nearly) a "
                "whole set make kid_std understate the spread: raise eval.n_samples or lower the subset size",
                file=sys.stderr,
            )

        rng = np.random.default_rng(e.seed)
        n_pr = min(len(real_feats), len(feats))
        pr_real = real_feats[np.sort(rng.choice(len(real_feats), n_pr, replace=False))]
        precision, recall = precision_recall(pr_real, feats[:n_pr], k=min(e.pr_k, n_pr - 1))

        mem = memorisation(real_feats, feats)
        order = np.argsort(mem["ratio"])[: e.memorisation_pairs]
        train_images = np.asarray(images[stats["indices"][mem["nearest"][order]]])
        pairs = pairs_image(fake[order], train_images, mem["ratio"][order])
        metrics = {
            "fid": round(fid, 4),
            "kid_mean": round(kid_mean, 6),
            "kid_std": round(kid_std, 6),
            "kid_subset_size": int(kid_size),
            "fid_n_fake": int(e.n_samples),
            "fid_n_real": int(len(real_feats)),
            "image_size": int(stats["image_size"]),
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "pr_n": int(n_pr),
            "copy_rate": round(mem["copy_rate"], 4),
            "copy_rate_heldout_real": round(heldout_copy_rate(real_feats, e.seed), 4),
            "nn_ratio_min": round(float(mem["ratio"].min()), 4),
        }
        if e.n_samples < UNBIASED_FID_SAMPLES:
            print(
                f"evaluate: warning: FID from {e.n_samples} < {UNBIASED_FID_SAMPLES} generated samples is biased "
                "upwards; compare FID only at equal eval.n_samples (KID is unbiased)",
                file=sys.stderr,
            )

        registered = register(cfg, mlrun.run_id, metrics) if cfg.registry.enabled else {}

        write_outputs(cfg, mlrun, metrics, curve, pairs)  # every number is in hand: only now do outputs appear
    return {**metrics, "fid_curve": [(r["step"], r["fid"]) for r in curve], **registered}


def register(cfg: Config, run_id: str, metrics: dict) -> dict:
    """The generator (EMA weights when trained with them) as a pyfunc model of the run, then a registry version."""
    import tempfile

    import torch

    ckpt = read_checkpoint(model_file(cfg, CHECKPOINT))
    digest = tracking.run_data(run_id)["tags"].get("data_digest", "unknown")
    with tempfile.TemporaryDirectory(prefix="artgan-model-") as tmp:
        path = Path(tmp) / "generator.pt"
        torch.save(generator_only(ckpt), path)
        uri = registry.log_generator_model(path, conditional=bool(ckpt.get("classes")))
    return registry.publish(
        cfg.registry.name, uri, run_id, metrics["fid"], digest, registry.protocol(metrics, cfg.eval.fid_precision)
    )
