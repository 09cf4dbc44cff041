"""GAN objectives and critic regularisers, each checked against its textbook formula computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pipeline.losses import (
    LECAM_DECAY,
    LOSSES,
    TOPK_DECAY,
    Loss,
    clip_weights,
    consistency_penalty,
    gradient_penalty,
    lecam_penalty,
    lecam_update,
    r1_penalty,
    topk_count,
    topk_g,
)

REAL = [2.0, -1.0, 0.5]
FAKE = [-3.0, 0.0, 1.5]
NAMES = ["bce", "ns", "wgan", "wgan-gp", "lsgan", "hinge"]


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def t(xs) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


def bce_d_by_hand(r, f):
    return -mean(math.log(sigmoid(x)) for x in r) - mean(math.log(1 - sigmoid(x)) for x in f)


def wgan_d_by_hand(r, f):
    return mean(f) - mean(r)


EXPECTED = {
    "bce": (bce_d_by_hand, lambda f: mean(math.log(1 - sigmoid(x)) for x in f)),
    "ns": (bce_d_by_hand, lambda f: -mean(math.log(sigmoid(x)) for x in f)),
    "wgan": (wgan_d_by_hand, lambda f: -mean(f)),
    "wgan-gp": (wgan_d_by_hand, lambda f: -mean(f)),
    "lsgan": (
        lambda r, f: 0.5 * mean((x - 1) ** 2 for x in r) + 0.5 * mean(x**2 for x in f),
        lambda f: 0.5 * mean((x - 1) ** 2 for x in f),
    ),
    "hinge": (
        lambda r, f: mean(max(0.0, 1 - x) for x in r) + mean(max(0.0, 1 + x) for x in f),
        lambda f: -mean(f),
    ),
}


def test_registry_has_exactly_the_documented_losses():
    assert set(LOSSES) == set(NAMES)
    assert all(isinstance(v, Loss) for v in LOSSES.values())


def test_only_wgan_clips_and_only_wgan_gp_penalises():
    assert {k for k, v in LOSSES.items() if v.clip} == {"wgan"}
    assert {k for k, v in LOSSES.items() if v.gp} == {"wgan-gp"}


def test_loss_entries_are_frozen():
    with pytest.raises(Exception):
        LOSSES["bce"].clip = True  # type: ignore[misc]


@pytest.mark.parametrize("name", NAMES)
def test_discriminator_loss_matches_its_formula(name):
    got = LOSSES[name].d(t(REAL), t(FAKE)).item()
    assert got == pytest.approx(EXPECTED[name][0](REAL, FAKE), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_generator_loss_matches_its_formula(name):
    got = LOSSES[name].g(t(FAKE)).item()
    assert got == pytest.approx(EXPECTED[name][1](FAKE), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_losses_are_scalars_that_backpropagate(name):
    loss = LOSSES[name]
    r = t(REAL).requires_grad_()
    f = t(FAKE).requires_grad_()
    ld, lg = loss.d(r, f), loss.g(f)
    assert ld.shape == () and lg.shape == ()
    (ld + lg).backward()
    assert torch.isfinite(r.grad).all() and torch.isfinite(f.grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_losses_accept_column_logits(name):
    # discriminators often return N×1; the losses are means so the shape must not matter
    loss = LOSSES[name]
    col = loss.d(t(REAL).view(-1, 1), t(FAKE).view(-1, 1)), loss.g(t(FAKE).view(-1, 1))
    flat = loss.d(t(REAL), t(FAKE)), loss.g(t(FAKE))
    assert col[0].item() == pytest.approx(flat[0].item(), rel=1e-12) and col[1].item() == pytest.approx(flat[1].item())


def test_bce_discriminator_loss_is_stable_for_large_logits():
    d_loss = LOSSES["bce"].d
    # log σ(100) and log(1 - σ(-100)) are ~0; a naive log(sigmoid) of a float32 would give -inf for -100
    assert d_loss(torch.tensor([100.0]), torch.tensor([-100.0])).item() == pytest.approx(0.0, abs=1e-6)
    assert d_loss(torch.tensor([-100.0]), torch.tensor([100.0])).item() == pytest.approx(200.0, rel=1e-6)


def _grad_wrt_fake(name: str, logits: list[float]) -> torch.Tensor:
    f = t(logits).requires_grad_()
    LOSSES[name].g(f).backward()
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


def test_lsgan_generator_gradient_is_linear_in_the_logit():
    n = 2
    grad = _grad_wrt_fake("lsgan", [-3.0, 0.25])
    # d/df ½(f - 1)² / n = (f - 1) / n
    assert grad.tolist() == pytest.approx([(-3.0 - 1) / n, (0.25 - 1) / n], rel=1e-12)


def test_minimising_each_generator_loss_raises_the_fake_logit():
    # every generator loss must push D(G(z)) up (negative gradient wrt the fake logit)
    for name in NAMES:
        grad = _grad_wrt_fake(name, [0.0, 0.5])
        assert (grad < 0).all(), name


# ---------------------------------------------------------------- critics with known input gradients

SHAPE = (5, 2, 3, 3)  # N, C, H, W
DIM = 2 * 3 * 3


class Linear(nn.Module):
    """D(x) = <w, flatten(x)>: ∇_x D = w everywhere."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x):
        return x.flatten(1) @ self.w


