"""SN-GAN ResNet generator and discriminator (Miyato et al., 2018; as in mimicry and PyTorch-StudioGAN), sized by params.

G: Linear(z, 4·4·ch₀) → up-resblocks [BN-ReLU-upsample(nearest 2×)-conv3×3-BN-ReLU-conv3×3, shortcut
upsample-conv1×1] from 4×4 to the image size → BN-ReLU-conv3×3-tanh.
D: optimized first block [conv3×3-ReLU-conv3×3-avgpool, shortcut avgpool-conv1×1] → resblocks
[ReLU-conv3×3-ReLU-conv3×3(-avgpool), shortcut conv1×1(-avgpool) when the width or size changes] → ReLU →
global sum pooling → Linear → logit. D has no batch norm (with or without spectral norm).

Widths, with g = g_channels and d = d_channels:
- 16 and 32 px, the SN-GAN CIFAR-10 models: constant widths 2g in G and d in D, so g = d = 128 is SN-GAN's
  256 / 128 exactly, and the project default g = d = 32 gives a 64 / 32-wide model that trains on a CPU
  (G ≈ 0.34 M, D ≈ 0.07 M parameters at 32 px with z_dim = 100; ≈ 0.2 + 0.035 GFLOP per image forward;
  step times in docs/benchmarks.md). D: optimized block
  (down), one down block, two blocks that keep the size (32 → 8×8, 16 → 4×4).
- 64 px, the SN-GAN STL/ImageNet-64 layout (mimicry's SNGAN-64 with ngf = ndf = 1024 at g = d = 64): G widths
  16g → 8g → 4g → 2g → g over 4 up-blocks; D widths d, 2d, 4d, 8d, 16d, all downsampling (64 → 2).
- 128 px, the SN-GAN ImageNet-128 layout: G 16g → 16g → 8g → 4g → 2g → g over 5 up-blocks; D d, 2d, 4d, 8d,
  16d (downsampling) then 16d (not) → 4×4 (sngan_projection's 128-px models at g = d = 64).
  These are GPU-sized: at g = d = 32, G / D have ≈ 3.4 M / 4.9 M parameters at 64 px and 8.3 M / 9.6 M at 128 px.

Initialisation as SN-GAN: Xavier-uniform, gain √2 for the 3×3 convs inside residual branches, gain 1 for the
shortcuts, the first Linear, the output conv, D's Linear and the projection embedding.

Class conditioning (`n_classes > 0`): every batch norm inside G's resblocks becomes conditional batch norm
(scale 1 / shift 0 at init; the final BN before the output conv stays unconditional, as in the projection-
discriminator paper's generator); D adds the projection term ⟨embed(y), Σ_spatial ReLU(h)⟩ to the logit
(Miyato & Koyama, 2018). `spectral_norm=True` wraps every conv, Linear and the projection embedding of D.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.layers import (
    apply_norm,
    batch_norm_2d,
    check_labels,
    check_size,
    flat_latent,
    gan_pair,
    projection,
)

ARCH = "resnet"
SIZES = (16, 32, 64, 128)


def _widths(image_size: int, g: int, d: int) -> tuple[list[int], list[tuple[int, int, bool]]]:
    """G widths (4×4 seed, then each up-block's output) and D blocks (in, out, downsample); D's first entry is
    the optimized block."""
    check_size(ARCH, image_size, SIZES)
    n_up = int(math.log2(image_size)) - 2
    if image_size <= 32:
        g_w = [2 * g] * (n_up + 1)
        w = d
        d_blocks = [(3, w, True), (w, w, True), (w, w, False), (w, w, False)]  # 32 → 8×8 (16 → 4×4)
    elif image_size == 64:
        g_w = [16 * g, 8 * g, 4 * g, 2 * g, g]
        d_blocks = [(3, d, True), (d, 2 * d, True), (2 * d, 4 * d, True), (4 * d, 8 * d, True), (8 * d, 16 * d, True)]
    else:  # 128
        g_w = [16 * g, 16 * g, 8 * g, 4 * g, 2 * g, g]
        d_blocks = [
            (3, d, True),
            (d, 2 * d, True),
            (2 * d, 4 * d, True),
            (4 * d, 8 * d, True),
            (8 * d, 16 * d, True),
            (16 * d, 16 * d, False),
        ]
    return g_w, d_blocks


class GBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, n_classes: int = 0):
        super().__init__()
        self.b1 = batch_norm_2d(c_in, n_classes)
        self.c1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.b2 = batch_norm_2d(c_out, n_classes)
        self.c2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.c_sc = nn.Conv2d(c_in, c_out, 1, 1, 0)  # always learnable: the block upsamples
        for c in (self.c1, self.c2):
            nn.init.xavier_uniform_(c.weight, math.sqrt(2.0))
        nn.init.xavier_uniform_(self.c_sc.weight, 1.0)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = F.relu(apply_norm(self.b1, x, y))
        h = self.c1(F.interpolate(h, scale_factor=2, mode="nearest"))
        h = self.c2(F.relu(apply_norm(self.b2, h, y)))
        return h + self.c_sc(F.interpolate(x, scale_factor=2, mode="nearest"))


class DBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, downsample: bool, optimized: bool = False):
        super().__init__()
        self.downsample, self.optimized = downsample, optimized
        self.c1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.c2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.c_sc = nn.Conv2d(c_in, c_out, 1, 1, 0) if (optimized or downsample or c_in != c_out) else None
        for c in (self.c1, self.c2):
            nn.init.xavier_uniform_(c.weight, math.sqrt(2.0))
        if self.c_sc is not None:
            nn.init.xavier_uniform_(self.c_sc.weight, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.optimized else F.relu(x)  # not in place: x feeds the shortcut
        h = self.c2(F.relu(self.c1(h)))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        if self.optimized:
            sc = self.c_sc(F.avg_pool2d(x, 2))
        elif self.c_sc is not None:
            sc = self.c_sc(x)
            sc = F.avg_pool2d(sc, 2) if self.downsample else sc
        else:
            sc = x
        return h + sc


class Generator(nn.Module):
    def __init__(self, image_size: int = 32, z_dim: int = 128, channels: int = 64, n_classes: int = 0):
        super().__init__()
        widths, _ = _widths(image_size, channels, channels)
        self.z_dim, self.n_classes, self.image_size = z_dim, n_classes, image_size
        self.seed_width = widths[0]
        self.l1 = nn.Linear(z_dim, 4 * 4 * widths[0])
        self.blocks = nn.ModuleList(GBlock(a, b, n_classes) for a, b in zip(widths[:-1], widths[1:]))
        self.b_out = nn.BatchNorm2d(widths[-1])
        self.c_out = nn.Conv2d(widths[-1], 3, 3, 1, 1)
        nn.init.xavier_uniform_(self.l1.weight, 1.0)
        nn.init.xavier_uniform_(self.c_out.weight, 1.0)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        z = flat_latent(z, self.z_dim)
        y = check_labels(y, self.n_classes, z.shape[0], "resnet generator")
        h = self.l1(z).view(z.shape[0], self.seed_width, 4, 4)
        for block in self.blocks:
            h = block(h, y)
        return torch.tanh(self.c_out(F.relu(self.b_out(h))))


class Discriminator(nn.Module):
    def __init__(self, image_size: int = 32, channels: int = 64, n_classes: int = 0):
        super().__init__()
        _, blocks = _widths(image_size, channels, channels)
        self.n_classes, self.image_size = n_classes, image_size
        self.blocks = nn.Sequential(*(DBlock(a, b, down, optimized=(i == 0)) for i, (a, b, down) in enumerate(blocks)))
        width = blocks[-1][1]
        self.l_out = nn.Linear(width, 1)
        nn.init.xavier_uniform_(self.l_out.weight, 1.0)
        self.embed = None
        if n_classes > 0:
            self.embed = nn.Embedding(n_classes, width)
            nn.init.xavier_uniform_(self.embed.weight, 1.0)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        y = check_labels(y, self.n_classes, x.shape[0], "resnet discriminator")
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))  # global sum pooling
        return projection(self.l_out(h).flatten(), self.embed, h, y)


def build(
    image_size: int,
    z_dim: int,
    g_channels: int,
    d_channels: int,
    n_classes: int = 0,
    spectral_norm: bool = False,
    d_batch_norm: bool = True,
) -> tuple[Generator, Discriminator]:
    return gan_pair(
        Generator(image_size, z_dim, g_channels, n_classes),
        Discriminator(image_size, d_channels, n_classes),
        spectral_norm,
    )
