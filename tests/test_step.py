"""One training step, checked against its parts: the critic's gradient is the loss's plus each penalty's at its
documented weight (λ for the gradient penalty, γ/2 times the lazy interval for R1); the EMA generator moves at
the configured decay once the warm-up is past it; torch.compile runs on a CPU and steps as eager steps do;
channels_last memory on a CPU only for bf16 and never under torch.compile."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import make_trainer, run_steps

from pipeline import augment
from pipeline.losses import consistency_penalty, gradient_penalty, lecam_penalty, r1_penalty

PENALTIES = {
    "wgan-gp, λ = 7": ({"loss": "wgan-gp", "gp_weight": 7.0}, "gp", 7.0),
    "hinge + R1, γ = 3 every 2nd step": ({"loss": "hinge", "r1_gamma": 3.0, "r1_every": 2}, "r1", 3.0 / 2 * 2),
    # R1 off here, so that LeCam is the only penalty (its anchors: the first step's own mean logits)
    "ns + LeCam, λ = 0.3": ({"loss": "ns", "lecam": 0.3, "r1_gamma": 0.0}, "lecam", 0.3),
    # bCR alone: λ times the lazy interval
    "ns + bCR, λ = 1.5 every 2nd step": ({"loss": "ns", "cr": 1.5, "cr_every": 2, "r1_gamma": 0.0}, "cr", 1.5 * 2),
    # bCR with its own T (a shift) on top of the images D was shown
    "ns + bCR, T a shift, λ = 0.5": (
        {"loss": "ns", "cr": 0.5, "cr_augment": ["translation"], "r1_gamma": 0.0},
        "cr",
        0.5,
    ),
}


def _grads(loss: torch.Tensor, net: torch.nn.Module) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, list(net.parameters()), retain_graph=True))


@pytest.mark.parametrize("name", PENALTIES)
def test_the_critic_gradient_is_the_losss_plus_the_penalty_at_its_weight(tmp_path, name):
    train, penalty, weight = PENALTIES[name]
    tr = make_trainer(tmp_path, {"train": {**train, "augment": ["translation", "cutout"], "augment_p": 1.0}})
    G0, D0 = copy.deepcopy(tr.G), copy.deepcopy(tr.D)  # the weights the step starts from
    draws = tr._draw_gan(cr=penalty == "cr")
    tr._gan_compute(copy.deepcopy(draws), r1=penalty == "r1", check=lambda values: tr._check(values, 2))
    got = [p.grad for p in tr.D.parameters()]  # D's step gradient (G's step leaves D's gradients alone)

    # the same step's terms, one by one, from the same draws
    (c,) = draws["critic"]
    plain, y = tr._real(c["idx"])
    real = augment.apply(plain, c["aug_real"])
    with torch.no_grad():
        plain_fake = G0(c["z"], c["y_fake"])
        fake = augment.apply(plain_fake, c["aug_fake"])
    adversarial = _grads(tr.loss.d(D0(real, y), D0(fake, c["y_fake"])), D0)
    if penalty == "gp":
        pen = _grads(gradient_penalty(D0, real, fake, y, eps=c["eps"]), D0)
    elif penalty == "lecam":
        d_real, d_fake = D0(real, y), D0(fake, c["y_fake"])
        pen = _grads(lecam_penalty(d_real, d_fake, d_real.mean().detach(), d_fake.mean().detach()), D0)
        assert tr.lecam.tolist() == pytest.approx([1.0, d_real.mean().item(), d_fake.mean().item()], rel=1e-5)
    elif penalty == "cr":  # D's logits on the step's augmentation against a second one, of the same images
        if train.get("cr_augment"):  # its own T, on top of what D saw: a shift only
            assert [d[0] for d in c["cr_real"]] == ["translation"] and bool(c["cr_real"][0][1].all())
            real_t, fake_t = augment.apply(real, c["cr_real"]), augment.apply(fake, c["cr_fake"])
        else:  # a second, independent draw of train.augment
            real_t, fake_t = augment.apply(plain, c["cr_real"]), augment.apply(plain_fake, c["cr_fake"])
        assert not torch.equal(real_t, real)
        d = [D0(x, yy) for x, yy in ((real, y), (real_t, y), (fake, c["y_fake"]), (fake_t, c["y_fake"]))]
        pen = _grads(consistency_penalty(*d), D0)
    else:
        pen = _grads(r1_penalty(D0, real, y), D0)
    assert sum(p.norm() for p in pen) > 1e-3 * sum(a.norm() for a in adversarial)  # the penalty does count
    for g, a, p in zip(got, adversarial, pen):
        torch.testing.assert_close(g, a + weight * p, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "decay, step, lerp",
    [
        (0.75, 1, 1 - 2 / 11),  # within the warm-up: min(decay, (1 + step) / (10 + step)) = 2/11
        (0.1, 1, 0.9),  # a decay below the warm-up's: the decay itself
        (0.75, 40, 0.25),  # past the warm-up (41/50 > 0.75): the decay itself
    ],
)
def test_the_ema_generator_moves_at_the_configured_decay(tmp_path, decay, step, lerp):
    tr = make_trainer(tmp_path, {}, ema_decay=decay)
    ema_before = copy.deepcopy(tr.G_ema.state_dict())
    tr.gan_step(step)
    tr.update_ema(step)
    g, ema = tr.G.state_dict(), tr.G_ema.state_dict()
    for k, v in ema.items():
        if v.is_floating_point() and "running" not in k:
            torch.testing.assert_close(v, ema_before[k].lerp(g[k], lerp), rtol=0, atol=1e-7, msg=k)
        else:
            assert torch.equal(v, g[k]), k  # batch-norm statistics are copied


@pytest.mark.slow
def test_torch_compile_on_a_cpu_steps_as_the_eager_trainer_does(tmp_path):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    case = {"train": {"augment": ["color", "translation", "cutout"], "augment_p": 0.5}}
    eager, compiled = make_trainer(tmp_path, case), make_trainer(tmp_path, case, compile=True)
    a, b = run_steps(eager, 3), run_steps(compiled, 3)
    assert counters["stats"]["unique_graphs"] > 0  # the steps ran through compiled graphs
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert rb[k] == pytest.approx(ra[k], rel=1e-4, abs=1e-6), k
    # the checkpoint holds the plain modules' weights (no torch.compile wrapper in the keys): it resumes eagerly
    sa, sb = eager.state_dict(), compiled.state_dict()
    for net in ("G", "D", "G_ema"):
        assert sa[net].keys() == sb[net].keys()
        for k in sa[net]:
            torch.testing.assert_close(sb[net][k], sa[net][k], rtol=1e-3, atol=1e-5)
    torch._dynamo.reset()


@pytest.mark.parametrize("amp, compile_, expect", [("off", False, False), ("bf16", False, True), ("bf16", True, False)])
def test_channels_last_on_a_cpu_only_for_bf16_and_not_under_compile(tmp_path, amp, compile_, expect):
    tr = make_trainer(tmp_path, {}, amp=amp, compile=compile_)
    fmt = torch.channels_last
    conv = next(p for p in tr.D.parameters() if p.ndim == 4)
    real, _ = tr._real(torch.arange(8))
    assert tr.channels_last is expect
    assert conv.is_contiguous(memory_format=fmt) is expect and real.is_contiguous(memory_format=fmt) is expect


def test_the_fakes_labels_follow_the_training_sets_class_frequencies(tmp_path):
    """A conditional D sees each fake with its label: drawn uniformly on an unbalanced set, a rare class would be
    mostly fakes, and D could tell them by the label alone. So the fakes' labels follow the reals' frequencies."""
    from pipeline.training.loop import Data

    tr = make_trainer(tmp_path, {"labels": True})
    labels = torch.tensor([0] * 18 + [1] * 2)  # class 2 has no image
    tr.data = Data(images=tr.data.images, labels=labels, n_classes=3)
    assert tr.data.class_counts == [18, 2, 0]
    drawn = torch.cat([tr._draw_latents()[1] for _ in range(400)])  # 400 batches of 8
    share = torch.bincount(drawn, minlength=3).double() / len(drawn)
    assert share[2] == 0 and abs(share[0] - 0.9) < 0.03 and abs(share[1] - 0.1) < 0.03
