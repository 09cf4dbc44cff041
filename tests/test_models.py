"""Model builders (mlp, dcgan, resnet, fastgan, vae): shapes and ranges at every supported size, class conditioning,
spectral norm, gradient flow, determinism, parameter counts; bad sizes and missing labels fail clearly."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import parametrize

from pipeline.models import KIND, MODELS, build
from pipeline.models.layers import SN_TYPES, ConditionalBatchNorm2d, MinibatchStd


@pytest.mark.parametrize("size", [8, 16, 32, 64])
def test_generator_and_discriminator_shapes(size):
    torch.manual_seed(0)
    z_dim, n = 16, 3
    G, D = build("dcgan", size, z_dim, 8, 8)
    z = torch.randn(n, z_dim)
    x = G(z)
    assert x.shape == (n, 3, size, size)
    assert x.min().item() >= -1.0 and x.max().item() <= 1.0
    assert x.std().item() > 0  # not a constant image
    logits = D(x)
    assert logits.shape == (n,)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("size", [16, 32])
def test_generator_accepts_a_4d_latent(size):
    G, _ = build("dcgan", size, 10, 4, 4)
    G.eval()
    z = torch.randn(2, 10)
    with torch.no_grad():
        assert torch.equal(G(z), G(z.view(2, 10, 1, 1)))


def test_discriminator_takes_real_images_of_the_size_it_was_built_for():
    _, D = build("dcgan", 32, 16, 8, 8)
    assert D(torch.rand(5, 3, 32, 32) * 2 - 1).shape == (5,)


@pytest.mark.parametrize("size", [4, 12, 24, 48, 100])
def test_non_power_of_two_or_too_small_size_raises_value_error(size):
    with pytest.raises(ValueError, match="power of two"):
        build("dcgan", size, 16, 8, 8)


def test_build_is_seeded_by_torch_manual_seed():
    torch.manual_seed(3)
    g1, d1 = build("dcgan", 16, 8, 4, 4)
    torch.manual_seed(3)
    g2, d2 = build("dcgan", 16, 8, 4, 4)
    for a, b in zip(
        list(g1.state_dict().values()) + list(d1.state_dict().values()),
        list(g2.state_dict().values()) + list(d2.state_dict().values()),
    ):
        assert torch.equal(a, b)


def test_dcgan_initialisation_follows_the_paper():
    torch.manual_seed(0)
    G, D = build("dcgan", 64, 100, 64, 64)
    convs = [
        m for m in list(G.modules()) + list(D.modules()) if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))
    ]
    w = torch.cat([m.weight.detach().flatten() for m in convs])
    assert abs(w.mean().item()) < 1e-3
    assert w.std().item() == pytest.approx(0.02, rel=0.02)


def test_registry_names_dcgan():
    assert "dcgan" in MODELS


# --- every family: mlp, dcgan, resnet, fastgan (GANs) and vae -------------------------------------------------------

GANS = ["mlp", "dcgan", "resnet", "fastgan"]
SIZES = {
    "mlp": [16, 32, 64],
    "dcgan": [16, 32, 64, 128],
    "resnet": [16, 32, 64, 128],
    "fastgan": [16, 32, 64, 128],
    "vae": [16, 32, 64, 128],
}
Z, CH, N, K = 8, 4, 4, 3  # latent size, channels, batch, classes


def _cases(archs, sizes=None):
    return [(a, s) for a in archs for s in (sizes or SIZES[a])]


def _labels(n: int = N) -> torch.Tensor:
    return torch.arange(n) % K


def _randomise_conditional_bn(module: nn.Module) -> None:
    """Conditional BN starts label-independent (scale 1, shift 0); stand in for training having moved it."""
    for m in module.modules():
        if isinstance(m, ConditionalBatchNorm2d):
            nn.init.normal_(m.gamma.weight, 1.0, 0.5)
            nn.init.normal_(m.beta.weight, 0.0, 0.5)


def test_registry_names_every_family_and_its_kind():
    assert set(MODELS) == {"mlp", "dcgan", "resnet", "fastgan", "vae"}
    assert KIND == {"mlp": "gan", "dcgan": "gan", "resnet": "gan", "fastgan": "gan", "vae": "vae"}


@pytest.mark.parametrize("n_classes", [0, K])
@pytest.mark.parametrize("arch,size", _cases(GANS))
def test_gan_shapes_range_and_logits(arch, size, n_classes):
    torch.manual_seed(0)
    G, D = build(arch, size, Z, CH, CH, n_classes=n_classes)
    assert (G.z_dim, G.n_classes) == (Z, n_classes)
    y = _labels() if n_classes else None
    x = G(torch.randn(N, Z), y)
    assert x.shape == (N, 3, size, size) and x.dtype == torch.float32
    assert x.min().item() >= -1.0 and x.max().item() <= 1.0
    assert x.std().item() > 0
    logits = D(x, y)
    assert logits.shape == (N,)
    assert torch.isfinite(logits).all()
    assert D(torch.rand(N, 3, size, size) * 2 - 1, y).shape == (N,)
    G.eval()  # one sample at a time, as render may ask
    with torch.no_grad():
        one = G(torch.randn(1, Z, 1, 1), y[:1] if n_classes else None)
    assert one.shape == (1, 3, size, size)


@pytest.mark.parametrize("arch", GANS + ["vae"])
def test_unconditional_models_ignore_labels(arch):
    torch.manual_seed(0)
    G, D = build(arch, 16, Z, CH, CH)
    G.eval(), D.eval()
    z, x = torch.randn(N, Z), torch.rand(N, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(G(z), G(z, _labels()))
        out, out_y = D(x), D(x, _labels())
    for a, b in zip(out if isinstance(out, tuple) else (out,), out_y if isinstance(out_y, tuple) else (out_y,)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("arch,size", _cases(GANS, [16, 32]))
def test_conditional_gan_outputs_depend_on_the_label(arch, size):
    torch.manual_seed(0)
    G, D = build(arch, size, Z, CH, CH, n_classes=K)
    _randomise_conditional_bn(G)
    G.eval(), D.eval()  # per-sample dependence, not batch statistics
    z, x = torch.randn(N, Z), torch.rand(N, 3, size, size) * 2 - 1
    y0, y1 = torch.zeros(N, dtype=torch.long), torch.ones(N, dtype=torch.long)
    with torch.no_grad():
        assert (G(z, y0) - G(z, y1)).abs().amax(dim=(1, 2, 3)).min().item() > 1e-4
        assert (D(x, y0) - D(x, y1)).abs().min().item() > 1e-6
        # and the label is per sample: sample 0's image only depends on its own label
        ya = torch.tensor([0, 1, 2, 0])
        yb = torch.tensor([0, 2, 1, 1])
        assert torch.allclose(G(z, ya)[0], G(z, yb)[0])


@pytest.mark.parametrize("arch", ["dcgan", "resnet", "fastgan"])
def test_conditional_batch_norm_starts_as_plain_batch_norm(arch):
    torch.manual_seed(0)
    G, _ = build(arch, 16, Z, CH, CH, n_classes=K)
    cbns = [m for m in G.modules() if isinstance(m, ConditionalBatchNorm2d)]
    assert cbns
    for m in cbns:
        assert type(m.bn) is nn.BatchNorm2d and not m.bn.affine
        assert torch.equal(m.gamma.weight, torch.ones(K, m.num_features))
        assert torch.equal(m.beta.weight, torch.zeros(K, m.num_features))


@pytest.mark.parametrize("arch", GANS + ["vae"])
def test_missing_or_malformed_labels_raise_value_error_when_conditional(arch):
    torch.manual_seed(0)
    G, D = build(arch, 16, Z, CH, CH, n_classes=K)
    z, x = torch.randn(N, Z), torch.rand(N, 3, 16, 16)
    with pytest.raises(ValueError, match="class-conditional"):
        G(z)
    with pytest.raises(ValueError, match="class-conditional"):
        D(x)
    with pytest.raises(ValueError, match="shape"):
        G(z, torch.zeros(N + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        D(x, torch.zeros(N))


@pytest.mark.parametrize("n_classes", [0, K])
@pytest.mark.parametrize("arch", GANS)
def test_spectral_norm_bounds_every_discriminator_weight(arch, n_classes):
    torch.manual_seed(0)
    _, D = build(arch, 16, Z, CH, 8, n_classes=n_classes, spectral_norm=True)
    assert not any(isinstance(m, _BatchNorm) for m in D.modules())
    wrapped = [m for m in D.modules() if isinstance(m, SN_TYPES)]
    assert len(wrapped) >= 3 + bool(n_classes)
    assert all(parametrize.is_parametrized(m, "weight") for m in wrapped)
    D.train()
    y = _labels(8) if n_classes else None
    with torch.no_grad():
        for _ in range(20):  # each train-mode forward runs one power iteration (of the decoder too, if any)
            x = torch.rand(8, 3, 16, 16) * 2 - 1
            out = D(x, y, reconstruct=True)[0] if getattr(D, "reconstructs", False) else D(x, y)
    assert torch.isfinite(out).all()
    for m in wrapped:
        w = m.weight.detach()
        sigma = torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2).item()
        assert sigma == pytest.approx(1.0, abs=0.03), m
    # the check above can fail: without spectral norm the same weights are far from unit norm
    torch.manual_seed(0)
    _, plain = build(arch, 16, Z, CH, 8, n_classes=n_classes)
    sigmas = [
        torch.linalg.matrix_norm(m.weight.detach().reshape(m.weight.shape[0], -1), ord=2).item()
        for m in plain.modules()
        if isinstance(m, SN_TYPES)
    ]
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())
    assert max(abs(s - 1.0) for s in sigmas) > 0.1


def test_dcgan_discriminator_keeps_batch_norm_without_spectral_norm():
    _, D = build("dcgan", 32, Z, CH, CH)
    assert any(type(m) is nn.BatchNorm2d for m in D.modules())


def test_vae_ignores_spectral_norm():
    _, enc = build("vae", 16, Z, CH, CH, spectral_norm=True)
    assert not any(parametrize.is_parametrized(m) for m in enc.modules())


def d_loss(D, x, y):
    """A scalar of every output D is trained on: its logits, and its reconstruction loss when it has one."""
    if getattr(D, "reconstructs", False):
        logits, recon = D(x, y, reconstruct=True)
        return logits.mean() + recon
    return D(x, y).mean()


@pytest.mark.parametrize("n_classes", [0, K])
@pytest.mark.parametrize("arch", GANS)
def test_gradients_reach_every_parameter(arch, n_classes):
    torch.manual_seed(0)
    G, D = build(arch, 16, Z, CH, CH, n_classes=n_classes)
    y = _labels() if n_classes else None
    z = torch.randn(N, Z)
    d_loss(D, G(z, y), y).backward()
    for name, p in list(G.named_parameters()) + list(D.named_parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0 or name.endswith("bias"), name  # a bias right before batch norm gets ~0
    # with running statistics (eval) nothing cancels a bias, so every generator parameter gets a gradient
    G.zero_grad(), D.zero_grad()
    G.eval()
    d_loss(D, G(z, y), y).backward()
    for name, p in G.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("n_classes", [0, K])
@pytest.mark.parametrize("size", SIZES["vae"])
def test_vae_encoder_and_decoder(size, n_classes):
    torch.manual_seed(0)
    dec, enc = build("vae", size, Z, CH, CH, n_classes=n_classes)
    assert (dec.z_dim, dec.n_classes) == (Z, n_classes)
    y = _labels() if n_classes else None
    x = torch.rand(N, 3, size, size) * 2 - 1
    mu, logvar = enc(x, y)
    assert mu.shape == (N, Z) and logvar.shape == (N, Z)
    assert torch.isfinite(mu).all() and torch.isfinite(logvar).all()
    recon = dec(mu + torch.randn_like(mu) * (0.5 * logvar).exp(), y)
    assert recon.shape == (N, 3, size, size)
    assert recon.min().item() >= -1.0 and recon.max().item() <= 1.0 and recon.std().item() > 0
    loss = (recon - x).pow(2).mean() - 0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).mean()
    loss.backward()
    for name, p in list(dec.named_parameters()) + list(enc.named_parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_conditional_vae_depends_on_the_label():
    torch.manual_seed(0)
    dec, enc = build("vae", 16, Z, CH, CH, n_classes=K)
    dec.eval(), enc.eval()
    z, x = torch.randn(N, Z), torch.rand(N, 3, 16, 16) * 2 - 1
    y0, y1 = torch.zeros(N, dtype=torch.long), torch.ones(N, dtype=torch.long)
    with torch.no_grad():
        assert (dec(z, y0) - dec(z, y1)).abs().amax(dim=(1, 2, 3)).min().item() > 1e-4
        assert (enc(x, y0)[0] - enc(x, y1)[0]).abs().amax(dim=1).min().item() > 1e-6


def test_mlp_matches_the_pytorch_gan_tutorial():
    G, D = build("mlp", 32, 100, 32, 32)
    img = 3 * 32 * 32

    def linear(i, o):
        return i * o + o

    bn = 2  # scale and shift per feature
    expected_g = (
        linear(100, 128)
        + linear(128, 256)
        + bn * 256
        + linear(256, 512)
        + bn * 512
        + linear(512, 1024)
        + bn * 1024
        + linear(1024, img)
    )
    expected_d = linear(img, 512) + linear(512, 256) + linear(256, 1)
    assert sum(p.numel() for p in G.parameters()) == expected_g == 3_855_232
    assert sum(p.numel() for p in D.parameters()) == expected_d == 1_704_961
    assert [m.eps for m in G.modules() if isinstance(m, nn.BatchNorm1d)] == [0.8, 0.8, 0.8]
    assert not any(isinstance(m, nn.Sigmoid) for m in D.modules())  # D returns logits
    # conditional: the cgan tutorial's n_classes × n_classes embedding widens G's input; D gains a projection
    Gc, Dc = build("mlp", 32, 100, 32, 32, n_classes=10)
    assert sum(p.numel() for p in Gc.parameters()) == expected_g + 10 * 10 + 10 * 128
    assert sum(p.numel() for p in Dc.parameters()) == expected_d + 10 * 256


@pytest.mark.parametrize(
    "arch,size",
    [
        ("mlp", 12),
        ("mlp", 4),
        ("dcgan", 100),
        ("vae", 24),
        ("vae", 4),
        ("resnet", 8),
        ("resnet", 48),
        ("resnet", 256),
        ("fastgan", 8),
        ("fastgan", 48),
    ],
)
def test_bad_size_names_the_arch_and_the_allowed_sizes(arch, size):
    allowed = {"resnet": "16, 32, 64, 128", "fastgan": "16, 32, 64, 128, 256"}.get(arch, "8, 16, 32, 64, 128")
    with pytest.raises(ValueError, match=f"{arch}: image_size must .*{allowed}.*got {size}"):
        build(arch, size, Z, CH, CH)


def test_unknown_arch_raises_value_error():
    with pytest.raises(ValueError, match="unknown model arch 'stylegan'.*mlp, dcgan, resnet, fastgan, vae"):
        build("stylegan", 32, Z, CH, CH)


@pytest.mark.parametrize("arch", GANS + ["vae"])
def test_build_and_forward_are_deterministic_for_a_seed(arch):
    def run():
        torch.manual_seed(5)
        G, D = build(arch, 16, Z, CH, CH, n_classes=K, spectral_norm=True)
        z = torch.randn(N, Z)
        outs = []
        for _ in range(3):  # train mode: batch-norm statistics and power iterations move, deterministically
            x = G(z, _labels())
            d = D(x, _labels())
            outs += [x, *(d if isinstance(d, tuple) else (d,))]
        return G.state_dict(), D.state_dict(), outs

    g1, d1, o1 = run()
    g2, d2, o2 = run()
    for a, b in ((g1, g2), (d1, d2)):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(a, b) for a, b in zip(o1, o2))


@pytest.mark.parametrize("arch", GANS + ["vae"])
def test_batch_norms_convert_to_synchronised_batch_norm(arch):
    # the trainer swaps nn.BatchNorm1d/2d for SyncBatchNorm by type; conditional BN must survive that swap
    torch.manual_seed(0)
    G, D = build(arch, 16, Z, CH, CH, n_classes=K)
    for net in (G, D):
        before = sum(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in net.modules())
        conv = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in conv.modules())
        assert sum(isinstance(m, nn.SyncBatchNorm) for m in conv.modules()) == before
    if arch in ("dcgan", "resnet", "fastgan"):
        assert all(isinstance(m.bn, nn.SyncBatchNorm) for m in G.modules() if isinstance(m, ConditionalBatchNorm2d))


def test_resnet_blocks_follow_sngan():
    from pipeline.models.resnet import DBlock, GBlock

    torch.manual_seed(0)
    F = torch.nn.functional
    x = torch.randn(2, 4, 8, 8)  # negative values too: a ReLU in place would change the shortcut
    b = DBlock(4, 6, downsample=True)
    ref = F.avg_pool2d(b.c2(F.relu(b.c1(F.relu(x)))), 2) + F.avg_pool2d(b.c_sc(x), 2)
    assert torch.allclose(b(x.clone()), ref, atol=1e-6)
    o = DBlock(4, 6, downsample=True, optimized=True)
    ref = F.avg_pool2d(o.c2(F.relu(o.c1(x))), 2) + o.c_sc(F.avg_pool2d(x, 2))
    assert torch.allclose(o(x.clone()), ref, atol=1e-6)
    keep = DBlock(4, 4, downsample=False)
    assert keep.c_sc is None
    assert torch.allclose(keep(x.clone()), keep.c2(F.relu(keep.c1(F.relu(x)))) + x, atol=1e-6)
    g = GBlock(4, 6).eval()
    up = lambda t: F.interpolate(t, scale_factor=2, mode="nearest")  # noqa: E731
    ref = g.c2(F.relu(g.b2(g.c1(up(F.relu(g.b1(x))))))) + g.c_sc(up(x))
    assert torch.allclose(g(x.clone(), None), ref, atol=1e-6)


# --- the minibatch standard deviation layer (model.mbstd_group) -----------------------------------------------------


def test_minibatch_std_appends_each_groups_mean_feature_std_by_hand():
    torch.manual_seed(0)
    x = torch.randn(8, 5, 3, 3)
    out = MinibatchStd(4)(x)
    assert out.shape == (8, 6, 3, 3) and torch.equal(out[:, :5], x)
    for i in range(8):
        group = x[(i // 4) * 4 : (i // 4) * 4 + 4]  # consecutive rows: 0-3 and 4-7
        want = group.std(dim=0, unbiased=False).mean()  # per feature and pixel, then averaged
        assert torch.allclose(out[i, 5], want.expand(3, 3), atol=1e-6), i
    # a batch the group does not divide takes the largest divisor below it: 6 rows -> groups of 3
    six = MinibatchStd(4)(x[:6])
    assert torch.allclose(six[0, 5, 0, 0], x[:3].std(dim=0, unbiased=False).mean(), atol=1e-6)


@pytest.mark.parametrize("n_classes", [0, K])
@pytest.mark.parametrize("size", SIZES["dcgan"])
def test_dcgan_with_minibatch_std_sees_the_batch_and_keeps_its_shapes(size, n_classes):
    torch.manual_seed(0)
    G, D = build("dcgan", size, Z, CH, CH, n_classes=n_classes, mbstd_group=2)
    y = _labels() if n_classes else None
    x = G(torch.randn(N, Z), y)
    logits = D(x, y)
    assert logits.shape == (N,) and torch.isfinite(logits).all()
    assert any(isinstance(m, MinibatchStd) for m in D.modules())
    # image 0's logit moves when image 1 (its group) changes, not when images 2 and 3 (the next group) do
    D.eval()  # batch norm's running statistics: only the minibatch std links the images
    with torch.no_grad():
        base = D(x, y)
        other_group = D(torch.cat([x[:2], -x[2:]]), y)
        same_group = D(torch.cat([x[:1], -x[1:2], x[2:]]), y)
    assert other_group[0] == base[0] and same_group[0] != base[0]
    logits.sum().backward()
    assert all(p.grad is not None for p in D.parameters())
