"""DiffAugment: differentiable augmentation for data-efficient GAN training (Zhao et al., NeurIPS 2020).

The same random, differentiable transforms are applied to the real and the fake images D sees (and to the fakes in
G's step), following the reference DiffAugment_pytorch.py of mit-han-lab/data-efficient-gans:

- color: brightness x + U(-0.5, 0.5); saturation (x - m_c)·U(0, 2) + m_c around the per-pixel channel mean;
  contrast (x - m)·U(0.5, 1.5) + m around the image mean (in this order, each with its own draw).
- translation: an integer shift of up to round(H/8) rows and round(W/8) columns, zero padded.
- cutout: a zero square of round(H/2)×round(W/2) centred at a random position (clipped at the borders).

Each policy is applied to each sample independently with probability p; samples it is not applied to are left
exactly as they were. All randomness is drawn on the CPU from the caller's generator and then moved to x's device,
so the result is reproducible from the generator state alone. Random tensors are drawn for `total` rows and rows
[offset, offset + N) are used: a process holding that slice of a global batch augments it exactly as a single
process augmenting the whole batch would. The number and order of draws depends only on (policy, p > 0, total),
never on the data. `draw` makes those draws and `apply` the transforms (`diff_augment` is the two in turn), so
a training step can draw first and compute after, as a CUDA graph's replay needs.
"""

from __future__ import annotations

from typing import Sequence, get_args

import torch

from pipeline.config import Policy

Tensor = torch.Tensor

POLICIES = get_args(Policy)  # the config names them; one list

TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def _parse(policy: Sequence[str] | str) -> list[str]:
    names = [p.strip() for p in policy.split(",") if p.strip()] if isinstance(policy, str) else list(policy)
    bad = [p for p in names if p not in POLICIES]
    if bad:
        raise ValueError(f"diff_augment: unknown policy {', '.join(map(repr, bad))}; known: {', '.join(POLICIES)}")
    return names


def _uniform(g: torch.Generator, total: int, rows: slice) -> Tensor:
    # U[0, 1) per row, drawn on the CPU as float32 for the whole batch; this batch's rows
    return torch.rand(total, generator=g, dtype=torch.float32)[rows]


def _randint(g: torch.Generator, lo: int, hi: int, total: int, rows: slice) -> Tensor:
    return torch.randint(lo, hi, (total,), generator=g, dtype=torch.int64)[rows]


def _per_image(u: Tensor, x: Tensor) -> Tensor:
    # a drawn float32 row vector as N×1×1×1 in x's dtype on x's device
    return u.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def _draw_color(g: torch.Generator, h: int, w: int, total: int, rows: slice) -> tuple[Tensor, ...]:
    return _uniform(g, total, rows), _uniform(g, total, rows), _uniform(g, total, rows)


def _color(x: Tensor, applied: Tensor, u_brightness: Tensor, u_saturation: Tensor, u_contrast: Tensor) -> Tensor:
    brightness = _per_image(u_brightness, x) - 0.5
    saturation = _per_image(u_saturation, x) * 2
    contrast = _per_image(u_contrast, x) + 0.5
    y = x + brightness
    m = y.mean(dim=1, keepdim=True)
    y = (y - m) * saturation + m
    m = y.mean(dim=(1, 2, 3), keepdim=True)
    y = (y - m) * contrast + m
    return torch.where(applied.view(-1, 1, 1, 1), y, x)


def _draw_translation(g: torch.Generator, h: int, w: int, total: int, rows: slice) -> tuple[Tensor, ...]:
    sh, sw = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
    return _randint(g, -sh, sh + 1, total, rows), _randint(g, -sw, sw + 1, total, rows)


def _translation(x: Tensor, applied: Tensor, ty: Tensor, tx: Tensor) -> Tensor:
    n, c, h, w = x.shape
    ty, tx = ty.to(x.device) * applied, tx.to(x.device) * applied  # a zero shift is an exact copy
    # output[i, j] = x[i + ty, j + tx], reading the one-pixel zero border for anything outside the image
    xp = torch.nn.functional.pad(x, (1, 1, 1, 1))
    iy = (torch.arange(h, device=x.device).view(1, h) + ty.view(n, 1) + 1).clamp(0, h + 1)
    ix = (torch.arange(w, device=x.device).view(1, w) + tx.view(n, 1) + 1).clamp(0, w + 1)
    out = xp.gather(2, iy.view(n, 1, h, 1).expand(n, c, h, w + 2))
    return out.gather(3, ix.view(n, 1, 1, w).expand(n, c, h, w))


