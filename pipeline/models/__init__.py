"""Model families; MODELS maps `model.arch` to a builder of a (generator, discriminator) pair.

Every builder takes (image_size, z_dim, g_channels, d_channels, n_classes=0, spectral_norm=False).
KIND says how to train the pair:
- "gan" (mlp, dcgan, resnet, fastgan): (G, D) with `G(z, y=None)` → N×3×S×S in [-1, 1] and `D(x, y=None)` → N
  logits.
- "vae" (vae): (decoder, encoder) with `decoder(z, y=None)` → images in [-1, 1] (a generator to evaluate /
  render) and `encoder(x, y=None)` → (mu, logvar), each N×z_dim.
With `n_classes > 0` the models are class-conditional and y (N labels in [0, n_classes)) is required;
with `n_classes == 0`, y is ignored. Generators / decoders expose `z_dim` and `n_classes`.
`spectral_norm=True` spectrally normalises every Linear / Conv2d / Embedding of a GAN discriminator, which
then has no batch norm (ignored for the VAE). Batch norms are plain nn.BatchNorm1d / nn.BatchNorm2d only.
A discriminator whose class sets `reconstructs = True` (fastgan's) also takes `reconstruct=True` and then returns
(logits, a reconstruction loss), which the trainer adds to D's loss on real images.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from pipeline.models import dcgan, fastgan, mlp, resnet, vae

MODELS: dict[str, Callable[..., tuple[nn.Module, nn.Module]]] = {
    "mlp": mlp.build,
    "dcgan": dcgan.build,
    "resnet": resnet.build,
    "fastgan": fastgan.build,
    "vae": vae.build,
}

# the archs whose discriminator takes `mbstd_group` (a minibatch standard deviation layer; model.mbstd_group)
MBSTD: frozenset[str] = frozenset({"dcgan"})

KIND: dict[str, str] = {"mlp": "gan", "dcgan": "gan", "resnet": "gan", "fastgan": "gan", "vae": "vae"}


def build(
    arch: str,
    image_size: int,
    z_dim: int,
    g_channels: int,
    d_channels: int,
    n_classes: int = 0,
    spectral_norm: bool = False,
    d_batch_norm: bool = True,
    mbstd_group: int = 0,
) -> tuple[nn.Module, nn.Module]:
    """The (generator, discriminator) pair — (decoder, encoder) for a VAE — of `arch`, freshly initialised
    from torch's global RNG (seed it with torch.manual_seed first for a reproducible build).

    `d_batch_norm=False` builds a discriminator without batch norm (only dcgan's and fastgan's have any): the
    trainer asks for it with `model.d_batch_norm: false`, and always with the gradient penalty, which is defined
    per sample and which batch norm invalidates (Gulrajani et al. 2017, section 4)."""
    if arch not in MODELS:
        raise ValueError(f"unknown model arch {arch!r}; choose one of {', '.join(MODELS)}")
    if n_classes < 0:
        raise ValueError(f"{arch}: n_classes must be >= 0 (0 = unconditional), got {n_classes}")
    return MODELS[arch](
        image_size=image_size,
        z_dim=z_dim,
        g_channels=g_channels,
        d_channels=d_channels,
        n_classes=n_classes,
        spectral_norm=spectral_norm,
        d_batch_norm=d_batch_norm,
        **({"mbstd_group": mbstd_group} if mbstd_group else {}),  # only the archs in MBSTD take it
    )
