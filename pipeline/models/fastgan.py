"""FastGAN (Liu et al., 2021, "Towards Faster and Stabilized GAN Training for High-fidelity Few-shot Image
Synthesis", ICLR), scaled down so that it trains at 16-256 px on a CPU.

G: a 4×4 seed (transposed 4×4 conv, BN, GLU), then one up-block per doubling: nearest 2× upsampling, a 3×3 conv
to twice the width, BN and a GLU; at 8, 32, 128 px (every other doubling, as the paper) the block has a second
conv-BN-GLU. **Skip-layer excitation** (SLE): a low-resolution feature map gates the channels of a
high-resolution one, `h_hi · σ(conv1×1(swish(conv4×4(avgpool₄(h_lo)))))`. The paper pairs resolutions 16× apart
(64←4, 128←8, 256←16); at 16 and 32 px, where no such pair exists, the last map is gated by the 4×4 seed. A 3×3
conv and tanh give the image. Widths follow the paper's table divided by four, times `g_channels`
(4 px: 4g, 8: 2g, 16: g, 32 and 64: g/2, 128: g/4, 256: g/8, at least 8), so g_channels 256 is the paper's
ngf 64.

D: a strided 4×4 conv and leaky ReLU halve the image, then down-blocks (the paper's DownBlockComp: a strided
4×4 conv-BN-LReLU-3×3 conv-BN-LReLU path averaged with an avgpool-1×1 conv-BN-LReLU shortcut) halve it down to
8×8, widths d, 2d, 4d, ... capped at 8d. The logit head is the paper's: 1×1 conv-BN-LReLU, then a 4×4 conv to
a 5×5 map of logits, whose mean is the image's logit (this project's D returns one logit per image).

**The self-supervised discriminator**: a small decoder (up-blocks from D's 8×8 features, then 3×3 conv and
tanh) rebuilds the image D was shown (the augmented real one, at most 128 px: larger images are area-resized
to 128 as in the paper). `D(x, y, reconstruct=True)` returns (logits, MSE of the rebuild), and the trainer adds
that MSE to D's loss on real images with weight 1. The paper uses LPIPS, which needs downloaded VGG weights,
so MSE stands in; its second decoder of a random 16×16 crop is left out.

Left out, and why: G's noise injection (random noise drawn inside forward would break bitwise resume and the
equality of one and several processes; the latent is the only noise) and D's SLE and small-image branch
(the paper's extras for 256+ px). `spectral_norm=True` wraps D's convs and drops D's batch norms (the paper
normalises every conv of G and D; here G is never normalised, as in the other families).

Class conditioning (`n_classes > 0`): G's batch norms become conditional batch norm; D adds the projection term
⟨embed(y), Σ_spatial φ⟩ on the logit head's 1×1 features φ (Miyato & Koyama, 2018). Weights start from the
paper's N(0, 0.02) convs and N(1, 0.02) BN scales.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.dcgan import init_pair
from pipeline.models.layers import (
    apply_norm,
    batch_norm_2d,
    check_labels,
    check_size,
    flat_latent,
    projection,
)

ARCH = "fastgan"
SIZES = (16, 32, 64, 128, 256)
RECON_SIZE = 128  # the decoder rebuilds at most this many pixels a side (the paper's 128)
_MULT = {4: 16, 8: 8, 16: 4, 32: 2, 64: 2, 128: 1, 256: 0.5}  # the paper's nfc_multi (× ngf)


def g_width(res: int, g: int) -> int:
    return max(8, int(g * _MULT[res] / 4))


def sle_pairs(image_size: int) -> dict[int, int]:
    """{high resolution: the low resolution that gates it}: the paper's 16× pairs, or 4 → the image at 16 / 32 px."""
    pairs = {hi: hi // 16 for hi in (64, 128, 256) if hi <= image_size}
    return pairs or {image_size: 4}


class GLUBlock(nn.Module):
    """conv (to twice the width) - BN - GLU; `up` upsamples 2× (nearest) first; `batch_norm=False` drops the BN."""

    def __init__(self, c_in: int, c_out: int, n_classes: int, up: bool = True, batch_norm: bool = True):
        super().__init__()
        self.up = up
        self.conv = nn.Conv2d(c_in, 2 * c_out, 3, 1, 1, bias=False)
        self.bn = batch_norm_2d(2 * c_out, n_classes) if batch_norm else nn.Identity()

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return F.glu(apply_norm(self.bn, self.conv(x), y), dim=1)


class UpBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, n_classes: int, comp: bool):
        super().__init__()
        self.first = GLUBlock(c_in, c_out, n_classes)
        self.second = GLUBlock(c_out, c_out, n_classes, up=False) if comp else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = self.first(x, y)
        return self.second(h, y) if self.second is not None else h


