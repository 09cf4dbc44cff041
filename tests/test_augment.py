"""DiffAugment: shapes, reproducibility, differentiability, each policy's effect, per-sample p, sharded batches."""

from __future__ import annotations

import pytest
import torch

from pipeline.augment import POLICIES, diff_augment

N, C, H, W = 4, 3, 16, 16


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int = N, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(n, C, H, W, generator=gen(seed), dtype=dtype) * 2 - 1


@pytest.mark.parametrize("policy", [[p] for p in POLICIES] + [list(POLICIES)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_and_dtype_are_preserved(policy, dtype):
    x = images(dtype=dtype)
    y = diff_augment(x, policy, 1.0, gen())
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device


def test_p_zero_returns_the_input_and_draws_nothing():
    x = images()
    g = gen(3)
    state = g.get_state()
    assert diff_augment(x, POLICIES, 0.0, g) is x
    assert torch.equal(g.get_state(), state)


def test_empty_policy_returns_the_input_and_draws_nothing():
    x = images()
    g = gen(3)
    state = g.get_state()
    assert diff_augment(x, [], 1.0, g) is x
    assert torch.equal(g.get_state(), state)


def test_the_input_is_not_modified():
    x = images()
    before = x.clone()
    diff_augment(x, POLICIES, 1.0, gen())
    assert torch.equal(x, before)


def test_same_seed_same_output_different_seed_different_output():
    x = images()
    a = diff_augment(x, POLICIES, 1.0, gen(1))
    b = diff_augment(x, POLICIES, 1.0, gen(1))
    c = diff_augment(x, POLICIES, 1.0, gen(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_the_draws_do_not_depend_on_the_data():
    # same generator state, different images -> the generator ends in the same state
    g1, g2 = gen(5), gen(5)
    diff_augment(images(seed=1), POLICIES, 0.5, g1)
    diff_augment(torch.zeros(N, C, H, W), POLICIES, 0.5, g2)
    assert torch.equal(g1.get_state(), g2.get_state())


@pytest.mark.parametrize("policy", POLICIES)
def test_gradient_flows_to_the_input(policy):
    x = images().requires_grad_()
    diff_augment(x, [policy], 1.0, gen()).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum().item() > 0
    assert torch.isfinite(x.grad).all()


def test_gradient_flows_through_the_full_policy():
    x = images().requires_grad_()
    diff_augment(x, POLICIES, 1.0, gen()).sum().backward()
    assert x.grad.abs().sum().item() > 0


def _shift_of(src: torch.Tensor, out: torch.Tensor) -> tuple[int, int] | None:
    """The (dy, dx) with out[i, j] = src[i + dy, j + dx] (zero outside), or None."""
    h, w = src.shape[-2:]
    for dy in range(-h // 8, h // 8 + 1):
        for dx in range(-w // 8, w // 8 + 1):
            ref = torch.zeros_like(src)
            ys, yd = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h + min(-dy, 0))
            xs, xd = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w + min(-dx, 0))
            ref[..., yd, xd] = src[..., ys, xs]
            if torch.equal(ref, out):
                return dy, dx
    return None


def test_translation_shifts_each_image_with_zero_padding():
    x = images(n=8, seed=7)
    y = diff_augment(x, ["translation"], 1.0, gen(7))
    shifts = [_shift_of(x[i], y[i]) for i in range(len(x))]
    assert all(s is not None for s in shifts), shifts
    assert len(set(shifts)) > 1  # shifts are drawn per sample


def test_translation_of_ones_zeroes_at_most_an_eighth_of_rows_and_columns():
    x = torch.ones(16, 1, H, W)
    y = diff_augment(x, ["translation"], 1.0, gen(1))
    assert set(y.unique().tolist()) <= {0.0, 1.0}
    for img in y[:, 0]:
        zero_rows = int((img == 0).all(dim=1).sum())
        zero_cols = int((img == 0).all(dim=0).sum())
        assert zero_rows <= H // 8 and zero_cols <= W // 8
        # what is left is a solid block of ones: every zero lies in a fully zero row or column
        ones = img == 1
        assert int(ones.sum()) == (H - zero_rows) * (W - zero_cols)


def test_cutout_of_ones_zeroes_at_most_a_quarter():
    x = torch.ones(32, 1, H, W)
    y = diff_augment(x, ["cutout"], 1.0, gen(2))
    assert set(y.unique().tolist()) <= {0.0, 1.0}
    counts = [(img == 0).sum().item() for img in y]
    assert all(0 < c <= H * W // 4 for c in counts), counts
    assert max(counts) == H * W // 4  # unclipped squares occur
    for img in y[:, 0]:
        # the hole is one axis-aligned rectangle
        rows, cols = (img == 0).any(dim=1), (img == 0).any(dim=0)
        assert (img == 0).sum() == rows.sum() * cols.sum()


def test_color_moves_the_mean_of_a_grey_image():
    x = torch.full((8, C, H, W), 0.25)
    y = diff_augment(x, ["color"], 1.0, gen(3))
    means = y.mean(dim=(1, 2, 3))
    assert ((means - 0.25).abs() > 1e-4).all()
    # brightness is a per-image constant; saturation and contrast keep a constant image constant
    assert torch.allclose(y, means.view(-1, 1, 1, 1).expand_as(y), atol=1e-6)
    assert ((means - 0.25).abs() <= 0.5 + 1e-6).all()


def test_color_on_a_colourful_image_changes_it():
    x = images(seed=4)
    y = diff_augment(x, ["color"], 1.0, gen(4))
    assert not torch.isclose(x, y).all(dim=(1, 2, 3)).any()


@pytest.mark.parametrize("policy", POLICIES)
def test_each_sample_is_augmented_with_probability_p(policy):
    n = 256
    x = images(n=n, seed=8)
    y = diff_augment(x, [policy], 0.5, gen(8))
    unchanged = sum(torch.equal(a, b) for a, b in zip(x, y))
    # Binomial(256, 0.5): mean 128, sd 8; ±5 sd. (An applied translation can draw shift 0 and cutout never
    # misses, so 'unchanged' can only exceed the not-applied count.)
    assert 88 <= unchanged <= 168 + (n // 8 if policy == "translation" else 0), unchanged


def test_not_applied_samples_are_bitwise_unchanged_and_p1_applies_to_all():
    n = 64
    x = images(n=n, seed=9)
    y = diff_augment(x, ["color"], 1.0, gen(9))
    assert not any(torch.equal(a, b) for a, b in zip(x, y))
    y = diff_augment(x, list(POLICIES), 0.3, gen(9))
    same = [torch.equal(a, b) for a, b in zip(x, y)]
    # all three applied to none of them with probability 0.7³ ≈ 0.34 each
    assert 0 < sum(same) < n


@pytest.mark.parametrize("p", [1.0, 0.5])
def test_a_sharded_batch_is_augmented_like_the_whole_batch(p):
    x = images(n=8, seed=10)
    whole = diff_augment(x, POLICIES, p, gen(11))
    g_a, g_b = gen(11), gen(11)
    first = diff_augment(x[:4], POLICIES, p, g_a, total=8, offset=0)
    second = diff_augment(x[4:], POLICIES, p, g_b, total=8, offset=4)
    assert torch.equal(torch.cat([first, second]), whole)
    assert torch.equal(g_a.get_state(), g_b.get_state())


def test_total_defaults_to_the_batch_size():
    x = images(n=6, seed=12)
    assert torch.equal(diff_augment(x, POLICIES, 1.0, gen(1)), diff_augment(x, POLICIES, 1.0, gen(1), total=6))


def test_comma_separated_policy_string_is_accepted():
    x = images()
    assert torch.equal(diff_augment(x, "color,cutout", 1.0, gen(1)), diff_augment(x, ["color", "cutout"], 1.0, gen(1)))


def test_unknown_policy_is_rejected():
    with pytest.raises(ValueError, match="color, translation, cutout"):
        diff_augment(images(), ["color", "rotate"], 0.5, gen())
    with pytest.raises(ValueError):
        diff_augment(images(), ["rotate"], 0.0, gen())  # checked even when nothing would be drawn


@pytest.mark.parametrize("kwargs", [dict(p=1.5), dict(p=-0.1), dict(total=3), dict(total=8, offset=5), dict(offset=-1)])
def test_bad_arguments_are_rejected(kwargs):
    args = dict(policy=POLICIES, p=0.5, generator=gen()) | kwargs
    with pytest.raises(ValueError):
        diff_augment(images(), **args)