class Norm(nn.Module):
    """D(x) = ||x||₂ per sample: ∇_x D = x/||x||, of norm 1 wherever x ≠ 0."""

    def forward(self, x):
        return x.flatten(1).norm(dim=1)


class Quadratic(nn.Module):
    """D(x) = ½ a ||x||² per sample: ∇_x D = a·x."""

    def __init__(self, a: float):
        super().__init__()
        self.a = a

    def forward(self, x):
        return 0.5 * self.a * x.flatten(1).square().sum(dim=1)


class Conditional(nn.Module):
    """D(x, y) = y · <w, x>: ∇_x D = y·w, of norm |y|·||w||."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = w
        self.seen_y = None

    def forward(self, x, y):
        self.seen_y = y
        return y * (x.flatten(1) @ self.w)


def rand(*shape, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def eps_for(seed: int, n: int) -> list[float]:
    # the documented draw: n float32 uniforms on the CPU from the generator
    return torch.rand(n, generator=gen(seed), dtype=torch.float32).double().tolist()


def flat(x: torch.Tensor) -> list[list[float]]:
    return x.reshape(x.shape[0], -1).tolist()


def test_gp_of_a_linear_critic_is_the_squared_excess_of_its_weight_norm():
    w = rand(DIM, seed=0)
    w_norm = math.sqrt(sum(v * v for v in w.tolist()))
    for seed in range(3):
        real, fake = rand(*SHAPE, seed=10 + seed), rand(*SHAPE, seed=20 + seed)
        gp = gradient_penalty(Linear(w), real, fake, generator=gen(seed))
        assert gp.shape == ()
        assert gp.item() == pytest.approx((w_norm - 1) ** 2, rel=1e-12)


def test_gp_of_a_unit_gradient_critic_is_zero():
    real, fake = rand(*SHAPE, seed=1), rand(*SHAPE, seed=2)
    assert gradient_penalty(Norm(), real, fake, generator=gen(0)).item() == pytest.approx(0.0, abs=1e-12)


def test_gp_of_a_quadratic_critic_uses_the_documented_interpolate():
    a, seed = 0.7, 123
    real, fake = rand(*SHAPE, seed=3), rand(*SHAPE, seed=4)
    got = gradient_penalty(Quadratic(a), real, fake, generator=gen(seed)).item()

    eps = eps_for(seed, SHAPE[0])
    by_hand = []
    for e, r, f in zip(eps, flat(real), flat(fake)):
        x_hat = [e * ri + (1 - e) * fi for ri, fi in zip(r, f)]
        grad_norm = math.sqrt(sum((a * v) ** 2 for v in x_hat))
        by_hand.append((grad_norm - 1) ** 2)
    assert got == pytest.approx(mean(by_hand), rel=1e-10)


def test_gp_is_differentiable_wrt_the_critic_parameters():
    w = rand(DIM, seed=5)
    D = Linear(w)
    real, fake = rand(*SHAPE, seed=6), rand(*SHAPE, seed=7)
    gradient_penalty(D, real, fake, generator=gen(0)).backward()
    w_norm = w.norm().item()
    # d/dw (||w|| - 1)² = 2(||w|| - 1) w / ||w||
    expected = [2 * (w_norm - 1) * v / w_norm for v in w.tolist()]
    assert D.w.grad.tolist() == pytest.approx(expected, rel=1e-10)


def test_gp_does_not_backpropagate_into_the_fake_images():
    w = rand(DIM, seed=8)
    fake = rand(*SHAPE, seed=9).requires_grad_()
    gradient_penalty(Linear(w), rand(*SHAPE, seed=10), fake, generator=gen(0)).backward()
    assert fake.grad is None


def test_gp_passes_the_condition_through():
    w = rand(DIM, seed=11)
    y = torch.tensor([1.0, -2.0, 0.5, 3.0, 1.0], dtype=torch.float64)
    D = Conditional(w)
    gp = gradient_penalty(D, rand(*SHAPE, seed=12), rand(*SHAPE, seed=13), y=y, generator=gen(0)).item()
    assert D.seen_y is y
    w_norm = w.norm().item()
    assert gp == pytest.approx(mean((abs(v) * w_norm - 1) ** 2 for v in y.tolist()), rel=1e-12)


def test_gp_is_reproducible_from_the_generator_seed():
    real, fake = rand(*SHAPE, seed=14), rand(*SHAPE, seed=15)
    D = Quadratic(0.3)
    a = gradient_penalty(D, real, fake, generator=gen(1)).item()
    b = gradient_penalty(D, real, fake, generator=gen(1)).item()
    c = gradient_penalty(D, real, fake, generator=gen(2)).item()
    assert a == b
    assert a != c


def test_gp_of_a_slice_of_a_global_batch_is_that_slice_of_the_whole():
    """Two ranks holding halves of a batch: their penalties average to the whole batch's, and each draws all ε."""
    n = SHAPE[0] + 1  # an even batch made of SHAPE[0] + 1 rows
    real, fake = rand(n, DIM, seed=20), rand(n, DIM, seed=21)
    D, h = Quadratic(0.6), n // 2
    g_all, g_lo, g_hi = gen(7), gen(7), gen(7)
    whole = gradient_penalty(D, real, fake, generator=g_all).item()
    lo = gradient_penalty(D, real[:h], fake[:h], generator=g_lo, total=n, offset=0).item()
    hi = gradient_penalty(D, real[h:], fake[h:], generator=g_hi, total=n, offset=h).item()
    assert (lo + hi) / 2 == pytest.approx(whole, rel=1e-12)
    assert lo != pytest.approx(hi)  # different rows, different ε
    assert g_lo.get_state().equal(g_all.get_state()) and g_hi.get_state().equal(g_all.get_state())
    with pytest.raises(ValueError, match="outside a batch of"):
        gradient_penalty(D, real[h:], fake[h:], generator=gen(7), total=n, offset=h + 1)


