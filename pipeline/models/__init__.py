"""Generator/discriminator families; MODELS maps `model.arch` to a (generator, discriminator) builder."""
from __future__ import annotations

from typing import Callable

from pipeline.models import dcgan

MODELS: dict[str, Callable] = {
    "dcgan": dcgan.build,
}


def build(arch: str, image_size: int, z_dim: int, g_channels: int, d_channels: int):
    return MODELS[arch](image_size=image_size, z_dim=z_dim, g_channels=g_channels, d_channels=d_channels)
