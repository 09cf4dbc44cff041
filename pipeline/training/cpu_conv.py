"""Convolution weight gradients as one GEMM, for bf16 training on a CPU (`train.amp: bf16`).

oneDNN's bf16 backward-by-weights is slow for the small, wide maps at the bottom of a GAN: measured on the
AMX Xeon, the weight gradient of DCGAN's 256→512 convolution on 8×8 maps (batch 64) took 72 ms in oneDNN
and 11 ms as one matrix product over NHWC patches (im2col, 2 ms, then a bf16 GEMM, 9 ms); at 16→8 it took
28 against 14 ms; on 32×32 maps the patches cost more than they save. So: every convolution whose
*smaller* map (a convolution's output, a transposed convolution's input) has at most `MAX_POSITIONS`
positions computes its weight gradient here; the forward pass and the input gradient stay with oneDNN,
bit for bit as before. The GEMM accumulates in fp32 and rounds once, as oneDNN does; the order of the sum
differs, so the weights differ from oneDNN's in the last bits, and the result is deterministic (a resume is
bitwise). Only under CPU autocast: fp32 layers, and the fp32 passes of R1 and the gradient penalty, keep
PyTorch's own path (the custom Function is twice differentiable all the same). A/B of the whole bf16 step
(interleaved rounds): 1.20–1.34× for DCGAN at 64 px, 1.10× at the default 32 px model, 0.98× (noise) for
resnet at 32 px, whose time goes to its 16×16 and 32×32 maps. In fp32 the same change measured no gain (1.01×).

`use_gemm_weight_grads(model)` switches a model's eligible layers in place (their class, not their
parameters: state dicts and checkpoints are unchanged). Eligible: plain `nn.Conv2d` / `nn.ConvTranspose2d`
without groups, dilation or output padding, square kernel, stride and padding — every convolution of
dcgan, resnet and vae, except spectrally normalised ones (a parametrised layer has a generated class of its
own, and keeps oneDNN).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MAX_POSITIONS = 64  # an 8×8 map


def _patches(x: torch.Tensor, k: int, s: int, p: int) -> torch.Tensor:
    """im2col over NHWC: (N·OH·OW) × (k·k·C), each row one receptive field in (kh, kw, c) order."""
    n, c, h, w = x.shape
    xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, p, p, p, p))
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    sn, sh, sw, sc = xp.stride()
    return xp.as_strided((n, oh, ow, k, k, c), (sn, s * sh, s * sw, sh, sw, sc)).reshape(n * oh * ow, k * k * c)


def conv_weight_grad(x: torch.Tensor, grad_out: torch.Tensor, k: int, s: int, p: int) -> torch.Tensor:
    """dL/dW (Cout × Cin × k × k, channels_last strides) of `conv2d(x, W, stride=s, padding=p)`."""
    cout, cin = grad_out.shape[1], x.shape[1]
    g = grad_out.permute(0, 2, 3, 1).reshape(-1, cout)
    return (g.t() @ _patches(x, k, s, p)).view(cout, k, k, cin).permute(0, 3, 1, 2)


class _Conv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, s: int, p: int, transposed: bool):
        ctx.save_for_backward(x, w)
        ctx.s, ctx.p, ctx.transposed = s, p, transposed
        return F.conv_transpose2d(x, w, b, s, p) if transposed else F.conv2d(x, w, b, s, p)

    @staticmethod
    def backward(ctx, grad_out):
        x, w = ctx.saved_tensors
        s, p, tr = ctx.s, ctx.p, ctx.transposed
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = torch.ops.aten.convolution_backward(grad_out, x, w, None, [s, s], [p, p], [1, 1], tr, [0, 0], 1,
                                                     [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            k = w.shape[-1]
            # a transposed convolution's weight gradient is a convolution's, input and output swapped
            gw = conv_weight_grad(grad_out, x, k, s, p) if tr else conv_weight_grad(x, grad_out, k, s, p)
        if ctx.needs_input_grad[2]:
            gb = grad_out.sum(dim=(0, 2, 3))
        return gx, gw, gb, None, None, None


def _eligible(m: nn.Module) -> bool:
    if not isinstance(m.padding, tuple):  # padding="same" / "valid"
        return False
    square = all(len(set(v)) == 1 for v in (m.kernel_size, m.stride, m.padding))
    plain = m.groups == 1 and m.dilation == (1, 1) and m.padding_mode == "zeros"
    return square and plain and getattr(m, "output_padding", (0, 0)) == (0, 0)


def _apply(m: nn.Module, x: torch.Tensor, small_positions: int):
    """The GEMM-gradient path when it pays (training under CPU autocast, small map), else None. Outside
    autocast (fp32, and the R1 / gradient-penalty passes, which the trainer runs in fp32) PyTorch's own."""
    w, b = m.weight, m.bias
    if not (torch.is_grad_enabled() and w.requires_grad and x.device.type == "cpu"
            and torch.is_autocast_enabled("cpu") and small_positions <= MAX_POSITIONS):
        return None
    dtype = torch.get_autocast_dtype("cpu")
    x, w, b = x.to(dtype), w.to(dtype), (b.to(dtype) if b is not None else None)
    with torch.autocast("cpu", enabled=False):
        return _Conv.apply(x, w, b, m.stride[0], m.padding[0], isinstance(m, nn.ConvTranspose2d))


class GemmGradConv2d(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s, p = self.kernel_size[0], self.stride[0], self.padding[0]
        out = (x.shape[-2] + 2 * p - k) // s + 1, (x.shape[-1] + 2 * p - k) // s + 1
        y = _apply(self, x, out[0] * out[1])
        return super().forward(x) if y is None else y


class GemmGradConvTranspose2d(nn.ConvTranspose2d):
    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        y = _apply(self, x, x.shape[-2] * x.shape[-1]) if output_size is None else None
        return super().forward(x, output_size) if y is None else y


def use_gemm_weight_grads(model: nn.Module) -> int:
    """Switch every eligible Conv2d / ConvTranspose2d of `model` to GEMM weight gradients; returns how many."""
    n = 0
    for m in model.modules():
        cls = {nn.Conv2d: GemmGradConv2d, nn.ConvTranspose2d: GemmGradConvTranspose2d}.get(type(m))
        if cls is not None and _eligible(m):
            m.__class__ = cls
            n += 1
    return n
