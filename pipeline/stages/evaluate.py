"""evaluate: FID and KID of eval.n_samples generated images against the real statistics.

Generated images are quantised to uint8 exactly as a saved PNG would be, then take the same path
through the TF-Inception network as the real images did in preprocess.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import tracking
from pipeline.config import Config, set_threads
from pipeline.io import require, write_json
from pipeline.stages.preprocess import STATS
from pipeline.stages.train import load_generator, run_file, to_uint8

METRICS = "metrics.json"


def generate_uint8(G, z_dim: int, n: int, seed: int, batch_size: int, class_counts: list[int] = ()) -> np.ndarray:
    """n samples as uint8 NHWC from seeded latents; a conditional G gets labels drawn with the training
    set's class frequencies, so the samples are compared with a like-for-like real distribution."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    weights = torch.tensor(list(class_counts), dtype=torch.float64) if len(class_counts) else None
    out = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            z = torch.randn(b, z_dim, generator=gen)
            y = torch.multinomial(weights, b, replacement=True, generator=gen) if weights is not None else None
            out.append(to_uint8(G(z, y)).numpy())
    return np.concatenate(out)


def run(cfg: Config) -> dict:
    from pipeline.metrics.fid import frechet_distance, statistics
    from pipeline.metrics.inception import FastInception, extract_features
    from pipeline.metrics.kid import kid

    e = cfg.eval
    set_threads(cfg)
    stats = np.load(require(Path(cfg.data.processed_dir) / STATS, "preprocess"))
    G, z_dim, _, class_counts = load_generator(cfg)
    with tracking.resume_run("evaluate", run_file(cfg)) as mlrun:
        fake = generate_uint8(G, z_dim, e.n_samples, e.seed, e.batch_size, class_counts)
        feats = extract_features(FastInception(), fake, e.batch_size, progress="fake FID features")
        mu, sigma = statistics(feats)
        fid = frechet_distance(mu, sigma, stats["mu"], stats["sigma"])
        kid_mean, kid_std = kid(stats["features"], feats, e.kid_subsets, e.kid_subset_size, seed=e.seed)
        metrics = {
            "fid": round(fid, 4),
            "kid_mean": round(kid_mean, 6),
            "kid_std": round(kid_std, 6),
            "fid_n_fake": int(e.n_samples),
            "fid_n_real": int(len(stats["features"])),
            "image_size": int(stats["image_size"]),
        }
        write_json(Path(cfg.reports_dir) / METRICS, metrics)
        mlrun.log_metrics(metrics)
    return metrics