def test_gp_works_in_float32():
    w = torch.full((DIM,), 0.5)
    real, fake = torch.randn(*SHAPE), torch.randn(*SHAPE)
    gp = gradient_penalty(Linear(w), real, fake, generator=gen(0))
    assert gp.dtype == torch.float32
    assert gp.item() == pytest.approx((math.sqrt(DIM * 0.25) - 1) ** 2, rel=1e-5)


def test_r1_of_a_linear_critic_is_its_squared_weight_norm():
    w = rand(DIM, seed=16)
    r1 = r1_penalty(Linear(w), rand(*SHAPE, seed=17))
    assert r1.shape == ()
    assert r1.item() == pytest.approx(sum(v * v for v in w.tolist()), rel=1e-12)


def test_r1_of_a_quadratic_critic():
    a = 1.7
    real = rand(*SHAPE, seed=18)
    got = r1_penalty(Quadratic(a), real).item()
    assert got == pytest.approx(a * a * mean(sum(v * v for v in row) for row in flat(real)), rel=1e-12)


def test_r1_leaves_the_real_batch_alone():
    real = rand(*SHAPE, seed=19)
    before = real.clone()
    r1_penalty(Quadratic(2.0), real)
    assert not real.requires_grad and real.grad is None
    assert torch.equal(real, before)


