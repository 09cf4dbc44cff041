"""preprocess: every image to RGB at data.image_size in one uint8 array, and the real FID statistics.

Outputs under data/processed/: images.npy (N×S×S×3 uint8), manifest.parquet (row i = image i) and
fid_stats.npz (mu, sigma and the features of the reference images, which KID needs).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import tracking
from pipeline.config import Config, set_threads
from pipeline.data import manifest
from pipeline.io import atomic_dir, require
from pipeline.stages.fetch import MANIFEST

IMAGES = "images.npy"
STATS = "fid_stats.npz"


def to_rgb_square(path: Path, size: int, background: tuple[int, int, int]) -> np.ndarray:
    """Composite alpha onto `background`, centre-crop to a square, resize with Lanczos (antialiased)."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGBA")
        canvas = Image.new("RGBA", im.size, (*background, 255))
        rgb = Image.alpha_composite(canvas, im).convert("RGB")
    w, h = rgb.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    rgb = rgb.crop((left, top, left + side, top + side))
    return np.asarray(rgb.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def reference_indices(n: int, limit: int, seed: int = 0) -> np.ndarray:
    """All images, or a fixed random subset of `limit` of them (sorted)."""
    if limit == 0 or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def run(cfg: Config) -> dict:
    from pipeline.metrics.fid import statistics
    from pipeline.metrics.inception import FastInception, extract_features

    raw = Path(cfg.data.raw_dir)
    df = manifest.read(require(raw / MANIFEST, "fetch"))
    size = cfg.data.image_size
    images = np.stack([to_rgb_square(raw / p, size, cfg.preprocess.background) for p in df["path"]])

    set_threads(cfg)
    ref = reference_indices(len(images), cfg.preprocess.fid_real_images)
    feats = extract_features(FastInception(), images[ref], cfg.preprocess.fid_batch_size, progress="real FID features")
    mu, sigma = statistics(feats)

    with atomic_dir(cfg.data.processed_dir) as tmp:
        np.save(tmp / IMAGES, images)
        manifest.write(df, tmp / MANIFEST)
        np.savez(tmp / STATS, mu=mu, sigma=sigma, features=feats, indices=ref, image_size=size)
    figures = {"images": int(len(images)), "image_size": size, "fid_reference_images": int(len(ref))}
    tracking.log_data_stage("preprocess", cfg.flat(), figures)
    return figures
