"""How close translations are to their targets (paired data): L1, PSNR and SSIM, images in [0, 1].

Both sets are uint8 N×S×S×3 (what a saved PNG holds) scaled to [0, 1]. L1 is the mean absolute difference over
every pixel and channel. PSNR (data range 1) and SSIM (torchmetrics: Gaussian window 11, σ 1.5, the paper's
constants) are computed per image and averaged over the images, as pix2pix evaluations report them; an image equal
to its target has an infinite PSNR, counted as PSNR_CAP so that the mean and metrics.json stay finite.
"""

from __future__ import annotations

import numpy as np

PSNR_CAP = (
    120.0  # dB, an exact copy: above any finite PSNR of uint8 images up to 1024 px (one level off in one pixel: 113)
)
BATCH = 256  # images per torchmetrics PSNR call: memory stays flat for any set size
# images per torchmetrics SSIM call: its float64 window convolution (torch's im2col path, no oneDNN for float64)
# unfolds 121 values per pixel; one image at a time keeps that in cache (docs/translation.md), the same numbers
SSIM_BATCH = 1


def _unit(images: np.ndarray):
    import torch

    # NCHW in memory, not the permuted NHWC view: torch's float64 convolution (SSIM's window) runs 2x faster on it
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous().double().div(255)


def _check(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape or a.ndim != 4 or not len(a):
        raise ValueError(f"need two non-empty N×S×S×3 image sets of one shape, got {a.shape} and {b.shape}")


def l1(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |a - b| over every pixel and channel, in [0, 1] units."""
    _check(a, b)
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean() / 255)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Mean per-image PSNR in dB (data range 1), each capped at PSNR_CAP."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    _check(a, b)
    vals = [
        peak_signal_noise_ratio(
            _unit(a[s : s + BATCH]), _unit(b[s : s + BATCH]), data_range=1.0, reduction="none", dim=(1, 2, 3)
        ).clamp(max=PSNR_CAP)
        for s in range(0, len(a), BATCH)
    ]
    return float(np.concatenate([v.numpy() for v in vals]).mean())


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean per-image SSIM (1: identical)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check(a, b)
    vals = [
        structural_similarity_index_measure(
            _unit(a[s : s + SSIM_BATCH]), _unit(b[s : s + SSIM_BATCH]), data_range=1.0, reduction="none"
        )
        for s in range(0, len(a), SSIM_BATCH)
    ]
    return float(np.concatenate([v.numpy() for v in vals]).mean())


def paired_metrics(translated: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """{"l1", "psnr", "ssim"} of a set of translations against their targets."""
    return {"l1": l1(translated, target), "psnr": psnr(translated, target), "ssim": ssim(translated, target)}
