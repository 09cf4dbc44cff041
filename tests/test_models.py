"""DCGAN builder: output shapes and ranges at every supported size; bad sizes fail clearly."""
from __future__ import annotations

import pytest
import torch

from pipeline.models import MODELS, build


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
    for a, b in zip(list(g1.state_dict().values()) + list(d1.state_dict().values()),
                    list(g2.state_dict().values()) + list(d2.state_dict().values())):
        assert torch.equal(a, b)


def test_dcgan_initialisation_follows_the_paper():
    torch.manual_seed(0)
    G, D = build("dcgan", 64, 100, 64, 64)
    convs = [m for m in list(G.modules()) + list(D.modules())
             if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    w = torch.cat([m.weight.detach().flatten() for m in convs])
    assert abs(w.mean().item()) < 1e-3
    assert w.std().item() == pytest.approx(0.02, rel=0.02)


def test_registry_names_dcgan():
    assert "dcgan" in MODELS