def _cutout_size(h: int, w: int) -> tuple[int, int]:
    return int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)


def _draw_cutout(g: torch.Generator, h: int, w: int, total: int, rows: slice) -> tuple[Tensor, ...]:
    ch, cw = _cutout_size(h, w)
    return _randint(g, 0, h + (1 - ch % 2), total, rows), _randint(g, 0, w + (1 - cw % 2), total, rows)


def _cutout(x: Tensor, applied: Tensor, cy: Tensor, cx: Tensor) -> Tensor:
    n, _, h, w = x.shape
    ch, cw = _cutout_size(h, w)
    y0, x0 = (cy.to(x.device) - ch // 2).view(n, 1), (cx.to(x.device) - cw // 2).view(n, 1)
    ar_h, ar_w = torch.arange(h, device=x.device).view(1, h), torch.arange(w, device=x.device).view(1, w)
    in_rows = (ar_h >= y0) & (ar_h < y0 + ch)  # N×H
    in_cols = (ar_w >= x0) & (ar_w < x0 + cw)  # N×W
    hole = in_rows.view(n, 1, h, 1) & in_cols.view(n, 1, 1, w) & applied.view(n, 1, 1, 1)
    return x.masked_fill(hole, 0.0)


_DRAW = {"color": _draw_color, "translation": _draw_translation, "cutout": _draw_cutout}
_APPLY = {"color": _color, "translation": _translation, "cutout": _cutout}

Draws = list  # [(policy name, applied mask, *parameters), ...]: what `draw` returns and `apply` takes


def draw(
    policy: Sequence[str],
    p: float,
    generator: torch.Generator,
    size: tuple[int, int],
    total: int,
    rows: slice | None = None,
) -> Draws:
    """The random part of diff_augment for a batch of `total` images of `size` (H, W): per policy a per-sample
    Bernoulli(p) mask, then the policy's parameters, all drawn on the CPU from `generator`, kept for `rows`
    (default: all). Nothing is drawn when p == 0 or the policy is empty. The draws depend only on
    (policy, p > 0, size, total), never on the data, so they can be made before the images exist (and copied
    to the device ahead of a CUDA graph's replay)."""
    names = _parse(policy)
    if p == 0 or not names:
        return []
    rows = slice(0, total) if rows is None else rows
    h, w = size
    out = []
    for name in names:
        applied = torch.rand(total, generator=generator, dtype=torch.float32)[rows] < p
        out.append((name, applied, *_DRAW[name](generator, h, w, total, rows)))
    return out


def apply(x: Tensor, draws: Draws) -> Tensor:
    """The differentiable part of diff_augment: the transforms `draws` describe, on x's device. No draws
    returns x itself."""
    for name, applied, *params in draws:
        x = _APPLY[name](x, applied.to(x.device), *params)
    return x


def diff_augment(
    x: Tensor, policy: Sequence[str], p: float, generator: torch.Generator, total: int | None = None, offset: int = 0
) -> Tensor:
    """Augment an N×C×H×W batch (values in [-1, 1]) differentiably; see the module docstring.

    `policy` is a sequence of names from POLICIES (a comma-separated string is accepted too), applied in order.
    For each policy a per-sample Bernoulli(p) mask is drawn first, then the policy's parameters. p == 0 (or an
    empty policy) returns x itself and draws nothing. `generator` must be a CPU generator.
    """
    names = _parse(policy)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"diff_augment: p must be in [0, 1], got {p}")
    if x.dim() != 4:
        raise ValueError(f"diff_augment: expected an N×C×H×W batch, got shape {tuple(x.shape)}")
    if generator.device.type != "cpu":
        raise ValueError(f"diff_augment: the generator must live on the CPU, not {generator.device}")
    n = x.shape[0]
    total = n if total is None else total
    if offset < 0 or offset + n > total:
        raise ValueError(f"diff_augment: rows [{offset}, {offset + n}) do not fit in a batch of total={total}")
    if p == 0 or not names:
        return x
    return apply(x, draw(names, p, generator, (x.shape[2], x.shape[3]), total, slice(offset, offset + n)))
