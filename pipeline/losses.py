"""GAN objectives over discriminator logits, plus the critic regularisers; LOSSES is the registry.

Every entry is a `Loss`: `d(real_logits, fake_logits)` is minimised by D and `g(fake_logits)` by G, both scalars.

- `bce` is the saturating minimax game V(D, G) exactly as Goodfellow et al. (2014) write it: D maximises
  log D(x) + log(1 - D(G(z))) and G minimises log(1 - D(G(z))).
- `ns` swaps G's term for -log D(G(z)) (the non-saturating heuristic of the same paper).
- `wgan` is the Wasserstein critic of Arjovsky et al. (2017): D minimises E[D(G(z))] - E[D(x)], G minimises
  -E[D(G(z))]; `clip=True` tells the trainer to clamp D's weights (`clip_weights`) after each D step.
- `wgan-gp` is the same objective with the gradient penalty of Gulrajani et al. (2017) instead of clipping;
  `gp=True` tells the trainer to add `gp_weight * gradient_penalty(...)` to D's loss.
- `lsgan` is least squares (Mao et al. 2017) with a=0 (fake), b=1 (real), c=1 (what G wants D to say).
- `hinge` is the hinge loss of Lim & Ye (2017) / Miyato et al. (2018).

`r1_penalty` is the R1 regulariser of Mescheder et al. (2018), usable with any of the losses.
`lecam_penalty` is the LeCam regulariser of Tseng et al. (2021), anchored by `lecam_update`'s moving averages.
`consistency_penalty` is the balanced consistency regulariser (bCR) of Zhao et al. (2021).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


@dataclass(frozen=True)
class Loss:
    d: Callable[[Tensor, Tensor], Tensor]  # d(real_logits, fake_logits) -> scalar, minimised by D
    g: Callable[[Tensor], Tensor]  # g(fake_logits) -> scalar, minimised by G
    clip: bool = False  # WGAN weight clipping: trainer calls clip_weights(D, train.clip_value) after each D step
    gp: bool = False  # WGAN-GP: trainer adds gp_weight * gradient_penalty(...) to D's loss
    prob: bool = False  # D(x) is the probability σ(logit) that x is real (bce, ns); else the raw critic output

    def d_of(self, logits: Tensor) -> Tensor:
        """What the literature calls D(x) for these logits: σ(logits) for bce/ns, the logits otherwise."""
        return torch.sigmoid(logits) if self.prob else logits


def bce_d(real: Tensor, fake: Tensor) -> Tensor:
    # -[log σ(r) + log(1 - σ(f))] = softplus(-r) + softplus(f)
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def bce_g(fake: Tensor) -> Tensor:
    # log(1 - σ(f)) = -softplus(f): the saturating generator objective, minimised
    return -F.softplus(fake).mean()


def ns_g(fake: Tensor) -> Tensor:
    # -log σ(f) = softplus(-f)
    return F.softplus(-fake).mean()


def wgan_d(real: Tensor, fake: Tensor) -> Tensor:
    return fake.mean() - real.mean()


def wgan_g(fake: Tensor) -> Tensor:
    return -fake.mean()


def lsgan_d(real: Tensor, fake: Tensor) -> Tensor:
    # ½ E[(D(x) - b)²] + ½ E[(D(G(z)) - a)²] with a=0, b=1
    return 0.5 * (real - 1.0).square().mean() + 0.5 * fake.square().mean()


def lsgan_g(fake: Tensor) -> Tensor:
    # ½ E[(D(G(z)) - c)²] with c=1
    return 0.5 * (fake - 1.0).square().mean()


def hinge_d(real: Tensor, fake: Tensor) -> Tensor:
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def hinge_g(fake: Tensor) -> Tensor:
    return -fake.mean()


def per_sample_g(loss: Loss, fake: Tensor) -> Tensor:
    """G's loss for each logit alone (every `g` above is a mean over the batch of one function of a logit)."""
    return torch.vmap(loss.g)(fake.reshape(-1, 1))


# Top-k training (Sinha et al., NeurIPS 2020, "Top-k Training of GANs: Improving GAN Performance by Throwing
# Away Bad Samples"): G learns only from the k fakes D rates most real; k starts at the batch and shrinks by
# TOPK_DECAY each epoch of real images, down to ν × batch (train.topk = ν)
TOPK_DECAY = 0.99


def topk_count(batch: int, nu: float, epoch: int) -> int:
    """k for a global batch of `batch` fakes in epoch `epoch` (0-based): max(⌈ν·B⌉, ⌈γ^epoch·B⌉)."""
    return max(math.ceil(nu * batch - 1e-9), math.ceil(batch * TOPK_DECAY**epoch - 1e-9))


def topk_g(loss: Loss, fake: Tensor, everyone: Tensor, k: int, world_size: int = 1) -> Tensor:
    """G's loss over the global batch's top-k fakes, as this process's share: `fake` holds this process's logits
    and `everyone` the whole global batch's (detached; `fake` itself on one process). A fake counts when its
    logit is at least the k-th largest of the global batch (ties can add a few); the result is the selected
    fakes' summed loss on this process × world_size / the number selected, so that the mean over processes
    (the gradient all-reduce) is the mean over the selected."""
    threshold = torch.topk(everyone.detach().float(), k).values[-1]
    chosen = (fake.detach() >= threshold).to(fake.dtype)
    n = (everyone >= threshold).sum()
    return (per_sample_g(loss, fake) * chosen).sum() * world_size / n


LOSSES: dict[str, Loss] = {
    "bce": Loss(bce_d, bce_g, prob=True),
    "ns": Loss(bce_d, ns_g, prob=True),
    "wgan": Loss(wgan_d, wgan_g, clip=True),
    "wgan-gp": Loss(wgan_d, wgan_g, gp=True),
    "lsgan": Loss(lsgan_d, lsgan_g),
    "hinge": Loss(hinge_d, hinge_g),
}


