"""Our eager TF-Inception equals the shipped TorchScript network; TF1 bilinear resize by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import pipeline.metrics.inception as inception
from pipeline.errors import ArtganError
from pipeline.metrics.inception import (
    FEATURE_DIM,
    FastInception,
    FusedHeads,
    UnitReader,
    build_layers,
    extract_features,
    feature_device,
    load_shipped,
    tf1_resize,
    tf1_resize_matrix,
    to_network_input,
)


@pytest.fixture(scope="module")
def networks():
    shipped = load_shipped()
    return shipped, FastInception(shipped)


def random_uint8(n: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=g)


# ---- the network -----------------------------------------------------------------------------------


@pytest.mark.parametrize("size, n", [(32, 5), (299, 5)])
def test_fast_inception_matches_the_shipped_network(networks, size, n):
    shipped, fast = networks
    x = to_network_input(random_uint8(n, size, seed=size))
    assert x.shape == (n, 3, 299, 299)
    with torch.inference_mode():
        ours = fast(x)
        ref = shipped(x).reshape(n, FEATURE_DIM)
    assert ours.shape == (n, FEATURE_DIM)
    assert torch.isfinite(ours).all()
    rel = (ours - ref).abs().max() / ref.abs().max()
    assert rel.item() < 1e-4
    # features differ between images: the network is not ignoring its input
    assert (ours[0] - ours[1]).abs().max() > 1e-3 * ref.abs().max()


def test_extract_features_in_several_batches_equals_one_batch(networks):
    _, fast = networks
    images = random_uint8(4, 32, seed=7).numpy()
    one = extract_features(fast, images, batch_size=4)
    several = extract_features(fast, images, batch_size=3)
    assert one.shape == (4, FEATURE_DIM) and one.dtype == np.float32
    np.testing.assert_allclose(several, one, rtol=1e-5, atol=1e-5 * np.abs(one).max())


def test_feature_device_auto_is_cuda_only_when_cuda_is_there():
    assert feature_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert feature_device("cpu").type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_it_is_a_one_line_error_naming_the_param():
    from pipeline.errors import ArtganError

    with pytest.raises(ArtganError, match=r"eval\.device is 'cuda' but no CUDA device is available"):
        feature_device("cuda")


def cuda_flags():
    c = torch.backends.cudnn
    return c.allow_tf32, c.deterministic, c.benchmark, torch.get_float32_matmul_precision()


@pytest.mark.parametrize("deterministic", [False, True])
def test_exact_gpu_turns_tf32_off_on_cuda_and_restores_every_setting(monkeypatch, deterministic):
    # TF32 convolutions (cuDNN's default) move FID features by ~1e-2 relative: off on CUDA, then as before.
    # The flags are process-wide settings that exist without a GPU, so this runs anywhere.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        with inception.exact_gpu(torch.device("cpu"), deterministic):
            assert cuda_flags() == (True, False, True, "high")  # not on CUDA: nothing changes
        with inception.exact_gpu(torch.device("cuda"), deterministic):
            assert cuda_flags() == (False, deterministic, not deterministic, "highest")
        assert cuda_flags() == (True, False, True, "high")
    finally:
        torch.set_float32_matmul_precision(before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_features_on_cuda_equal_the_cpu_features(networks):
    _, fast = networks
    images = random_uint8(6, 32, seed=11).numpy()
    cpu = extract_features(fast, images, batch_size=3)
    gpu = extract_features(FastInception(networks[0]).cuda(), images, batch_size=3)
    assert np.abs(gpu - cpu).max() / np.abs(cpu).max() < 1e-4


def test_fused_heads_and_stem_batches_give_the_unfused_features(networks):
    shipped, fast = networks
    assert sum(isinstance(m, FusedHeads) for m in fast.modules()) == 10  # every block but mixed_6a
    plain = FastInception(shipped, fuse=False, stem_batch=0)
    assert not any(isinstance(m, FusedHeads) for m in plain.modules())
    x = to_network_input(random_uint8(7, 32, seed=3))
    fast.stem_batch = 3  # 7 images: stem chunks of 3, 3, 1
    try:
        with torch.inference_mode():
            ours, ref = fast(x), plain(x)
    finally:
        fast.stem_batch = 10
    assert ((ours - ref).abs().max() / ref.abs().max()).item() < 1e-5


class Unit(nn.Module):
    """A conv + batch norm unit as the shipped file stores it: weight, beta, mean, var; stride, padding."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, 1, 1))
        self.beta, self.mean = nn.Parameter(torch.randn(c_out)), nn.Parameter(torch.randn(c_out))
        self.var = nn.Parameter(torch.rand(c_out) + 0.5)
        self.stride, self.padding = 1, 0