def test_r1_is_differentiable_wrt_the_critic_parameters_and_passes_y():
    w = rand(DIM, seed=20)
    D = Linear(w)
    r1_penalty(D, rand(*SHAPE, seed=21)).backward()
    assert D.w.grad.tolist() == pytest.approx([2 * v for v in w.tolist()], rel=1e-12)  # d/dw ||w||²

    y = torch.full((SHAPE[0],), 3.0, dtype=torch.float64)
    Dc = Conditional(w)
    assert r1_penalty(Dc, rand(*SHAPE, seed=22), y=y).item() == pytest.approx(9 * w.square().sum().item(), rel=1e-12)
    assert Dc.seen_y is y


def test_clip_weights_clamps_every_parameter():
    torch.manual_seed(0)
    D = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(4, 1))
    with torch.no_grad():
        for p in D.parameters():
            p.mul_(10)
    before = [p.detach().clone() for p in D.parameters()]
    c = 0.0625  # exactly representable in float32, so the bound can be compared exactly
    clip_weights(D, c)
    for p, b in zip(D.parameters(), before):
        assert p.abs().max().item() <= c
        assert torch.equal(p, b.clamp(-c, c))
        assert p.requires_grad and p.grad is None


def test_clip_weights_rejects_a_negative_bound():
    with pytest.raises(ValueError):
        clip_weights(nn.Linear(2, 1), -0.1)


def test_lecam_penalty_matches_its_formula():
    # Tseng et al. (2021): mean(relu(D(x) - α_F)²) + mean(relu(α_R - D(G(z)))²)
    a_real, a_fake = 0.75, -0.5
    got = lecam_penalty(t(REAL), t(FAKE), torch.tensor(a_real), torch.tensor(a_fake)).item()
    expected = mean(max(r - a_fake, 0) ** 2 for r in REAL) + mean(max(a_real - f, 0) ** 2 for f in FAKE)
    assert expected > 0 and got == pytest.approx(expected, rel=1e-12)


def test_lecam_penalty_pulls_only_the_logits_and_not_the_anchors():
    r, f = t(REAL).requires_grad_(), t(FAKE).requires_grad_()
    anchors = t([0.75, -0.5]).requires_grad_()
    lecam_penalty(r, f, anchors[0], anchors[1]).backward()
    n = len(REAL)
    assert r.grad.tolist() == pytest.approx([2 * max(x + 0.5, 0) / n for x in REAL], rel=1e-12)
    assert f.grad.tolist() == pytest.approx([-2 * max(0.75 - x, 0) / n for x in FAKE], rel=1e-12)
    assert anchors.grad is None  # the anchors are constants of the step


