"""GEMM weight gradients for bf16 training on a CPU: the same gradients as PyTorch's convolutions, and only
where they are switched on."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from pipeline.training import cpu_conv
from pipeline.training.cpu_conv import GemmGradConv2d, GemmGradConvTranspose2d, use_gemm_weight_grads

# (layer, input shape): DCGAN's strided layers on small maps, its 4×4 logit and seed layers, resnet's 3×3 (with
# a bias) and 1×1 shortcut
SMALL = [
    (lambda: nn.Conv2d(16, 32, 4, 2, 1, bias=False), (5, 16, 8, 8)),
    (lambda: nn.Conv2d(32, 1, 4, 1, 0, bias=False), (5, 32, 4, 4)),
    (lambda: nn.Conv2d(8, 12, 3, 1, 1), (5, 8, 6, 6)),
    (lambda: nn.Conv2d(8, 12, 1, 1, 0), (5, 8, 4, 4)),
    (lambda: nn.ConvTranspose2d(32, 16, 4, 2, 1, bias=False), (5, 32, 4, 4)),
    (lambda: nn.ConvTranspose2d(10, 32, 4, 1, 0, bias=False), (5, 10, 1, 1)),
    (lambda: nn.ConvTranspose2d(12, 8, 3, 1, 1), (5, 12, 5, 5)),
]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def run(layer: nn.Module, x: torch.Tensor, autocast: bool) -> dict[str, torch.Tensor]:
    """Output, its grad_fn's name, and the input / weight / bias gradients under a fixed upstream gradient."""
    x = x.detach().clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        y = layer(x)
    (y.float() * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    out = {"y": y.detach(), "fn": type(y.grad_fn).__name__, "x": x.grad, "w": layer.weight.grad}
    if layer.bias is not None:
        out["b"] = layer.bias.grad
    layer.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("k, s, p", [(4, 2, 1), (4, 1, 0), (3, 1, 1), (1, 1, 0), (3, 2, 1)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_the_gemm_weight_gradient_is_the_convolutions(transposed, k, s, p, channels_last):
    # the maths, in float64 against PyTorch's own convolution backward, in both memory layouts; also on a
    # sliced input (a storage offset and strides of its own)
    torch.manual_seed(0)
    cin, cout = 6, 7
    x = torch.randn(4, cin, 7, 7, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x = x[1:, :, 1:, :-1]  # 3×6×6×6, a view
    w = torch.randn((cin, cout, k, k) if transposed else (cout, cin, k, k), dtype=torch.float64)
    y = cpu_conv._Conv.apply(x, w, None, s, p, transposed)
    gy = torch.randn_like(y)
    _, want, _ = torch.ops.aten.convolution_backward(gy, x, w, None, [s, s], [p, p], [1, 1], transposed, [0, 0], 1,
                                                     [False, True, False])
    got = cpu_conv.conv_weight_grad(gy, x, k, s, p) if transposed else cpu_conv.conv_weight_grad(x, gy, k, s, p)
    assert got.shape == w.shape and rel(got, want) < 1e-12


def test_it_is_twice_differentiable_for_r1_and_the_gradient_penalty():
    # R1 and WGAN-GP differentiate D's input gradient again (create_graph=True)
    torch.manual_seed(1)
    for transposed, shape in ((False, (2, 3, 6, 6)), (True, (2, 3, 3, 3))):
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        w = torch.randn((3, 4, 4, 4) if transposed else (4, 3, 4, 4), dtype=torch.float64, requires_grad=True)
        b = torch.randn(4, dtype=torch.float64, requires_grad=True)
        fn = lambda x, w, b, tr=transposed: cpu_conv._Conv.apply(x, w, b, 2, 1, tr)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, w, b))
        assert torch.autograd.gradgradcheck(fn, (x, w, b))


@pytest.mark.parametrize("make, shape", SMALL)
def test_under_bf16_autocast_the_gemm_runs_and_matches_onednn(make, shape):
    torch.manual_seed(2)
    ref = make().to(memory_format=torch.channels_last)
    fast = copy.deepcopy(ref)
    assert use_gemm_weight_grads(fast) == 1
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    a, b = run(ref, x, autocast=True), run(fast, x, autocast=True)
    exact = run(ref, x, autocast=False)
    assert b["fn"] == "_ConvBackward" and a["fn"] != b["fn"]  # the GEMM path really ran
    assert b["y"].dtype == torch.bfloat16 and b["w"].dtype == torch.float32  # bf16 arithmetic, fp32 parameters
    assert torch.equal(a["y"], b["y"]) and torch.equal(a["x"], b["x"])  # forward and input gradient: oneDNN's
    # bf16 products summed in fp32, as oneDNN's own bf16 weight gradient: on an AMX Xeon the two agree within 1e-3
    # (the same products in another order); on an AVX2-only CPU (AMD EPYC here) oneDNN rounds its result to bf16
    # and the two differ by about that rounding (2.8-3.6e-3, 2^-8 = 3.9e-3), the GEMM one being the closer to fp32
    for key in ("w", "b") if "b" in a else ("w",):
        assert rel(b[key], a[key]) < 2 ** -7  # within two bf16 roundings of PyTorch's own bf16 gradient
        assert rel(b[key], exact[key]) <= 1.25 * rel(a[key], exact[key]) + 5e-4  # no further from fp32 than it
        assert rel(b[key], exact[key]) < 2e-2  # and as close to the fp32 gradient as bf16 allows


def test_fp32_large_maps_frozen_weights_and_inference_take_pytorchs_own_path():
    torch.manual_seed(3)
    ref = nn.Conv2d(4, 6, 4, 2, 1, bias=False)
    fast = copy.deepcopy(ref)
    use_gemm_weight_grads(fast)
    small, big = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 32, 32)  # 4×4 and 16×16 output positions
    assert run(fast, small, autocast=True)["fn"] == "_ConvBackward"
    for x, autocast in ((small, False), (big, True), (big, False)):  # fp32; over MAX_POSITIONS
        a, b = run(ref, x, autocast), run(fast, x, autocast)
        assert b["fn"] != "_ConvBackward" and all(torch.equal(a[k], b[k]) for k in ("y", "x", "w"))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert fast(small).grad_fn is None and torch.equal(ref(small), fast(small))
    fast.weight.requires_grad_(False)  # D in G's step: only the input gradient is wanted
    x = small.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fast(x)
    assert type(y.grad_fn).__name__ != "_ConvBackward"


def test_only_plain_convolutions_are_switched_and_the_state_dict_is_unchanged():
    from pipeline.models.layers import spectral_normalise

    model = nn.Sequential(
        nn.Conv2d(3, 8, 4, 2, 1, bias=False),              # yes
        nn.Conv2d(8, 8, 3, 1, 1),                          # yes (a bias is fine)
        nn.Conv2d(8, 8, 3, 1, 1, groups=2, bias=False),    # groups: no
        nn.Conv2d(8, 8, 3, 1, 2, dilation=2, bias=False),  # dilation: no
        nn.Conv2d(8, 8, 3, padding="same", bias=False),    # string padding: no
        nn.Conv2d(8, 8, (3, 1), 1, (1, 0), bias=False),    # non-square: no
        nn.ConvTranspose2d(8, 8, 4, 2, 1, bias=False),     # yes
        nn.ConvTranspose2d(8, 8, 3, 2, 1, output_padding=1, bias=False),  # output padding: no
        spectral_normalise(nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1)))[0],  # parametrised (own class): no
    )
    keys = list(model.state_dict())
    assert use_gemm_weight_grads(model) == 3
    assert [type(m) for m in model if type(m) in (GemmGradConv2d, GemmGradConvTranspose2d)] == \
        [GemmGradConv2d, GemmGradConv2d, GemmGradConvTranspose2d]
    assert list(model.state_dict()) == keys
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(torch.randn(2, 3, 8, 8))
    y.float().sum().backward()  # the switched model still trains end to end, spectral norm included
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("train", [{"amp": "bf16", "r1_gamma": 1.0, "r1_every": 1},
                                   {"amp": "bf16", "loss": "wgan-gp"}])
