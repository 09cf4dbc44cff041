"""preprocess: every validated image to RGB at data.image_size in one uint8 array, duplicates removed,
and the real FID statistics. The work is in pipeline/data: decode.py (one image), dedup.py (near duplicates) and
npy.py (the streamed array); this module is the stage.

Reads the validated manifest (`<data.validated_dir>/manifest.parquet`, rows with status "ok";
the image files stay in data.raw_dir and are only read). Each image: EXIF orientation applied, first
frame of an animation, every mode to RGB (palette, 1, L, LA, CMYK, 16-bit scaled to 8 bits), alpha
composited onto `preprocess.background`, made square by `preprocess.resize` (center-crop | pad |
stretch) and resized with Lanczos (after an integer `reduce` for large images; JPEGs are decoded at a
reduced DCT scale when they are much larger than needed).

Duplicates: the same sha256 as an earlier image (exact), or (near) a 64-bit DCT perceptual hash within
`preprocess.near_duplicate_distance` bits of an earlier *kept* image's and a 16×16 RGB thumbnail within
`preprocess.near_duplicate_max_diff` mean absolute difference of it (the grayscale hash alone calls
different flags or skin tones duplicates), are left out of the processed set — never deleted from
data.raw_dir — and listed in reports/duplicates.csv.

Outputs under data/processed/: images.npy (N×S×S×3 uint8, written row by row: the stage never holds
the whole array), manifest.parquet (row i = image i), fid_stats.npz (mu, sigma and the features of the
reference images, which KID needs; `digest` = the dataset digest; `precision` = eval.fid_precision, which
evaluate checks). The dataset digest is a sha256 of the processed manifest (path, sha256 and label
columns, in order); train logs it as the MLflow dataset input of the training run.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import tracking
from pipeline.config import Config, set_threads
from pipeline.data import manifest, pairing
from pipeline.data.dedup import near_duplicates
from pipeline.data.digest import dataset_digest
from pipeline.data.npy import compact, convert
from pipeline.data.pairing import INPUT
from pipeline.errors import ArtganError
from pipeline.io import atomic_dir, atomic_path, read_input
from pipeline.layout import (
    DUPLICATES,
    IMAGES,
    INPUTS,
    INPUTS_MANIFEST,
    MANIFEST,
    STATS,
    UNMATCHED,
    report_file,
    validated_manifest,
)

RERUN_FETCH = "re-run `artgan fetch` and `artgan validate` (or `dvc repro`)"


def read_validated(cfg: Config) -> tuple[pd.DataFrame, int, Path]:
    """The rows validate passed (status "ok"), the number it quarantined, and the file read."""
    path = validated_manifest(cfg)
    df = read_input(path, "validate", manifest.read)
    if "status" not in df.columns:
        raise ArtganError(f"{path}: no 'status' column; run `artgan validate` again")
    ok = df["status"].astype(str) == "ok"
    return df[ok].reset_index(drop=True), int((~ok).sum()), path


def build(cfg: Config, out: Path, progress: bool = True) -> dict:
    """Everything but the FID statistics: out/images.npy and out/manifest.parquet from the validated
    manifest, exact then near duplicates left out. Returns figures plus `duplicates` (report rows) and
    `manifest` (the processed DataFrame)."""
    p = cfg.preprocess
    raw = Path(cfg.data.raw_dir)
    df, quarantined, source = read_validated(cfg)
    input_df = None
    if "domain" in df.columns:  # task translate: the style is built here, the input domain by build_inputs
        is_input = df["domain"].astype(str) == INPUT
        input_df = df[is_input].reset_index(drop=True)
        df = df[~is_input].reset_index(drop=True)
    exact = df["sha256"].duplicated(keep="first").to_numpy()
    first_of = df.groupby("sha256", sort=False)["path"].transform("first")
    report = [
        {"kept": k, "removed": r, "kind": "exact", "distance": 0, "mean_abs_diff": 0.0}
        for k, r in zip(first_of[exact], df["path"][exact])
    ]
    df = df[~exact].reset_index(drop=True)

    size = cfg.data.image_size
    hashes, thumbs = convert(
        raw,
        df["path"].astype(str).tolist(),
        out / IMAGES,
        size,
        p.resize,
        p.background,
        p.workers,
        progress="preprocess" if progress else None,
    )
    kept_by, dist, diff = near_duplicates(hashes, thumbs, p.near_duplicate_distance, p.near_duplicate_max_diff)
    near = np.flatnonzero(kept_by >= 0)
    paths = df["path"].astype(str).to_numpy()
    report += [
        {
            "kept": paths[kept_by[j]],
            "removed": paths[j],
            "kind": "near",
            "distance": int(dist[j]),
            "mean_abs_diff": round(float(diff[j]), 3),
        }
        for j in near
    ]
    keep = np.flatnonzero(kept_by < 0)
    if len(keep) == 0:
        raise ArtganError(f"{source}: no images left to preprocess ({quarantined} quarantined by validate)")
    compact(out / IMAGES, keep)
    df = df.iloc[keep].drop(columns=[c for c in ("status", "reason") if c in df.columns]).reset_index(drop=True)
    translated = build_inputs(cfg, out, df, input_df, source, progress) if cfg.task == "translate" else None
    if translated is None:
        write_no_inputs(out, size)
    else:
        df = translated.pop("style")
    manifest.write(df, out / MANIFEST)
    return {
        **(translated or {"unmatched": []}),
        "images": int(len(df)),
        "image_size": size,
        "quarantined_skipped": quarantined,
        "exact_duplicates": int(exact.sum()),
        "near_duplicates": int(len(near)),
        "dataset_digest": dataset_digest(df),
        "duplicates": report,
        "manifest": df,
    }


def build_inputs(cfg: Config, out: Path, style_df: pd.DataFrame, input_df, source: Path, progress: bool) -> dict:
    """Task translate: out/inputs.npy + inputs.parquet from the validated input rows (every ok file, no dedup:
    one outline may pair with several colourings), paired and split (pipeline/data/pairing.py); the style
    rows without a partner leave images.npy when paired. Returns figures, `unmatched` and the `style` manifest."""
    p, size = cfg.preprocess, cfg.data.image_size
    if input_df is None or input_df.empty:
        raise ArtganError(f"{source}: no ok input images (translate.input {cfg.translate.input!r}); {RERUN_FETCH}")
    input_df = input_df.drop(columns=[c for c in ("status", "reason") if c in input_df.columns])
    convert(
        Path(cfg.data.raw_dir),
        input_df["path"].astype(str).tolist(),
        out / INPUTS,
        size,
        p.resize,
        p.background,
        p.workers,
        progress="preprocess inputs" if progress else None,
    )
    rows = "_row"
    plan = pairing.plan(
        style_df.assign(**{rows: np.arange(len(style_df))}),
        input_df.assign(**{rows: np.arange(len(input_df))}),
        cfg.translate,
        str(source),
    )
    compact(out / IMAGES, plan.style[rows].to_numpy())
    compact(out / INPUTS, plan.inputs[rows].to_numpy())
    manifest.write(plan.inputs.drop(columns=[rows]), out / INPUTS_MANIFEST)
    held = plan.inputs["split"] == pairing.HOLDOUT
    return {
        "style": plan.style.drop(columns=[rows]),
        "unmatched": plan.unmatched,
        "paired": plan.paired,
        "input_images": int(len(plan.inputs)),
        "holdout_inputs": int(held.sum()),
        "unmatched_files": len(plan.unmatched),
    }


def write_no_inputs(out: Path, size: int) -> None:
    """Task generate: an empty input domain, so that dvc.yaml declares one set of files for both tasks."""
    np.save(out / INPUTS, np.zeros((0, size, size, 3), np.uint8))
    manifest.write(pd.DataFrame({"path": pd.Series([], dtype="string")}), out / INPUTS_MANIFEST)


def write_unmatched(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=pairing.UNMATCHED_FIELDS)
            w.writeheader()
            w.writerows(rows)


def write_duplicates(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["kept", "removed", "kind", "distance", "mean_abs_diff"])
            w.writeheader()
            w.writerows(rows)


def reference_indices(n: int, limit: int, seed: int = 0) -> np.ndarray:
    """All images, or a fixed random subset of `limit` of them (sorted)."""
    if limit == 0 or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def run(cfg: Config) -> dict:
    from pipeline.metrics.fid import statistics
    from pipeline.metrics.inception import FastInception, extract_features, feature_device

    size = cfg.data.image_size
    device = feature_device(cfg.eval.device)  # a bad value fails now, before the images are built
    # atomic_dir refuses a folder of the user's before any work, too
    with atomic_dir(cfg.data.processed_dir, "data.processed_dir", IMAGES, stage="preprocess") as tmp:
        built = build(cfg, tmp)
        images = np.load(tmp / IMAGES, mmap_mode="r")  # read in batches; never one whole copy in memory
        set_threads(cfg)
        ref = reference_indices(len(images), cfg.preprocess.fid_real_images)
        subset = images if len(ref) == len(images) else images[ref]
        feats = extract_features(
            FastInception().to(device),
            subset,
            cfg.preprocess.fid_batch_size,
            progress="real FID features",
            precision=cfg.eval.fid_precision,
        )
        mu, sigma = statistics(feats)
        np.savez(
            tmp / STATS,
            mu=mu,
            sigma=sigma,
            features=feats,
            indices=ref,
            image_size=size,
            digest=np.array(built["dataset_digest"]),
            precision=np.array(cfg.eval.fid_precision),
        )
        del images, subset
    report = report_file(cfg, DUPLICATES)
    write_duplicates(report, built["duplicates"])
    write_unmatched(report_file(cfg, UNMATCHED), built["unmatched"])
    figures = {k: v for k, v in built.items() if k not in ("duplicates", "manifest", "unmatched")}
    figures["fid_reference_images"] = int(len(ref))
    tracking.log_data_stage(
        "preprocess", cfg.flat(), figures, [report], tags={"dataset_digest": built["dataset_digest"]}
    )
    return figures
