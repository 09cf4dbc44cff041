"""Image-to-image networks (task translate): pix2pix's U-Net generator and PatchGAN discriminator (Isola et al.,
2017) and CycleGAN's ResNet generator (Zhu et al., 2017), which shares the PatchGAN discriminator.

A translator maps N×3×S×S images in [-1, 1] to N×3×S×S images in [-1, 1] (S a power of two, 16..1024).
TRANSLATORS maps `model` (pix2pix | cyclegan) to a builder `(image_size, g_channels, d_channels,
spectral_norm) -> (G, D)`; pix2pix's D judges (input, image) pairs (6 channels), CycleGAN's D an image alone.
Both D output a map of patch logits (N×1×h×w). Instance norm throughout (the papers' batch of one).

A generator's `blend` says how its network's output becomes the image: `none`, the output is the image (the papers');
`multiply`, the output is a colour layer multiplied with the input, as a colourist fills line art under its ink
(`multiply` below): the input's dark lines and white paper then need no drawing, and the network learns the colours.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from pipeline.models.layers import spectral_normalise

MIN_SIZE, MAX_SIZE = 16, 1024
BLENDS = ("none", "multiply")  # translate.blend


def multiply(x: torch.Tensor, layer: torch.Tensor) -> torch.Tensor:
    """The multiply blend of images in [-1, 1]: in [0, 1] terms, input × colour layer, so black stays black and white
    takes the layer's colour."""
    return (x + 1) * (layer + 1) / 2 - 1


def _blend(blend: str) -> str:
    if blend not in BLENDS:
        raise ValueError(f"unknown blend {blend!r}; known: {', '.join(BLENDS)}")
    return blend


def _check(image_size: int, who: str) -> int:
    depth = int(math.log2(image_size)) if image_size > 0 else 0
    if 2**depth != image_size or not MIN_SIZE <= image_size <= MAX_SIZE:
        raise ValueError(f"{who}: image_size must be a power of two in {MIN_SIZE}..{MAX_SIZE}, got {image_size}")
    return depth


def _norm(c: int) -> nn.Module:
    return nn.InstanceNorm2d(c, affine=True)


class DrawnDropout(nn.Module):
    """Dropout (p = 0.5, pix2pix's noise) whose mask a trainer can draw beforehand: with `mask` set (N×C×H×W of 0 and
    2, i.e. kept / (1 - p)), training multiplies by it; without one it is nn.Dropout. `shape` (C, H, W) is the
    activation it sees at the generator's image size, so that a trainer can draw masks for a global batch and give
    each process its rows, as it draws noise. No parameters: a state dict is that of a plain dropout."""

    P = 0.5

    def __init__(self, shape: tuple[int, int, int]):
        super().__init__()
        self.shape = shape
        self.mask: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        if self.mask is None:
            return nn.functional.dropout(x, self.P, True)
        return x * self.mask.to(x.dtype)


def draw_dropout(b: int, shape: tuple[int, int, int], generator: torch.Generator) -> torch.Tensor:
    """A global batch of DrawnDropout masks (b×C×H×W, on the CPU), drawn from `generator`."""
    keep = torch.rand((b, *shape), generator=generator) >= DrawnDropout.P
    return keep.float() / (1 - DrawnDropout.P)


