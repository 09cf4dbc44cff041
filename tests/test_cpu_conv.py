"""GEMM weight gradients for bf16 training on a CPU: the same gradients as PyTorch's convolutions, and only
where they are switched on."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from pipeline.training.cpu_conv import GemmGradConv2d, GemmGradConvTranspose2d, use_gemm_weight_grads

# (layer, input shape): DCGAN's strided layers on small maps, the 4×4 seed and logit layers, a 3×3 same conv
SMALL = [
    (lambda: nn.Conv2d(16, 32, 4, 2, 1, bias=False), (5, 16, 8, 8)),
    (lambda: nn.Conv2d(32, 1, 4, 1, 0, bias=False), (5, 32, 4, 4)),
    (lambda: nn.Conv2d(8, 12, 3, 1, 1), (5, 8, 6, 6)),  # resnet's, with a bias
    (lambda: nn.Conv2d(8, 12, 1, 1, 0), (5, 8, 4, 4)),  # resnet's shortcut
    (lambda: nn.ConvTranspose2d(32, 16, 4, 2, 1, bias=False), (5, 32, 4, 4)),
    (lambda: nn.ConvTranspose2d(10, 32, 4, 1, 0, bias=False), (5, 10, 1, 1)),
]


def grads(layer: nn.Module, x: torch.Tensor, autocast: bool):
    x = x.detach().clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        y = layer(x)
    # a fixed, non-uniform upstream gradient
    (y.float() * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    gw, layer.weight.grad = layer.weight.grad, None
    if layer.bias is not None:  # the bias gradient rides along with the weight's
        gw, layer.bias.grad = torch.cat([gw.flatten(), layer.bias.grad]), None
    return y.detach(), x.grad, gw


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize("make, shape", SMALL)
@pytest.mark.parametrize("channels_last", [False, True])
def test_weight_gradient_is_the_convolutions_in_fp32_and_the_rest_is_bit_for_bit(make, shape, channels_last):
    torch.manual_seed(0)
    ref = make()
    fast = copy.deepcopy(ref)
    assert use_gemm_weight_grads(fast) == 1
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    ref, fast = ref.to(memory_format=fmt), fast.to(memory_format=fmt)
    x = torch.randn(shape).contiguous(memory_format=fmt)
    y0, gx0, gw0 = grads(ref, x, autocast=False)
    y1, gx1, gw1 = grads(fast, x, autocast=False)
    assert torch.equal(y0, y1) and torch.equal(gx0, gx1)  # forward and input gradient: oneDNN's, unchanged
    assert gw1.shape == gw0.shape and rel(gw1, gw0) < 1e-5


@pytest.mark.parametrize("make, shape", SMALL)
def test_under_bf16_autocast_it_matches_onednn_and_fp32(make, shape):
    torch.manual_seed(1)
    ref = make().to(memory_format=torch.channels_last)
    fast = copy.deepcopy(ref)
    use_gemm_weight_grads(fast)
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    y0, gx0, gw0 = grads(ref, x, autocast=True)
    y1, gx1, gw1 = grads(fast, x, autocast=True)
    _, _, gw32 = grads(ref, x, autocast=False)
    assert y1.dtype == torch.bfloat16 and gw1.dtype == torch.float32  # bf16 arithmetic, fp32 parameter gradient
    assert torch.equal(y0, y1) and torch.equal(gx0, gx1)
    assert rel(gw1, gw0) < 1e-3  # the same bf16 products, summed in another order
    assert rel(gw1, gw32) < 2e-2  # and as close to the fp32 gradient as bf16 allows


def test_large_maps_frozen_weights_and_inference_take_pytorchs_own_path():
    torch.manual_seed(2)
    ref = nn.Conv2d(4, 6, 4, 2, 1, bias=False)
    fast = copy.deepcopy(ref)
    use_gemm_weight_grads(fast)
    big = torch.randn(3, 4, 32, 32)  # 16×16 output positions > MAX_POSITIONS
    small = torch.randn(3, 4, 8, 8)
    for x in (big, small):
        with torch.no_grad():
            assert torch.equal(ref(x), fast(x))
    # bitwise equal weight gradient on the large map: proof that it did not take the GEMM
    assert torch.equal(grads(ref, big, False)[2], grads(fast, big, False)[2])
    fast.weight.requires_grad_(False)  # D in G's step: only the input gradient is wanted
    x = small.clone().requires_grad_(True)
    fast(x).sum().backward()
    assert x.grad is not None and fast.weight.grad is None


def test_only_plain_convolutions_are_switched_and_the_state_dict_is_unchanged():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 4, 2, 1, bias=False),        # yes
        nn.Conv2d(8, 8, 3, 1, 1, groups=2, bias=False),  # groups: no
        nn.Conv2d(8, 8, 3, 1, 2, dilation=2, bias=False),  # dilation: no
        nn.Conv2d(8, 8, 3, padding="same", bias=False),  # string padding: no
        nn.Conv2d(8, 8, (3, 1), 1, (1, 0), bias=False),  # non-square: no
        nn.ConvTranspose2d(8, 8, 4, 2, 1, bias=False),   # yes
        nn.ConvTranspose2d(8, 8, 3, 2, 1, output_padding=1, bias=False),  # output padding: no
    )
    keys = list(model.state_dict())
    assert use_gemm_weight_grads(model) == 2  # (a bias is fine: resnet's convolutions have one)
    assert [type(m) for m in model if type(m) in (GemmGradConv2d, GemmGradConvTranspose2d)] == \
        [GemmGradConv2d, GemmGradConvTranspose2d]
    assert list(model.state_dict()) == keys
    model(torch.randn(2, 3, 16, 16)).sum().backward()  # the switched model still runs end to end


def test_spectrally_normalised_layers_are_left_to_pytorch():
    # parametrisation gives the module a generated class of its own; switching that class would drop the
    # parametrisation, so such layers keep oneDNN's weight gradients (and still get them)
    from pipeline.models.layers import spectral_normalise

    model = spectral_normalise(nn.Sequential(nn.Conv2d(6, 8, 4, 2, 1, bias=False)))
    assert use_gemm_weight_grads(model) == 0
    model(torch.randn(4, 6, 8, 8)).square().sum().backward()
    assert model[0].parametrizations.weight.original.grad is not None


def test_the_trainer_switches_only_for_bf16_on_the_cpu(tmp_path):
    from helpers import tiny_cfg

    from pipeline.config import parse
    from pipeline.training.dist import World
    from pipeline.training.loop import Data, Trainer

    images = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8)
    for amp, switched in (("auto", False), ("off", False), ("bf16", True)):
        trainer = Trainer(parse(tiny_cfg(tmp_path, train={"amp": amp})), Data(images, None, 0), World(),
                          torch.device("cpu"))
        convs = [m for net in (trainer.G, trainer.D) for m in net.modules() if isinstance(m, nn.modules.conv._ConvNd)]
        fast = [m for m in convs if isinstance(m, (GemmGradConv2d, GemmGradConvTranspose2d))]
        # the tiny DCGAN's convolutions are all plain (no bias, square), so bf16 switches every one
        assert len(convs) == 6 and len(fast) == (6 if switched else 0), amp
