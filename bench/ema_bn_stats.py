"""Which batch-norm statistics the EMA generator should sample with, scored on a trained run's own checkpoint.

Training copies the live generator's batch-norm running statistics into the EMA generator (pipeline/training/
loop.py, `ema_update`), so evaluate samples the EMA weights with statistics gathered on other weights. This script
scores the trained generator of `models/checkpoint.pt` with evaluate's protocol (the same latents, real features
and FID/KID/precision/recall) five ways, in one run:

- `ema (as evaluate)`: the EMA weights with the copied statistics, the reference;
- `ema, standing N`: BigGAN's "standing statistics" (Brock et al. 2019): the running statistics reset, then
  accumulated as a plain average over N train-mode batches of `train.batch_size` latents (seed 1);
- `ema, batch statistics`: the EMA generator in train mode, each of evaluate's batches normalised by itself;
- `live G`: the last step's weights without EMA.

    python bench/ema_bn_stats.py          # after `make repro` (or `dvc repro train`), in the repository root
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def standing(G, batches: int, batch_size: int, z_dim: int):
    """G with every batch norm's running statistics re-estimated as the plain average over `batches` batches."""
    import torch
    from torch.nn.modules.batchnorm import _BatchNorm

    for m in G.modules():
        if isinstance(m, _BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average, not an exponential one
    G.train()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(batches):
            G(torch.randn(batch_size, z_dim, generator=gen))
    return G.eval()


def main() -> None:
    import numpy as np

    from pipeline.artifacts import generator_from, read_checkpoint
    from pipeline.config import load, set_threads
    from pipeline.evaluation import fid_of, read_stats
    from pipeline.layout import CHECKPOINT, model_file
    from pipeline.metrics.fid import Reference
    from pipeline.metrics.inception import FastInception
    from pipeline.metrics.kid import kid
    from pipeline.metrics.knn import precision_recall
    from pipeline.stages.evaluate import generate_uint8

    cfg = load()
    set_threads(cfg)
    e = cfg.eval
    ckpt = read_checkpoint(model_file(cfg, CHECKPOINT))
    z_dim = ckpt["config"]["model"]["z_dim"]
    stats = read_stats(cfg)
    real = stats["features"]
    reference = Reference(stats["mu"], stats["sigma"])
    model = FastInception()
    rng = np.random.default_rng(e.seed)
    n_pr = min(len(real), e.n_samples)
    pr_real = real[np.sort(rng.choice(len(real), n_pr, replace=False))]
    bs = cfg.train.batch_size
    variants = [
        ("ema (as evaluate)", lambda: generator_from(ckpt, ema=True)),
        ("ema, standing 64", lambda: standing(generator_from(ckpt, ema=True), 64, bs, z_dim)),
        ("ema, standing 256", lambda: standing(generator_from(ckpt, ema=True), 256, bs, z_dim)),
        ("ema, batch statistics", lambda: generator_from(ckpt, ema=True).train()),
        ("live G", lambda: generator_from(ckpt, ema=False)),
    ]
    print(f"{model_file(cfg, CHECKPOINT)} (step {ckpt['step']}), {e.n_samples} samples, eval.seed {e.seed}\n")
    print("| generator | FID | KID | precision | recall |")
    print("|---|---:|---:|---:|---:|")
    for name, make in variants:
        fake = generate_uint8(make(), z_dim, e.n_samples, e.seed, e.batch_size)
        fid, feats = fid_of(model, fake, reference, e.batch_size, None, e.fid_precision)
        kid_mean, _ = kid(real, feats, e.kid_subsets, e.kid_subset_size, seed=e.seed)
        p, r = precision_recall(pr_real, feats[:n_pr], k=min(e.pr_k, n_pr - 1))
        print(f"| {name} | {fid:.2f} | {kid_mean:.4f} | {p:.3f} | {r:.3f} |", flush=True)


if __name__ == "__main__":
    main()