class SLE(nn.Module):
    """Skip-layer excitation: per-channel gates for a high-resolution map from a low-resolution one."""

    def __init__(self, c_lo: int, c_hi: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.AdaptiveAvgPool2d(4),
            nn.Conv2d(c_lo, c_hi, 4, 1, 0, bias=False),
            nn.SiLU(),
            nn.Conv2d(c_hi, c_hi, 1, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        return hi * self.net(lo)


class Generator(nn.Module):
    def __init__(self, image_size: int = 32, z_dim: int = 100, channels: int = 32, n_classes: int = 0):
        super().__init__()
        check_size(ARCH, image_size, SIZES)
        self.z_dim, self.n_classes, self.image_size = z_dim, n_classes, image_size
        self.res = [4 * 2**i for i in range(image_size.bit_length() - 2)]  # 4, 8, ..., image_size
        w = {r: g_width(r, channels) for r in self.res}
        self.init = nn.ConvTranspose2d(z_dim, 2 * w[4], 4, 1, 0, bias=False)
        self.init_bn = batch_norm_2d(2 * w[4], n_classes)
        self.ups = nn.ModuleDict(
            {str(r): UpBlock(w[r // 2], w[r], n_classes, comp=r.bit_length() % 2 == 0) for r in self.res[1:]}
        )  # comp at 8, 32, 128 (log2 odd)
        self.pairs = sle_pairs(image_size)
        self.sle = nn.ModuleDict({str(hi): SLE(w[lo], w[hi]) for hi, lo in self.pairs.items()})
        self.to_rgb = nn.Conv2d(w[image_size], 3, 3, 1, 1, bias=False)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        z = flat_latent(z, self.z_dim)
        y = check_labels(y, self.n_classes, z.shape[0], "fastgan generator")
        h = F.glu(apply_norm(self.init_bn, self.init(z[:, :, None, None]), y), dim=1)
        feats = {4: h}
        for r in self.res[1:]:
            h = self.ups[str(r)](h, y)
            if r in self.pairs:
                h = self.sle[str(r)](feats[self.pairs[r]], h)
            feats[r] = h
        return torch.tanh(self.to_rgb(h))


def _bn(c: int, on: bool) -> nn.Module:
    return nn.BatchNorm2d(c) if on else nn.Identity()


class DownBlock(nn.Module):
    """The paper's DownBlockComp: (strided conv path + avgpool shortcut) / 2, halving the size."""

    def __init__(self, c_in: int, c_out: int, batch_norm: bool):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False),
            _bn(c_out, batch_norm),
            nn.LeakyReLU(0.2),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
            _bn(c_out, batch_norm),
            nn.LeakyReLU(0.2),
        )
        self.direct = nn.Sequential(
            nn.AvgPool2d(2, 2), nn.Conv2d(c_in, c_out, 1, 1, 0, bias=False), _bn(c_out, batch_norm), nn.LeakyReLU(0.2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.main(x) + self.direct(x)) / 2


class Decoder(nn.Module):
    """D's 8×8 features → an image of `size` px in [-1, 1] (the paper's SimpleDecoder, unconditional)."""

    def __init__(self, c_in: int, size: int, batch_norm: bool):
        super().__init__()
        blocks, c = [], c_in
        for _ in range(size.bit_length() - 4):  # 8 → size
            c_out = max(8, c // 2)
            blocks.append(GLUBlock(c, c_out, 0, batch_norm=batch_norm))
            c = c_out
        self.blocks = nn.ModuleList(blocks)
        self.to_rgb = nn.Conv2d(c, 3, 3, 1, 1, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            h = block(h, None)
        return torch.tanh(self.to_rgb(h))


class Discriminator(nn.Module):
    reconstructs = True  # D(x, y, reconstruct=True) -> (logits, reconstruction MSE): the trainer adds the MSE

    def __init__(self, image_size: int = 32, channels: int = 32, n_classes: int = 0, batch_norm: bool = True):
        super().__init__()
        check_size(ARCH, image_size, SIZES)
        self.n_classes, self.image_size = n_classes, image_size
        c = channels
        self.stem = nn.Sequential(nn.Conv2d(3, c, 4, 2, 1, bias=False), nn.LeakyReLU(0.2))
        downs, size = [], image_size // 2
        while size > 8:
            downs.append(DownBlock(c, min(2 * c, 8 * channels), batch_norm))
            c, size = min(2 * c, 8 * channels), size // 2
        self.downs = nn.Sequential(*downs)
        self.head = nn.Sequential(nn.Conv2d(c, 2 * c, 1, 1, 0, bias=False), _bn(2 * c, batch_norm), nn.LeakyReLU(0.2))
        self.logit = nn.Conv2d(2 * c, 1, 4, 1, 0, bias=False)  # 8×8 → 5×5 logits
        self.embed = nn.Embedding(n_classes, 2 * c) if n_classes > 0 else None
        self.recon_size = min(image_size, RECON_SIZE)
        self.decoder = Decoder(c, self.recon_size, batch_norm)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, reconstruct: bool = False):
        y = check_labels(y, self.n_classes, x.shape[0], "fastgan discriminator")
        feat = self.downs(self.stem(x))  # N×C×8×8
        h = self.head(feat)
        logits = projection(self.logit(h).mean(dim=(1, 2, 3)), self.embed, h.sum(dim=(2, 3)), y)
        if not reconstruct:
            return logits
        return logits, recon_loss(self.decoder(feat), x)


def recon_loss(rebuilt: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean squared error between D's rebuild and the image it was shown, area-resized to the rebuild's size."""
    target = x if x.shape[-1] == rebuilt.shape[-1] else F.interpolate(x, size=rebuilt.shape[-2:], mode="area")
    return F.mse_loss(rebuilt.float(), target.float())


def build(
    image_size: int,
    z_dim: int,
    g_channels: int,
    d_channels: int,
    n_classes: int = 0,
    spectral_norm: bool = False,
    d_batch_norm: bool = True,
) -> tuple[Generator, Discriminator]:
    g = Generator(image_size, z_dim, g_channels, n_classes)
    d = Discriminator(image_size, d_channels, n_classes, batch_norm=d_batch_norm and not spectral_norm)
    return init_pair(g, d, spectral_norm)
