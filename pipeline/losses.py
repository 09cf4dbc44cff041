"""GAN objectives as (d_loss, g_loss) pairs over discriminator logits; LOSSES is the registry.

`bce` is the saturating minimax game V(D, G) exactly as Goodfellow et al. (2014) write it: D maximises
log D(x) + log(1 - D(G(z))) and G minimises log(1 - D(G(z))). `ns` swaps G's term for -log D(G(z)).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
LossFn = Callable[[Tensor, Tensor], Tensor]


def bce_d(real: Tensor, fake: Tensor) -> Tensor:
    # -[log σ(r) + log(1 - σ(f))] = softplus(-r) + softplus(f)
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def bce_g(fake: Tensor, real: Tensor | None = None) -> Tensor:
    # log(1 - σ(f)) = -softplus(f): the saturating generator objective, minimised
    return -F.softplus(fake).mean()


def ns_g(fake: Tensor, real: Tensor | None = None) -> Tensor:
    # -log σ(f) = softplus(-f)
    return F.softplus(-fake).mean()


def hinge_d(real: Tensor, fake: Tensor) -> Tensor:
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def hinge_g(fake: Tensor, real: Tensor | None = None) -> Tensor:
    return -fake.mean()


LOSSES: dict[str, tuple[LossFn, Callable[..., Tensor]]] = {
    "bce": (bce_d, bce_g),
    "ns": (bce_d, ns_g),
    "hinge": (hinge_d, hinge_g),
}
