"""The fully-connected GAN of the PyTorch-GAN tutorial (eriklindernoren/PyTorch-GAN, implementations/gan/gan.py),
sized by params.

G: Linear(z, 4c) LeakyReLU(0.2) → [Linear, BatchNorm1d(·, 0.8), LeakyReLU(0.2)] to 8c, 16c, 32c → Linear(32c, 3·S·S)
→ tanh, with c = g_channels (c = 32 gives the tutorial's 128/256/512/1024). The tutorial's `BatchNorm1d(n, 0.8)`
passes 0.8 positionally, i.e. as *eps*, not momentum; that quirk is reproduced on purpose.
D: flatten → Linear(3·S·S, 16d) LeakyReLU(0.2) → Linear(16d, 8d) LeakyReLU(0.2) → Linear(8d, 1), with d = d_channels
(d = 32 gives 512/256). D returns logits: the tutorial's final sigmoid lives in the loss. PyTorch default init.

Class conditioning (`n_classes > 0`): G concatenates an `n_classes × n_classes` label embedding to z, as the
tutorial's cgan.py does; D adds a projection term ⟨embed(y), φ(x)⟩ (Miyato & Koyama, 2018) on its last hidden
features φ (8d wide), the embedding Xavier-uniform initialised as in SN-GAN. `spectral_norm=True` wraps D's
Linears and projection embedding in spectral norm (D has no batch norm either way).

Any power-of-two image size >= 8 works (the parameter count grows as S²).
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.layers import check_labels, flat_latent, gan_pair, power_of_two_depth, projection

ARCH = "mlp"


class Generator(nn.Module):
    def __init__(self, image_size: int = 32, z_dim: int = 100, channels: int = 32, n_classes: int = 0):
        super().__init__()
        power_of_two_depth(ARCH, image_size)
        self.z_dim, self.n_classes, self.image_size = z_dim, n_classes, image_size
        c = channels
        self.label_emb = nn.Embedding(n_classes, n_classes) if n_classes > 0 else None

        def block(n_in: int, n_out: int, normalize: bool = True) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Linear(n_in, n_out)]
            if normalize:
                layers.append(nn.BatchNorm1d(n_out, 0.8))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            return layers

        self.model = nn.Sequential(
            *block(z_dim + n_classes, 4 * c, normalize=False),
            *block(4 * c, 8 * c),
            *block(8 * c, 16 * c),
            *block(16 * c, 32 * c),
            nn.Linear(32 * c, 3 * image_size * image_size),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        z = flat_latent(z, self.z_dim)
        y = check_labels(y, self.n_classes, z.shape[0], "mlp generator")
        if y is not None:
            z = torch.cat([self.label_emb(y), z], dim=1)
        return self.model(z).view(z.shape[0], 3, self.image_size, self.image_size)


class Discriminator(nn.Module):
    def __init__(self, image_size: int = 32, channels: int = 32, n_classes: int = 0):
        super().__init__()
        power_of_two_depth(ARCH, image_size)
        self.n_classes, self.image_size = n_classes, image_size
        d = channels
        self.features = nn.Sequential(
            nn.Linear(3 * image_size * image_size, 16 * d),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(16 * d, 8 * d),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.out = nn.Linear(8 * d, 1)
        self.embed = None
        if n_classes > 0:
            self.embed = nn.Embedding(n_classes, 8 * d)
            nn.init.xavier_uniform_(self.embed.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        y = check_labels(y, self.n_classes, x.shape[0], "mlp discriminator")
        h = self.features(x.reshape(x.shape[0], -1))
        return projection(self.out(h).flatten(), self.embed, h, y)


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