def test_consistency_penalty_matches_its_formula_and_pulls_both_logits_of_a_pair():
    # Zhao et al. (2021), bCR: mean((D(x) - D(T(x)))²) + mean((D(G(z)) - D(T(G(z))))²)
    real_t, fake_t = [r + (-1) ** i * 0.5 * i for i, r in enumerate(REAL)], [f * 0.5 for f in FAKE]
    tensors = [t(v).requires_grad_() for v in (REAL, real_t, FAKE, fake_t)]
    got = consistency_penalty(*tensors)
    expected = mean((a - b) ** 2 for a, b in zip(REAL, real_t)) + mean((a - b) ** 2 for a, b in zip(FAKE, fake_t))
    assert expected > 0 and got.item() == pytest.approx(expected, rel=1e-12)
    got.backward()
    n = len(REAL)
    assert tensors[0].grad.tolist() == pytest.approx([2 * (a - b) / n for a, b in zip(REAL, real_t)], rel=1e-12)
    assert tensors[1].grad.tolist() == pytest.approx([-2 * (a - b) / n for a, b in zip(REAL, real_t)], rel=1e-12)
    assert tensors[3].grad.tolist() == pytest.approx([-2 * (a - b) / n for a, b in zip(FAKE, fake_t)], rel=1e-12)


def test_lecam_anchors_start_at_the_first_means_then_move_at_the_papers_decay():
    anchors = torch.zeros(3, dtype=torch.float64)
    lecam_update(anchors, t([2.0, -1.0]))
    assert anchors.tolist() == [1.0, 2.0, -1.0]  # no pull towards the zeros they started from
    lecam_update(anchors, t([4.0, 1.0]))
    d = LECAM_DECAY
    assert anchors.tolist() == pytest.approx([2.0, 2.0 * d + 4.0 * (1 - d), -1.0 * d + 1.0 * (1 - d)], rel=1e-12)


def test_topk_count_shrinks_by_the_papers_decay_each_epoch_down_to_nu_times_the_batch():
    # Sinha et al. (2020): k = max(γ^epoch · B, ν · B), γ = 0.99, rounded up to whole fakes
    assert TOPK_DECAY == 0.99
    assert [topk_count(16, 0.5, e) for e in (0, 1, 7, 46, 68, 69, 500)] == [16, 16, 15, 11, 9, 8, 8]
    assert topk_count(16, 0.5, 7) == math.ceil(16 * 0.99**7)  # 14.9 -> 15
    assert topk_count(10, 0.25, 1000) == 3  # ⌈2.5⌉
    assert topk_count(16, 1.0, 1000) == 16  # ν = 1: the whole batch, always


FAKES = [-3.0, 0.0, 1.5, 2.0, -0.5, 0.7]


@pytest.mark.parametrize("name", NAMES)
def test_topk_g_is_gs_loss_over_the_k_highest_logits_only(name):
    loss = LOSSES[name]
    f = t(FAKES).requires_grad_()
    got = topk_g(loss, f, f.detach(), 3)
    best = sorted(FAKES, reverse=True)[:3]  # 2.0, 1.5, 0.7
    assert got.item() == pytest.approx(loss.g(t(best)).item(), rel=1e-12)
    got.backward()
    chosen = [x in best for x in FAKES]
    assert all((g != 0) == c for g, c in zip(f.grad.tolist(), chosen)), f.grad  # the rest teach G nothing
    # k = the batch: G's ordinary loss
    assert topk_g(loss, t(FAKES), t(FAKES), 6).item() == pytest.approx(loss.g(t(FAKES)).item(), rel=1e-12)


def test_topk_g_shares_over_processes_average_to_the_global_top_k():
    """Each process holds half the batch; the gradient all-reduce averages their losses: that mean must be the
    mean over the global batch's top k, however the chosen fakes fall between the processes."""
    loss, everyone = LOSSES["ns"], t(FAKES)
    shares = [topk_g(loss, everyone[i * 3 : (i + 1) * 3], everyone, 4, world_size=2) for i in range(2)]
    best = sorted(FAKES, reverse=True)[:4]  # 1.5 and 0.0 on the first process, 2.0 and 0.7 on the second
    assert mean(s.item() for s in shares) == pytest.approx(loss.g(t(best)).item(), rel=1e-12)
