"""Images between the generator's [-1, 1] float tensors, uint8 arrays and PIL grids: one conversion, one grid."""

from __future__ import annotations

import numpy as np


def to_uint8(x):
    """[-1, 1] float NCHW tensor -> uint8 NHWC tensor, as a PNG of the sample stores it."""
    import torch

    return x.detach().float().add(1).mul(127.5).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def grid(images: np.ndarray, nrow: int, padding: int = 2):
    """A PIL grid of uint8 NHWC images, `nrow` per row, on white (the padding and any empty cells)."""
    from PIL import Image

    n, s = len(images), images.shape[1]
    cols = max(1, min(nrow, n))
    rows = (n + cols - 1) // cols
    canvas = Image.new("RGB", (cols * (s + padding) + padding, rows * (s + padding) + padding), "white")
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        canvas.paste(Image.fromarray(img), (padding + c * (s + padding), padding + r * (s + padding)))
    return canvas


def grid_image(x, nrow: int = 8):
    """A PIL grid of a [-1, 1] float NCHW tensor of images."""
    return grid(to_uint8(x.cpu()).numpy(), nrow)