def test_the_trainer_uses_it_for_bf16_on_the_cpu_penalties_included(tmp_path, monkeypatch, train):
    from helpers import tiny_cfg

    from pipeline.config import parse
    from pipeline.training.dist import World
    from pipeline.training.loop import Data, Trainer

    images = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8)

    def trainer(**over):
        return Trainer(parse(tiny_cfg(tmp_path, train=over)), Data(images, None, 0), World(), torch.device("cpu"))

    def switched(t):
        fast = (GemmGradConv2d, GemmGradConvTranspose2d)
        return sum(isinstance(m, fast) for net in (t.G, t.D) for m in net.modules())

    assert switched(trainer(amp="auto")) == switched(trainer(amp="bf16", compile=True)) == 0
    t = trainer(**train)
    # the tiny 16 px DCGAN's six convolutions are all plain, and all on maps of at most 8×8
    assert switched(t) == 6
    calls = []
    real = cpu_conv.conv_weight_grad
    monkeypatch.setattr(cpu_conv, "conv_weight_grad", lambda *a: calls.append(1) or real(*a))
    out = t.gan_step(1)
    assert calls and all(math.isfinite(v.item()) for v in out.values())
    assert ("r1" in out) or ("gp" in out)


def test_bf16_on_a_cpu_without_native_bf16_warns_that_it_is_emulated(tmp_path, capfd):
    # measured on this project's AVX2 AMD EPYC (2026-11-28): the default 32 px model at 54 img/s in bf16 against
    # 719 in fp32; on an AMX Xeon bf16 is the faster one, and no warning is due
    from helpers import tiny_cfg

    from pipeline.config import parse
    from pipeline.device import cpu_bf16_native
    from pipeline.training.dist import World
    from pipeline.training.loop import Data, Trainer

    images = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8)
    for amp in ("auto", "off", "bf16"):
        Trainer(parse(tiny_cfg(tmp_path, train={"amp": amp})), Data(images, None, 0), World(), torch.device("cpu"))
    err = capfd.readouterr().err
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert cpu_bf16_native() == native
    if native:
        assert "bf16" not in err
    else:  # once, for the bf16 trainer only, naming the param and the fix
        assert err.count("train: warning: train.amp is bf16 but this CPU has no native bf16") == 1
        assert f"torch sees {torch.backends.cpu.get_cpu_capability()}" in err and "set train.amp: auto" in err