def shipped_layers_with(extra: dict[str, nn.Module] | None = None, drop: str | None = None) -> nn.Module:
    """The shipped `net.layers` units under a plain container, with units added or one top-level module left out."""
    layers = nn.Module()
    for name, child in load_shipped().net.layers.named_children():
        if name != drop:
            layers.add_module(name, child)
    for name, child in (extra or {}).items():
        layers.add_module(name, child)
    return layers


def test_a_shipped_conv_unit_outside_the_layout_is_an_error():
    # the layout names exactly the file's conv units: one it does not name means another graph
    with pytest.raises(ArtganError, match=r"conv units not in artgan's layout: \['conv_99'\]"):
        build_layers(shipped_layers_with(extra={"conv_99": Unit(3, 8)}))


def test_a_unit_the_layout_names_but_the_file_lacks_is_an_error():
    with pytest.raises(ArtganError, match=r"no conv unit 'mixed_10\.conv'"):
        build_layers(shipped_layers_with(drop="mixed_10"))


@pytest.mark.parametrize(
    "name, c_in, size",
    [
        ("conv", 3, 31),  # 3×3, stride 2
        ("mixed.tower.conv_1", 48, 17),  # 5×5, padding 2
        ("mixed_4.tower.conv_1", 128, 17),  # 1×7, padding (0, 3)
        ("mixed_9.tower_mixed_conv_1", 384, 8),  # 3×1, padding (1, 0)
    ],
)
def test_each_unit_is_the_shipped_conv_batch_norm_relu(networks, name, c_in, size):
    # weight, batch norm (folded), stride and padding read from the file: one unit against the shipped unit
    shipped, _ = networks
    layers = shipped.net.layers
    ours = UnitReader(layers)(name)
    x = torch.randn(2, c_in, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = dict(layers.named_modules())[name](x)
        got = ours(x.contiguous(memory_format=torch.channels_last))
    assert got.shape == ref.shape
    assert ((got - ref).abs().max() / ref.abs().max()).item() < 1e-5


# ---- preprocessing ---------------------------------------------------------------------------------


def test_network_input_scaling_of_uint8():
    img = torch.zeros(1, 299, 299, 3, dtype=torch.uint8)
    img[0, :, :, 1] = 255
    img[0, :, :, 2] = 128
    x = to_network_input(img)
    assert x.shape == (1, 3, 299, 299)
    assert torch.all(x[0, 0] == -1.0)
    assert torch.all(x[0, 1] == 0.9921875)  # (255 - 128) / 128
    assert torch.all(x[0, 2] == 0.0)


def test_network_input_accepts_nchw_and_nhwc_alike():
    img = random_uint8(2, 16, seed=1)
    assert torch.equal(to_network_input(img), to_network_input(img.permute(0, 3, 1, 2).contiguous()))


def test_network_input_rejects_float_images():
    with pytest.raises(TypeError):
        to_network_input(torch.zeros(1, 8, 8, 3))


@pytest.mark.parametrize("n_in, n_out", [(2, 4), (4, 2), (32, 299), (299, 299), (5, 7)])
def test_resize_rows_sum_to_one(n_in, n_out):
    m = tf1_resize_matrix(n_in, n_out)
    assert m.shape == (n_out, n_in)
    assert torch.allclose(m.sum(dim=1), torch.ones(n_out), atol=1e-6)
    assert (m >= 0).all()


def test_resize_upsampling_2_to_4_matches_tf1_by_hand():
    # TF1 resize_bilinear(align_corners=False, half_pixel_centers=False): src = dst * in / out, clamped
    # dst 0 -> 0.0 (a); dst 1 -> 0.5 (a/2 + b/2); dst 2 -> 1.0 (b); dst 3 -> 1.5 -> clamped to b
    expected = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [0.0, 1.0]])
    assert torch.equal(tf1_resize_matrix(2, 4), expected)


def test_resize_downsampling_4_to_2_takes_every_other_pixel():
    # src = [0, 2]: no antialiasing, no half-pixel offset
    expected = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    assert torch.equal(tf1_resize_matrix(4, 2), expected)


def test_resize_3_to_4_by_hand():
    # src = dst * 3/4 = [0, .75, 1.5, 2.25] -> weights (1-frac, frac) on (floor, floor+1 clamped)
    expected = torch.tensor([[1.0, 0.0, 0.0], [0.25, 0.75, 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]])
    assert torch.allclose(tf1_resize_matrix(3, 4), expected, atol=1e-7)


def test_tf1_resize_of_a_2x2_image_by_hand():
    x = torch.tensor([[[[0.0, 4.0], [8.0, 12.0]]]])
    y = tf1_resize(x, 4)
    expected = torch.tensor(
        [[0.0, 2.0, 4.0, 4.0], [4.0, 6.0, 8.0, 8.0], [8.0, 10.0, 12.0, 12.0], [8.0, 10.0, 12.0, 12.0]]
    )
    assert torch.allclose(y[0, 0], expected)
