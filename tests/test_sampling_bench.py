"""bench/sampling.py: the truncation trick keeps every latent inside [-T, T] and keeps its quantile's order, so
each row scores the same draws, only moved; ψ scales them; standing statistics are a plain average."""

from __future__ import annotations

from pathlib import Path

import torch
from helpers import load_script
from torch import nn

ROOT = Path(__file__).resolve().parent.parent


class Echo(nn.Module):
    def forward(self, z, y=None):
        return z


def test_truncation_keeps_latents_in_range_and_in_order():
    mod = load_script(ROOT / "bench" / "sampling.py")
    z = torch.randn(4096, 8, generator=torch.Generator().manual_seed(0)) * 1.5
    out = mod.latent_map(Echo(), truncation=1.0)(z)
    assert out.abs().max() <= 1.0 + 1e-6 and out.abs().max() > 0.99
    order = z.flatten().argsort()
    assert (out.flatten()[order].diff() >= 0).all()  # monotone: each draw keeps its place, moved inward
    small = z.abs() < 0.1  # near the centre the map scales by the mass kept, P(|z| < 1) = 0.6827
    assert torch.allclose(out[small], z[small] * 0.6827, atol=0.002)
    assert torch.allclose(mod.latent_map(Echo(), psi=0.5)(z), z * 0.5)


def test_standing_statistics_are_the_plain_average_over_batches():
    mod = load_script(ROOT / "bench" / "sampling.py")

    class G(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm1d(3)

        def forward(self, z):
            return self.bn(z[:, :3] + 5.0)

    g = mod.standing(G(), batches=50, batch_size=64, z_dim=3)
    assert not g.training
    torch.testing.assert_close(g.bn.running_mean, torch.full((3,), 5.0), atol=0.05, rtol=0)
