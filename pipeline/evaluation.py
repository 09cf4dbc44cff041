"""What evaluate shares between its tasks (generate, translate): the real FID statistics preprocess wrote, the FID
of uint8 images against them, and the memorisation picture (each image above its nearest training image)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from pipeline.errors import ArtganError
from pipeline.io import atomic_path, read_input, write_json
from pipeline.layout import FID_CURVE, MEMORISATION, METRICS, STATS


def read_stats(cfg) -> dict:
    """data/processed/fid_stats.npz as preprocess wrote it (mu, sigma, features, indices, precision, ...)."""
    return read_input(Path(cfg.data.processed_dir) / STATS, "preprocess", lambda p: dict(np.load(p)))


def check_precision(cfg, stats: dict) -> None:
    """Refuse real features made at another eval.fid_precision than the one evaluate now runs at."""
    path = Path(cfg.data.processed_dir) / STATS
    made = str(stats["precision"])
    if made != cfg.eval.fid_precision:
        raise ArtganError(
            f"eval.fid_precision is {cfg.eval.fid_precision} but {path} holds {made} features; "
            "rerun preprocess (`dvc repro preprocess`) so real and generated features match"
        )


def fid_of(
    model, images: np.ndarray, reference, batch_size: int, progress: str | None, precision: str
) -> tuple[float, np.ndarray]:
    """(FID of uint8 N×S×S×3 images against `reference`, their features)."""
    from pipeline.metrics.inception import extract_features

    feats = extract_features(model, images, batch_size, progress=progress, precision=precision)
    return reference.fid(feats), feats


def pairs_image(fake: np.ndarray, real: np.ndarray, ratios: np.ndarray, scale: int = 4):
    """Generated samples (top row) above their nearest training images (bottom row), each column
    captioned with the distance ratio (< 1: closer than any two training images)."""
    from PIL import Image, ImageDraw

    n, s = len(fake), fake.shape[1] * scale
    pad, cap = 4, 14
    canvas = Image.new("RGB", (n * (s + pad) + pad, 2 * s + 3 * pad + cap), "white")
    draw = ImageDraw.Draw(canvas)
    for i in range(n):
        x = pad + i * (s + pad)
        for row, img in enumerate((fake[i], real[i])):
            tile = Image.fromarray(img).resize((s, s), Image.Resampling.NEAREST)
            canvas.paste(tile, (x, pad + row * (s + pad)))
        draw.text((x, 2 * s + 2 * pad), f"{ratios[i]:.2f}", fill="red" if ratios[i] < 1 else "black")
    return canvas


def write_outputs(cfg, mlrun, metrics: dict, curve: list[dict], pairs) -> None:
    """Evaluate's outputs, once every number is in hand, each written atomically: the memorisation picture, the FID
    curve, metrics.json; and the same to the MLflow run (numeric metrics, the curve as fid_curve per step)."""
    reports = Path(cfg.reports_dir)
    with atomic_path(reports / MEMORISATION) as tmp:
        pairs.save(tmp, format="PNG")
    with atomic_path(reports / FID_CURVE) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["step", "fid", "n_samples"])
            w.writeheader()
            w.writerows(curve)
    write_json(reports / METRICS, metrics)
    mlrun.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    for row in curve:
        mlrun.log_metrics({"fid_curve": row["fid"]}, step=row["step"])
    mlrun.log_image(pairs, key="memorisation", artifact_file=MEMORISATION)
