"""model.arch fastgan (pipeline/models/fastgan.py): its two parts the other families lack, checked by hand —
skip-layer excitation in G and the self-supervised D whose reconstruction loss joins D's loss — and that the
trainer adds that loss. Shapes, conditioning, spectral norm and sync BN are in test_models.py (every GAN family);
training, resume, export and several processes in test_train.py, test_export.py and test_resume.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_cfg

from pipeline.config import parse
from pipeline.models import build
from pipeline.models.fastgan import SLE, sle_pairs


def test_skip_layer_excitation_gates_each_channel_of_the_large_map_by_the_small_one():
    torch.manual_seed(0)
    sle = SLE(6, 5)
    lo, hi = torch.randn(2, 6, 8, 8), torch.randn(2, 5, 32, 32)
    pool4, conv4, _, conv1, _ = sle.net
    pooled = F.avg_pool2d(lo, 2)  # 8×8 → 4×4 by hand
    a = F.conv2d(pooled, conv4.weight)  # 4×4 conv without padding: one value per channel
    gate = torch.sigmoid(F.conv2d(a * torch.sigmoid(a), conv1.weight))  # swish, then 1×1 conv
    assert gate.shape == (2, 5, 1, 1)
    torch.testing.assert_close(sle(lo, hi), hi * gate)


@pytest.mark.parametrize(
    "size, pairs",
    [(16, {16: 4}), (32, {32: 4}), (64, {64: 4}), (128, {64: 4, 128: 8}), (256, {64: 4, 128: 8, 256: 16})],
)
def test_sle_pairs_are_the_papers_16x_pairs_or_the_seed_at_small_sizes(size, pairs):
    assert sle_pairs(size) == pairs
    G, _ = build("fastgan", size, 8, 8, 8)
    assert {int(k) for k in G.sle} == set(pairs)


@pytest.mark.parametrize("size", [32, 256])
def test_the_discriminator_rebuilds_the_image_it_was_shown_and_scores_it_by_hand(size):
    torch.manual_seed(0)
    _, D = build("fastgan", size, 8, 8, 8)
    x = torch.rand(3, 3, size, size) * 2 - 1
    with torch.no_grad():
        logits, recon = D(x, reconstruct=True)
        torch.testing.assert_close(D(x), logits)
        feat = D.downs(D.stem(x))
        rebuilt = D.decoder(feat)
    assert feat.shape[-2:] == (8, 8)
    target = x if size <= 128 else F.avg_pool2d(x, size // 128)  # area resize to the paper's 128 px
    assert rebuilt.shape == target.shape == (3, 3, min(size, 128), min(size, 128))
    by_hand = sum(float(((rebuilt[i] - target[i]) ** 2).sum()) for i in range(3)) / target.numel()
    assert recon.item() == pytest.approx(by_hand, rel=1e-5)


def test_the_d_step_minimises_the_adversarial_loss_plus_the_reconstruction_loss(tmp_path):
    """The gradient D's step applies is that of loss_d(D(real), D(fake)) + MSE(rebuild of real, real), by hand on
    a copy of D with the same inputs; the step logs `recon` apart from loss_d."""
    import copy

    from pipeline import augment
    from pipeline.losses import LOSSES
    from pipeline.training.dist import World
    from pipeline.training.loop import Data, Trainer

    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (40, 3, 16, 16), dtype=np.uint8))
    cfg = parse(tiny_cfg(tmp_path, model={"arch": "fastgan"}, train={"augment": ["translation"], "r1_gamma": 0}))
    trainer = Trainer(cfg, Data(images=images, labels=None, n_classes=0), World(), torch.device("cpu"))
    c = trainer._draw_gan()["critic"][0]
    with torch.no_grad():
        fake = trainer.G(c["z"])
    D0 = copy.deepcopy(trainer.D)
    out = trainer._step_d(c, fake, r1=False, check=lambda values: None)

    real = augment.apply(images[c["idx"]].float() / 127.5 - 1, c["aug_real"])
    fake_seen = augment.apply(fake, c["aug_fake"])
    d_real, recon = D0(real, reconstruct=True)
    adversarial = LOSSES["ns"].d(d_real, D0(fake_seen))
    (adversarial + recon).backward()
    assert out["loss_d"].item() == pytest.approx(adversarial.item(), rel=1e-5)
    assert out["recon"].item() == pytest.approx(recon.item(), rel=1e-5)
    for (name, p), p0 in zip(trainer.D.named_parameters(), D0.parameters()):
        torch.testing.assert_close(p.grad, p0.grad, rtol=1e-4, atol=1e-6, msg=name)
    assert sum(float(p.grad.abs().sum()) for p in D0.decoder.parameters()) > 0  # the decoder learns
