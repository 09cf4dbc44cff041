"""DCGAN (Radford et al., 2016) sized by params: transposed-conv generator, strided-conv discriminator.

Depth follows the image size: a 4×4 seed is doubled log2(size/4) times, so 8, 16, 32, 64, 128 px (any power
of two >= 8) all work. Weights start from the paper's N(0, 0.02).

Class conditioning (`n_classes > 0`):
- G: every batch norm becomes conditional batch norm (a plain `BatchNorm2d(affine=False)` followed by a
  per-class scale/shift looked up from embeddings initialised to 1 / 0), so at initialisation the conditional
  generator is the unconditional one and the labels' influence is learned.
- D: a projection discriminator (Miyato & Koyama, 2018). φ(x) is the feature map before the last conv
  (C×4×4). The unconditional logit ψ(φ) is that last 4×4 conv, exactly as in the unconditional D (it is a
  linear function of the flattened features); the conditional D adds the projection term
  ⟨embed(y), Σ_spatial φ⟩, with the embedding initialised N(0, 0.02) like the rest of DCGAN.

`spectral_norm=True` wraps every conv (and the projection embedding) of D in spectral normalisation and drops
D's batch norms, as SN-GAN discriminators have none. The generator is never spectrally normalised.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.layers import (
    ConditionalBatchNorm2d,
    MinibatchStd,
    apply_norm,
    batch_norm_2d,
    check_labels,
    flat_latent,
    power_of_two_depth,
    projection,
    spectral_normalise,
)

ARCH = "dcgan"


def _n_ups(image_size: int) -> int:
    return power_of_two_depth(ARCH, image_size)


class Generator(nn.Module):
    def __init__(self, image_size: int = 32, z_dim: int = 100, channels: int = 64, n_classes: int = 0):
        super().__init__()
        self.z_dim, self.n_classes, self.image_size = z_dim, n_classes, image_size
        n = _n_ups(image_size)
        width = channels * 2 ** (n - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_dim, width, 4, 1, 0, bias=False),
            batch_norm_2d(width, n_classes),
            nn.ReLU(True),
        ]
        for _ in range(n - 1):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                batch_norm_2d(width // 2, n_classes),
                nn.ReLU(True),
            ]
            width //= 2
        layers += [nn.ConvTranspose2d(width, 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)  # same state-dict keys as before conditioning existed

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = flat_latent(z, self.z_dim)
        y = check_labels(y, self.n_classes, h.shape[0], "dcgan generator")
        h = h[:, :, None, None]
        if y is None:
            return self.net(h)
        for layer in self.net:
            h = apply_norm(layer, h, y)
        return h


class Discriminator(nn.Module):
    """Strided convs to a 4×4 map, then a 4×4 conv to one logit; `batch_norm=False` drops the batch norms
    (used with spectral norm)."""

    def __init__(
        self,
        image_size: int = 32,
        channels: int = 64,
        n_classes: int = 0,
        batch_norm: bool = True,
        mbstd_group: int = 0,
    ):
        super().__init__()
        self.n_classes, self.image_size = n_classes, image_size
        n = _n_ups(image_size)
        width = channels
        layers: list[nn.Module] = [nn.Conv2d(3, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for _ in range(n - 1):
            layers.append(nn.Conv2d(width, width * 2, 4, 2, 1, bias=False))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width * 2))
            layers.append(nn.LeakyReLU(0.2, True))
            width *= 2
        if mbstd_group:  # the minibatch standard deviation joins the 4×4 features as one more channel
            layers.append(MinibatchStd(mbstd_group))
            width += 1
        layers += [nn.Conv2d(width, 1, 4, 1, 0, bias=False)]
        self.net = nn.Sequential(*layers)
        self.embed = nn.Embedding(n_classes, width) if n_classes > 0 else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        y = check_labels(y, self.n_classes, x.shape[0], "dcgan discriminator")
        if y is None:
            return self.net(x).flatten()  # logits, one per image
        h = self.net[:-1](x)  # φ(x): N×C×4×4
        return projection(self.net[-1](h).flatten(), self.embed, h.sum(dim=(2, 3)), y)


def init_weights(m: nn.Module) -> None:
    """The DCGAN paper's initialisation: N(0, 0.02) convolutions, N(1, 0.02) batch-norm scales.

    Conditional batch norm keeps its own init (scale 1, shift 0); the projection embedding gets N(0, 0.02).
    """
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d) and m.affine:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)
    elif isinstance(m, ConditionalBatchNorm2d):
        m.reset_parameters()


def build(
    image_size: int,
    z_dim: int,
    g_channels: int,
    d_channels: int,
    n_classes: int = 0,
    spectral_norm: bool = False,
    d_batch_norm: bool = True,
    mbstd_group: int = 0,
) -> tuple[Generator, Discriminator]:
    g = Generator(image_size, z_dim, g_channels, n_classes)
    d = Discriminator(image_size, d_channels, n_classes, d_batch_norm and not spectral_norm, mbstd_group)
    return init_pair(g, d, spectral_norm)


def init_pair(g: nn.Module, d: nn.Module, spectral_norm: bool) -> tuple[nn.Module, nn.Module]:
    """(G, D) with the DCGAN paper's initialisation (and D's projection embedding N(0, 0.02)), D then spectrally
    normalised when asked: dcgan's and fastgan's builders."""
    g.apply(init_weights)
    d.apply(init_weights)
    if d.embed is not None:
        nn.init.normal_(d.embed.weight, 0.0, 0.02)
    if spectral_norm:
        spectral_normalise(d)
    return g, d
