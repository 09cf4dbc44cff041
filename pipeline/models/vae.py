"""A convolutional VAE (Kingma & Welling, 2014) with DCGAN-shaped networks, sized by params; a conditional
VAE (Sohn et al., 2015) when `n_classes > 0`.

`build` returns (decoder, encoder), in the (G, D) slots:
- decoder(z, y=None) → N×3×S×S in [-1, 1]: exactly the DCGAN generator's layout and signature (transposed
  convs from a 1×1 latent to a 4×4 map, doubled to S; BatchNorm-ReLU; tanh), widths from g_channels, so
  evaluate / render use it like any generator.
- encoder(x, y=None) → (mu, logvar), each N×z_dim: the DCGAN discriminator's conv stack (widths from
  d_channels, LeakyReLU(0.2), batch norm after all but the first conv) down to C×4×4, flattened, then one
  Linear to 2·z_dim split into mu and logvar (log σ², unbounded).

Conditioning: a learned `n_classes × n_classes` label embedding is concatenated to z at the decoder's input
and to the flattened features before the encoder's Linear (one embedding per network, as in cgan's G).
Any power-of-two image size >= 8 works. Convs start from DCGAN's N(0, 0.02). `spectral_norm` is accepted
for interface symmetry and ignored: the encoder is not a critic.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.dcgan import init_weights
from pipeline.models.layers import check_labels, flat_latent, power_of_two_depth

ARCH = "vae"


class Decoder(nn.Module):
    def __init__(self, image_size: int = 32, z_dim: int = 100, channels: int = 64, n_classes: int = 0):
        super().__init__()
        self.z_dim, self.n_classes, self.image_size = z_dim, n_classes, image_size
        n = power_of_two_depth(ARCH, image_size)
        self.label_emb = nn.Embedding(n_classes, n_classes) if n_classes > 0 else None
        width = channels * 2 ** (n - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_dim + n_classes, width, 4, 1, 0, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
        ]
        for _ in range(n - 1):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(True),
            ]
            width //= 2
        layers += [nn.ConvTranspose2d(width, 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = flat_latent(z, self.z_dim)
        y = check_labels(y, self.n_classes, h.shape[0], "vae decoder")
        if y is not None:
            h = torch.cat([h, self.label_emb(y)], dim=1)
        return self.net(h[:, :, None, None])


class Encoder(nn.Module):
    def __init__(self, image_size: int = 32, z_dim: int = 100, channels: int = 64, n_classes: int = 0):
        super().__init__()
        self.z_dim, self.n_classes, self.image_size = z_dim, n_classes, image_size
        n = power_of_two_depth(ARCH, image_size)
        width = channels
        layers: list[nn.Module] = [nn.Conv2d(3, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for _ in range(n - 1):
            layers += [
                nn.Conv2d(width, width * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width * 2),
                nn.LeakyReLU(0.2, True),
            ]
            width *= 2
        self.net = nn.Sequential(*layers)
        self.label_emb = nn.Embedding(n_classes, n_classes) if n_classes > 0 else None
        self.head = nn.Linear(width * 4 * 4 + n_classes, 2 * z_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        y = check_labels(y, self.n_classes, x.shape[0], "vae encoder")
        h = self.net(x).flatten(1)
        if y is not None:
            h = torch.cat([h, self.label_emb(y)], dim=1)
        mu, logvar = self.head(h).chunk(2, dim=1)
        return mu, logvar


def build(
    image_size: int,
    z_dim: int,
    g_channels: int,
    d_channels: int,
    n_classes: int = 0,
    spectral_norm: bool = False,
    d_batch_norm: bool = True,
) -> tuple[Decoder, Encoder]:
    dec = Decoder(image_size, z_dim, g_channels, n_classes)
    enc = Encoder(image_size, z_dim, d_channels, n_classes)
    dec.apply(init_weights)
    enc.apply(init_weights)
    return dec, enc
