"""Building blocks shared by the model families: conditional batch norm, optional spectral norm,
label checking and image-size validation.

Batch normalisation is only ever `nn.BatchNorm1d` / `nn.BatchNorm2d` (conditional batch norm wraps a plain
`nn.BatchNorm2d(affine=False)`), so a trainer can swap those module types for a synchronised version.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose scale and shift are looked up per class (de Vries et al., 2017; Miyato & Koyama, 2018).

    `bn` is a plain `nn.BatchNorm2d(affine=False)`; `gamma` / `beta` are `n_classes × C` embeddings initialised
    to 1 and 0, so at initialisation the layer is an unconditional batch norm.
    """

    def __init__(self, num_features: int, n_classes: int):
        super().__init__()
        self.num_features, self.n_classes = num_features, n_classes
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.gamma = nn.Embedding(n_classes, num_features)
        self.beta = nn.Embedding(n_classes, num_features)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.bn(x)
        return self.gamma(y)[:, :, None, None] * h + self.beta(y)[:, :, None, None]


def batch_norm_2d(num_features: int, n_classes: int) -> nn.Module:
    """Conditional batch norm when `n_classes > 0`, else a plain affine `nn.BatchNorm2d`."""
    return ConditionalBatchNorm2d(num_features, n_classes) if n_classes > 0 else nn.BatchNorm2d(num_features)


def apply_norm(norm: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    return norm(x, y) if isinstance(norm, ConditionalBatchNorm2d) else norm(x)


SN_TYPES = (nn.Linear, nn.Conv2d, nn.Embedding)


def spectral_normalise(model: nn.Module) -> nn.Module:
    """Wrap the weight of every Linear / Conv2d / Embedding in `model` in spectral normalisation
    (Miyato et al., 2018), in place, keeping the current weights as the parametrisation's original.
    Call after weight initialisation."""
    for m in [m for m in model.modules() if isinstance(m, SN_TYPES)]:
        _spectral_norm(m)
    return model


class MinibatchStd(nn.Module):
    """Appends one feature map: the standard deviation of each feature over a group of `group` samples,
    averaged over features and pixels, for every sample of its group (Karras et al. 2018, ProGAN section 3).
    D then sees how varied a batch is, which pushes G away from drawing the same picture.

    The group is the largest divisor of the batch not above `group`, and groups are consecutive rows (StyleGAN2
    strides them instead): a process's rows of the global batch are consecutive, so with several processes
    each group sits inside one process and the run matches one process's whenever the local batch is a
    multiple of the group."""

    def __init__(self, group: int = 4):
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = max(d for d in range(1, min(self.group, n) + 1) if n % d == 0)
        y = x.float().reshape(n // g, g, c, h, w)
        y = (y - y.mean(1, keepdim=True)).square().mean(1).add(1e-8).sqrt()  # N/g × C × H × W: std over each group
        y = y.mean(dim=(1, 2, 3)).to(x.dtype).repeat_interleave(g).reshape(n, 1, 1, 1).expand(n, 1, h, w)
        return torch.cat([x, y], dim=1)

    def extra_repr(self) -> str:
        return f"group={self.group}"


def projection(logits: torch.Tensor, embed: nn.Module | None, h: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """The projection discriminator's class term (Miyato & Koyama, 2018): logits + ⟨embed(y), h⟩, h = N×C features."""
    return logits if y is None else logits + (embed(y) * h).sum(dim=1)


def gan_pair(g: nn.Module, d: nn.Module, spectral_norm: bool) -> tuple[nn.Module, nn.Module]:
    """(G, D) with D spectrally normalised when asked (after its initialisation)."""
    if spectral_norm:
        spectral_normalise(d)
    return g, d


def check_labels(y: torch.Tensor | None, n_classes: int, n: int, who: str) -> torch.Tensor | None:
    """The labels a class-conditional module needs, validated; None for an unconditional one (y ignored)."""
    if n_classes <= 0:
        return None
    if y is None:
        raise ValueError(
            f"{who} is class-conditional (n_classes={n_classes}): pass y, a LongTensor of {n} labels in "
            f"[0, {n_classes})"
        )
    if not isinstance(y, torch.Tensor) or y.dtype.is_floating_point or y.dtype == torch.bool or y.shape != (n,):
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(
            f"{who}: y must be an integer tensor of shape ({n},) with labels in [0, {n_classes}), got {shape}"
        )
    return y.long()


def power_of_two_depth(arch: str, image_size: int, minimum: int = 8) -> int:
    """log2(image_size / 4): how many 2× up/down-samplings lie between a 4×4 map and the image."""
    n = int(math.log2(image_size)) - 2 if image_size > 0 else -1
    if image_size < minimum or 4 * 2**n != image_size:
        sizes = ", ".join(str(minimum * 2**i) for i in range(5))
        raise ValueError(f"{arch}: image_size must be a power of two >= {minimum} ({sizes}, ...), got {image_size}")
    return n


def check_size(arch: str, image_size: int, allowed: Iterable[int]) -> None:
    allowed = tuple(allowed)
    if image_size not in allowed:
        raise ValueError(f"{arch}: image_size must be one of {', '.join(map(str, allowed))}, got {image_size}")


def flat_latent(z: torch.Tensor, z_dim: int) -> torch.Tensor:
    """N×z_dim from N×z_dim or N×z_dim×1×1."""
    if z.dim() < 2 or z[0].numel() != z_dim:
        raise ValueError(f"expected a latent of shape (N, {z_dim}) or (N, {z_dim}, 1, 1), got {tuple(z.shape)}")
    return z.reshape(z.shape[0], z_dim)
