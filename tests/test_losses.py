"""GAN objectives: each (d_loss, g_loss) equals its textbook formula, computed by hand in plain Python."""
from __future__ import annotations

import math

import pytest
import torch

from pipeline.losses import LOSSES

REAL = [2.0, -1.0, 0.5]
FAKE = [-3.0, 0.0, 1.5]


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def t(xs) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


def bce_d_by_hand(r, f):
    return -mean(math.log(sigmoid(x)) for x in r) - mean(math.log(1 - sigmoid(x)) for x in f)


EXPECTED = {
    "bce": (bce_d_by_hand, lambda f: mean(math.log(1 - sigmoid(x)) for x in f)),
    "ns": (bce_d_by_hand, lambda f: -mean(math.log(sigmoid(x)) for x in f)),
    "hinge": (
        lambda r, f: mean(max(0.0, 1 - x) for x in r) + mean(max(0.0, 1 + x) for x in f),
        lambda f: -mean(f),
    ),
}


def test_registry_has_exactly_the_documented_losses():
    assert set(LOSSES) == {"bce", "ns", "hinge"}


@pytest.mark.parametrize("name", ["bce", "ns", "hinge"])
def test_discriminator_loss_matches_its_formula(name):
    d_loss, _ = LOSSES[name]
    got = d_loss(t(REAL), t(FAKE)).item()
    assert got == pytest.approx(EXPECTED[name][0](REAL, FAKE), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("name", ["bce", "ns", "hinge"])
def test_generator_loss_matches_its_formula(name):
    _, g_loss = LOSSES[name]
    got = g_loss(t(FAKE)).item()
    assert got == pytest.approx(EXPECTED[name][1](FAKE), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("name", ["bce", "ns", "hinge"])
def test_losses_are_scalars_that_backpropagate(name):
    d_loss, g_loss = LOSSES[name]
    r = t(REAL).requires_grad_()
    f = t(FAKE).requires_grad_()
    ld, lg = d_loss(r, f), g_loss(f)
    assert ld.shape == () and lg.shape == ()
    (ld + lg).backward()
    assert torch.isfinite(r.grad).all() and torch.isfinite(f.grad).all()


def test_bce_discriminator_loss_is_stable_for_large_logits():
    d_loss, _ = LOSSES["bce"]
    # log σ(100) and log(1 - σ(-100)) are ~0; a naive log(sigmoid) of a float32 would give -inf for -100
    assert d_loss(torch.tensor([100.0]), torch.tensor([-100.0])).item() == pytest.approx(0.0, abs=1e-6)
    assert d_loss(torch.tensor([-100.0]), torch.tensor([100.0])).item() == pytest.approx(200.0, rel=1e-6)


def _grad_wrt_fake(name: str, logits: list[float]) -> torch.Tensor:
    _, g_loss = LOSSES[name]
    f = t(logits).requires_grad_()
    g_loss(f).backward()
    return f.grad


def test_bce_generator_saturates_when_the_discriminator_rejects_fakes():
    n = 4
    grad = _grad_wrt_fake("bce", [-20.0] * n)
    # d/df log(1 - σ(f)) / n = -σ(f) / n  ->  ~0 for a confidently rejected fake
    assert grad.abs().max().item() < 1e-8
    assert grad[0].item() == pytest.approx(-sigmoid(-20.0) / n, rel=1e-9)


def test_ns_generator_keeps_its_gradient_when_the_discriminator_rejects_fakes():
    n = 4
    grad = _grad_wrt_fake("ns", [-20.0] * n)
    # d/df -log σ(f) / n = -(1 - σ(f)) / n  ->  -1/n
    assert torch.allclose(grad, torch.full((n,), -1.0 / n, dtype=torch.float64), rtol=1e-8, atol=0)


def test_minimising_each_generator_loss_raises_the_fake_logit():
    # every generator loss must push D(G(z)) up (negative gradient wrt the fake logit)
    for name in ("bce", "ns", "hinge"):
        grad = _grad_wrt_fake(name, [0.0, 0.5])
        assert (grad < 0).all(), name
