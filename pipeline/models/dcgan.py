"""DCGAN (Radford et al., 2016) sized by params: transposed-conv generator, strided-conv discriminator.

Depth follows the image size: a 4×4 seed is doubled log2(size/4) times, so 16, 32, 64, 128 px all work.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def _n_ups(image_size: int) -> int:
    n = int(math.log2(image_size)) - 2
    if n < 1 or 4 * 2**n != image_size:
        raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
    return n


class Generator(nn.Module):
    def __init__(self, image_size: int = 32, z_dim: int = 100, channels: int = 64):
        super().__init__()
        self.z_dim = z_dim
        n = _n_ups(image_size)
        width = channels * 2 ** (n - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_dim, width, 4, 1, 0, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
        ]
        for _ in range(n - 1):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2), nn.ReLU(True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], self.z_dim, 1, 1))


class Discriminator(nn.Module):
    def __init__(self, image_size: int = 32, channels: int = 64):
        super().__init__()
        n = _n_ups(image_size)
        width = channels
        layers: list[nn.Module] = [nn.Conv2d(3, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for _ in range(n - 1):
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width * 2), nn.LeakyReLU(0.2, True)]
            width *= 2
        layers += [nn.Conv2d(width, 1, 4, 1, 0, bias=False)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()  # logits, one per image


def init_weights(m: nn.Module) -> None:
    """The DCGAN paper's initialisation: N(0, 0.02) convolutions, N(1, 0.02) batch-norm scales."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def build(image_size: int, z_dim: int, g_channels: int, d_channels: int) -> tuple[Generator, Discriminator]:
    g = Generator(image_size, z_dim, g_channels)
    d = Discriminator(image_size, d_channels)
    g.apply(init_weights)
    d.apply(init_weights)
    return g, d