def _critic(D: Callable[..., Tensor], x: Tensor, y: Tensor | None) -> Tensor:
    return D(x) if y is None else D(x, y)


def _input_grad(D: Callable[..., Tensor], x: Tensor, y: Tensor | None) -> Tensor:
    out = _critic(D, x, y)
    # per-sample outputs are independent, so d(sum)/dx_i = dD(x_i)/dx_i
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return grad


def gp_weights(generator: torch.Generator | None, total: int, rows: slice) -> Tensor:
    """The gradient penalty's interpolation weights ε ~ U(0, 1) for a batch of `total`, drawn on the CPU (float32)
    from `generator`, kept for `rows`."""
    return torch.rand(total, generator=generator, dtype=torch.float32)[rows]


def gradient_penalty(
    D,
    real: Tensor,
    fake: Tensor,
    y: Tensor | None = None,
    generator: torch.Generator | None = None,
    total: int | None = None,
    offset: int = 0,
    eps: Tensor | None = None,
) -> Tensor:
    """Gulrajani et al. (2017): mean over the batch of (||∇_x̂ D(x̂)||₂ - 1)², x̂ = ε·real + (1-ε)·fake.

    ε ~ U(0, 1) per sample is drawn on the CPU from `generator` (float32, then cast to real's dtype and moved to
    real's device), so it is reproducible whatever the device. As in diff_augment, ε is drawn for `total` rows
    (default: this batch) and rows [offset, offset + n) are used: a process holding that slice of a global batch
    draws what one process holding all of it would, and the generator moves on by the same amount. `eps`, when
    given, is ε already drawn (`gp_weights`) and nothing is drawn here.
    The result keeps its graph (create_graph=True): backpropagating it reaches D's parameters. `fake` is
    detached; D is called as D(x̂) or, with y, D(x̂, y).
    """
    if real.shape != fake.shape:
        raise ValueError(f"gradient_penalty: real {tuple(real.shape)} and fake {tuple(fake.shape)} differ in shape")
    n = real.shape[0]
    total = n if total is None else total
    if offset < 0 or offset + n > total:
        raise ValueError(f"gradient_penalty: rows [{offset}, {offset + n}) lie outside a batch of {total}")
    if eps is None:
        eps = gp_weights(generator, total, slice(offset, offset + n))
    eps = eps.to(device=real.device, dtype=real.dtype).view(n, *([1] * (real.dim() - 1)))
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    grad = _input_grad(D, x_hat, y)
    norm = torch.linalg.vector_norm(grad.reshape(n, -1), ord=2, dim=1)
    return (norm - 1).square().mean()


def r1_penalty(D, real: Tensor, y: Tensor | None = None) -> Tensor:
    """Mescheder et al. (2018): mean over the batch of ||∇_x D(x)||₂² on real data (graph kept).

    The trainer scales it by γ/2 (times the lazy-regularisation interval). `real` itself is left untouched:
    the gradient is taken w.r.t. a detached clone.
    """
    x = real.detach().clone().requires_grad_(True)
    grad = _input_grad(D, x, y)
    return grad.square().reshape(x.shape[0], -1).sum(dim=1).mean()


LECAM_DECAY = 0.99  # the anchors' moving-average decay in Tseng et al. (2021) and their code


def lecam_update(anchors: Tensor, means: Tensor) -> None:
    """Move the LeCam anchors, in place: `anchors` is [updates so far, α_R, α_F], `means` this step's mean D
    logits on real and on fake images (over the global batch). The first update takes the means as they are
    (no bias towards an initial 0); later ones are moving averages with decay LECAM_DECAY. Tensor ops only, so
    a captured CUDA graph replays it."""
    decay = (anchors[0] > 0).to(anchors.dtype) * LECAM_DECAY
    anchors[1:].mul_(decay).add_((1 - decay) * means.detach())
    anchors[0].add_(1)


def lecam_penalty(real: Tensor, fake: Tensor, anchor_real: Tensor, anchor_fake: Tensor) -> Tensor:
    """Tseng et al. (2021), "Regularizing GANs under limited data": mean(relu(D(x) - α_F)²) +
    mean(relu(α_R - D(G(z)))²) over D's logits, with α_R / α_F the moving averages of D's mean logits on real and
    on fake images (constants here). It keeps D's outputs on reals from running far above where its fakes sat,
    and on fakes far below where its reals sat: a bound on how sure D gets on a small dataset."""
    return F.relu(real - anchor_fake.detach()).square().mean() + F.relu(anchor_real.detach() - fake).square().mean()


def consistency_penalty(real: Tensor, real_t: Tensor, fake: Tensor, fake_t: Tensor) -> Tensor:
    """Zhao et al. (2021), "Improved consistency regularization for GANs" (bCR): mean((D(x) - D(T(x)))²) +
    mean((D(G(z)) - D(T(G(z))))²) over D's logits, where T(·) is a second augmentation of the same images. D
    learns to give an image and its augmentation the same score, on both sides; the paper weighs both terms
    alike (λ_real = λ_fake = 10 on CIFAR-10). Both logits of a pair carry gradient, as in the paper."""
    return (real - real_t).square().mean() + (fake - fake_t).square().mean()


def clip_weights(D: torch.nn.Module, c: float) -> None:
    """WGAN weight clipping (Arjovsky et al. 2017): clamp every parameter of D to [-c, c] in place."""
    if not c >= 0:
        raise ValueError(f"clip_weights: clip value must be >= 0, got {c}")
    with torch.no_grad():
        for p in D.parameters():
            p.clamp_(-c, c)