class UNetBlock(nn.Module):
    """One level of the U-Net: down (conv 4×4 /2), the inner levels, up (transposed conv 4×4 ×2), skip concat.
    `dropout` is the (C, H, W) of the up path's output for a DrawnDropout there, or None."""

    def __init__(
        self,
        outer: int,
        inner: int,
        sub: nn.Module | None,
        outermost: bool = False,
        dropout: tuple[int, int, int] | None = None,
    ):
        super().__init__()
        innermost = sub is None
        down = [nn.Conv2d(outer if not outermost else 3, inner, 4, 2, 1, bias=innermost or outermost)]
        if not (outermost or innermost):
            down.append(_norm(inner))
        up_in = inner if innermost else inner * 2
        if outermost:
            up = [nn.ReLU(True), nn.ConvTranspose2d(up_in, 3, 4, 2, 1), nn.Tanh()]
        else:
            up = [nn.ReLU(True), nn.ConvTranspose2d(up_in, outer, 4, 2, 1, bias=False), _norm(outer)]
            if dropout is not None:
                up.append(DrawnDropout(dropout))
        self.outermost = outermost
        self.down = nn.Sequential(*([] if outermost else [nn.LeakyReLU(0.2, True)]), *down)
        self.sub = sub if sub is not None else nn.Identity()
        self.up = nn.Sequential(*up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up(self.sub(self.down(x)))
        return y if self.outermost else torch.cat([x, y], 1)


class UNet(nn.Module):
    """pix2pix's generator: log2(S) levels down to 1×1 and back, with skips; channels g·2^i capped at 8g;
    dropout 0.5 (the paper's noise) in the three innermost up levels that have room for it."""

    def __init__(self, image_size: int, g: int, blend: str = "none"):
        super().__init__()
        depth = _check(image_size, "pix2pix")
        self.blend = _blend(blend)
        ch = [min(g * 2**i, g * 8) for i in range(depth)]  # channels after down level i (0 = outermost)
        block: nn.Module | None = None
        for i in range(depth - 1, 0, -1):
            side = image_size >> i  # level i's up path outputs ch[i - 1] channels at S / 2^i
            drop = (ch[i - 1], side, side) if depth - 1 - 3 < i < depth - 1 else None
            block = UNetBlock(ch[i - 1], ch[i], block, dropout=drop)
        self.net = UNetBlock(3, ch[0], block, outermost=True)
        self.image_size = image_size
        self.dropouts = [m for m in self.modules() if isinstance(m, DrawnDropout)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        return multiply(x, y) if self.blend == "multiply" else y


class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(c, c, 3, bias=False),
            _norm(c),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(c, c, 3, bias=False),
            _norm(c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """CycleGAN's generator: c7s1-g, d2g, d4g, n residual blocks (6 below 256 px, 9 from 256), u2g, u1g, c7s1-3."""

    def __init__(self, image_size: int, g: int, blend: str = "none"):
        super().__init__()
        _check(image_size, "cyclegan")
        self.blend = _blend(blend)
        n_blocks = 9 if image_size >= 256 else 6
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(3, g, 7, bias=False), _norm(g), nn.ReLU(True)]
        for m in (1, 2):
            layers += [nn.Conv2d(g * m, g * m * 2, 3, 2, 1, bias=False), _norm(g * m * 2), nn.ReLU(True)]
        layers += [ResBlock(g * 4) for _ in range(n_blocks)]
        for m in (4, 2):
            layers += [nn.ConvTranspose2d(g * m, g * m // 2, 3, 2, 1, output_padding=1, bias=False)]
            layers += [_norm(g * m // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(g, 3, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.image_size = image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        return multiply(x, y) if self.blend == "multiply" else y


class PatchDiscriminator(nn.Module):
    """The 70×70 PatchGAN at 256 px (C64-C128-C256 stride 2, C512 stride 1, 1 channel): fewer stride-2 levels
    below 64 px so that the patch map stays at least 2×2."""

    def __init__(self, image_size: int, d: int, in_channels: int):
        super().__init__()
        depth = _check(image_size, "PatchGAN")
        n_down = min(3, depth - 3)  # 16 px: 1, 32 px: 2, >= 64 px: 3
        layers: list[nn.Module] = [nn.Conv2d(in_channels, d, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        c = d
        for i in range(1, n_down):
            layers += [nn.Conv2d(c, min(d * 2**i, d * 8), 4, 2, 1, bias=False)]
            c = min(d * 2**i, d * 8)
            layers += [_norm(c), nn.LeakyReLU(0.2, True)]
        c_next = min(c * 2, d * 8)
        layers += [nn.Conv2d(c, c_next, 4, 1, 1, bias=False), _norm(c_next), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(c_next, 1, 4, 1, 1)]
        self.net = nn.Sequential(*layers)
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def init_weights(module: nn.Module) -> nn.Module:
    """The papers' init: convolutions N(0, 0.02), norm scales N(1, 0.02), biases 0 (from torch's global RNG)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.InstanceNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


def _pair(G: nn.Module, D: nn.Module, spectral_norm: bool) -> tuple[nn.Module, nn.Module]:
    init_weights(G)
    init_weights(D)
    return G, spectral_normalise(D) if spectral_norm else D


def pix2pix(image_size: int, g_channels: int, d_channels: int, spectral_norm: bool = False, blend: str = "none"):
    return _pair(UNet(image_size, g_channels, blend), PatchDiscriminator(image_size, d_channels, 6), spectral_norm)


def cyclegan(image_size: int, g_channels: int, d_channels: int, spectral_norm: bool = False, blend: str = "none"):
    """One direction's (G, D); CycleGAN builds two."""
    G = ResnetGenerator(image_size, g_channels, blend)
    return _pair(G, PatchDiscriminator(image_size, d_channels, 3), spectral_norm)


TRANSLATORS: dict[str, Callable[..., tuple[nn.Module, nn.Module]]] = {"pix2pix": pix2pix, "cyclegan": cyclegan}


def new_translator(model: str, image_size: int, g_channels: int, blend: str = "none") -> nn.Module:
    """A fresh generator of `model` (to load a checkpoint's state into)."""
    if model not in TRANSLATORS:
        raise ValueError(f"unknown translator {model!r}; known: {', '.join(TRANSLATORS)}")
    return (UNet if model == "pix2pix" else ResnetGenerator)(image_size, g_channels, blend)
