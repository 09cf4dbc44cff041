"""How the trained generator should sample, scored on a run's own checkpoint: batch-norm statistics and latents.

Training copies the live generator's batch-norm running statistics into the EMA generator (pipeline/training/
loop.py, `ema_update`), so evaluate samples the EMA weights with statistics gathered on other weights; and it
draws latents from the full normal. This script scores the trained generator of a checkpoint with evaluate's
protocol (the same latents, real features and FID/KID/precision/recall) several ways, in one run:

- `ema (as evaluate)`: the EMA weights with the copied statistics, the reference;
- `ema, standing N`: BigGAN's "standing statistics" (Brock et al. 2019): the running statistics reset, then
  accumulated as a plain average over N train-mode batches of `train.batch_size` latents (seed 1);
- `ema, batch statistics`: the EMA generator in train mode, each of evaluate's batches normalised by itself;
- `live G`: the last step's weights without EMA;
- `truncation T`: BigGAN's truncation trick: each latent drawn from the normal truncated to [-T, T] (evaluate's
  own latents mapped through the normal's CDF, so every row sees the same draws);
- `psi P`: the latents scaled by P (StyleGAN's ψ about the mean latent, which is 0 here).

    python bench/sampling.py                       # after `make repro` (or `dvc repro train`), in the repository root
    python bench/sampling.py --checkpoint PATH --truncation 2 1.5 1 --psi 0.8
"""

from __future__ import annotations

import argparse
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


def latent_map(G, truncation: float | None = None, psi: float | None = None):
    """G behind a map of its latents: N(0, 1) → N(0, 1) truncated to [-truncation, truncation] by the inverse
    CDF (a draw keeps its quantile within the kept range), then × psi."""
    import torch
    from torch import nn

    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))

    class Mapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.G = G

        def forward(self, z, y=None):
            z64 = z.double()
            if truncation is not None:
                lo = normal.cdf(torch.tensor(-truncation, dtype=torch.float64))
                z64 = normal.icdf((lo + (1 - 2 * lo) * normal.cdf(z64)).clamp(1e-12, 1 - 1e-12))
            if psi is not None:
                z64 = z64 * psi
            return self.G(z64.to(z.dtype), y)

    return Mapped().eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, help="a train checkpoint (default: the params' models/checkpoint.pt)")
    ap.add_argument("--truncation", type=float, nargs="*", default=[2.0, 1.5, 1.0], help="truncation thresholds")
    ap.add_argument("--psi", type=float, nargs="*", default=[0.8], help="latent scales")
    ap.add_argument("--no-bn", action="store_true", help="skip the batch-norm statistics rows")
    args = ap.parse_args()

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
    path = args.checkpoint or model_file(cfg, CHECKPOINT)
    ckpt = read_checkpoint(path)
    z_dim = ckpt["config"]["model"]["z_dim"]
    stats = read_stats(cfg)
    real = stats["features"]
    reference = Reference(stats["mu"], stats["sigma"])
    model = FastInception()
    rng = np.random.default_rng(e.seed)
    n_pr = min(len(real), e.n_samples)
    pr_real = real[np.sort(rng.choice(len(real), n_pr, replace=False))]
    bs = cfg.train.batch_size

    def ema():
        return generator_from(ckpt, ema=True)

    variants = [("ema (as evaluate)", ema)]
    if not args.no_bn:
        variants += [
            ("ema, standing 64", lambda: standing(ema(), 64, bs, z_dim)),
            ("ema, standing 256", lambda: standing(ema(), 256, bs, z_dim)),
            ("ema, batch statistics", lambda: ema().train()),
            ("live G", lambda: generator_from(ckpt, ema=False)),
        ]
    variants += [(f"ema, truncation {t:g}", lambda t=t: latent_map(ema(), truncation=t)) for t in args.truncation]
    variants += [(f"ema, psi {p:g}", lambda p=p: latent_map(ema(), psi=p)) for p in args.psi]
    print(f"{path} (step {ckpt['step']}), {e.n_samples} samples, eval.seed {e.seed}\n")
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
