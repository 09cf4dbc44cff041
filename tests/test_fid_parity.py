"""Our FID equals torch-fidelity's and clean-fid's on the same image folders (same weights, offline).

Two folders of real PNG files (OpenMoji glyphs, 32 px, different glyphs and backgrounds) go through
- artgan: FastInception + extract_features on the decoded uint8 arrays, fid.statistics/frechet_distance;
- torch-fidelity: calculate_metrics(input1=dir, input2=dir, fid=True) with its inception-v3-compat
  extractor loading the shipped weights converted to its layout (pipeline.metrics.references);
- clean-fid: compute_fid(dir, dir, mode="legacy_tensorflow") with its InceptionV3W loading the shipped
  layers in NVIDIA's TorchScript interface (TF1 bilinear resize inside, as NVIDIA's file does).
All three resize 32 -> 299 with TF1 bilinear (align_corners=False, no antialias) and nothing else.
The covariances are rank-deficient (N ≪ 2048); the libraries' square roots (numpy eigvals of S1·S2 in
torch-fidelity, scipy sqrtm in clean-fid) agree with ours there too. Network access is blocked
throughout, so any attempted download fails the test. About a minute on an idle 2-core CPU.
"""

from __future__ import annotations

import io
import shutil
import socket
from pathlib import Path

# the reference libraries are dev dependencies (`make setup` installs them): a missing one fails here, it does not skip
import cleanfid  # noqa: E402,F401
import numpy as np
import pytest
import torch
import torch_fidelity  # noqa: E402,F401

from pipeline.metrics import references
from pipeline.metrics.fid import frechet_distance, statistics
from pipeline.metrics.inception import FEATURE_DIM, FastInception, extract_features, load_shipped

N = 32  # images per set
N_FEATURES = 8  # images whose features are compared one by one with each library's extractor
SIZE = 32
FID_RTOL = 1e-3
FEATURE_RTOL = 1e-4

# clean-fid passes scipy.linalg.sqrtm's deprecated `disp` argument
pytestmark = [
    pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning"),
    pytest.mark.slow,  # make test-fast leaves these out (docs/testing.md)
]


def max_rel(a, b) -> float:
    """max |a - b| / max |b|: features are ≥ 0 and many are ~0, so entrywise ratios are meaningless."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def write_set(folder: Path, names: list[str], background: tuple[int, int, int], mirror: bool) -> Path:
    """OpenMoji glyphs composited on an opaque background, saved as RGB PNG files."""
    from PIL import Image

    from pipeline.data import openmoji

    folder.mkdir(parents=True)
    for i, glyph in enumerate(openmoji.render(names, SIZE)):
        if i == N:
            break
        rgba = Image.open(io.BytesIO(glyph.png))
        img = Image.new("RGBA", rgba.size, background + (255,))
        img.alpha_composite(rgba)
        img = img.convert("RGB")
        if mirror:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        img.save(folder / f"{i:03d}.png")
    assert len(list(folder.glob("*.png"))) == N
    return folder


def load_uint8(folder: Path) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))])


@pytest.fixture(scope="module")
def offline():
    """Any network connection raises: the references must use the shipped weights, not download theirs."""

    def refuse(self, address, *args, **kwargs):
        raise AssertionError(f"network access attempted: {address}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket.socket, "connect_ex", refuse)
        yield


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    from pipeline.data import openmoji

    names = openmoji.glyph_names()
    step = len(names) // (2 * N)  # spread over the whole font; extra names cover glyphs that render blank
    root = tmp_path_factory.mktemp("fid_parity")
    a = write_set(root / "a", names[0::step], (255, 255, 255), mirror=False)
    b = write_set(root / "b", names[step // 2 :: step], (200, 220, 255), mirror=True)
    return a, b


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("fid_weights")
    yield path
    shutil.rmtree(path, ignore_errors=True)  # ~180 MB of converted weights


@pytest.fixture(scope="module")
def ours(sets):
    model = FastInception(load_shipped())
    feats = [extract_features(model, load_uint8(d), batch_size=16) for d in sets]
    (mu1, s1), (mu2, s2) = statistics(feats[0]), statistics(feats[1])
    return {"features": feats, "fid": frechet_distance(mu1, s1, mu2, s2)}


@pytest.fixture(scope="module")
def tf_extractor(cache, offline):
    return references.torch_fidelity_extractor(cache, "cpu")


@pytest.fixture(scope="module")
def fids(sets, cache, ours, offline):
    a, b = sets
    out = {
        "artgan": ours["fid"],
        "torch-fidelity": references.torch_fidelity_fid(a, b, cache, device="cpu", batch_size=16),
        "clean-fid": references.cleanfid_fid(a, b, cache, device="cpu", batch_size=16),
    }
    print("FID:", out)  # shown with -s
    return out


def test_sets_are_distinct_real_images(sets, ours):
    a, b = (load_uint8(d) for d in sets)
    assert a.shape == b.shape == (N, SIZE, SIZE, 3) and a.dtype == np.uint8
    assert len({x.tobytes() for x in a}) == N  # no duplicates inside a set
    assert ours["fid"] > 10  # the two sets differ: FID is far from zero and from rounding noise


@pytest.mark.parametrize("other", ["torch-fidelity", "clean-fid"])
def test_fid_equals_the_reference_implementation(fids, other):
    assert np.isfinite(fids[other])
    assert abs(fids["artgan"] - fids[other]) <= FID_RTOL * abs(fids[other]), fids


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")),
    ],
)
def test_fp16_features_give_the_references_fid_within_1e_3(sets, ours, fids, device):
    # eval.fid_precision: fp16 (float16 autocast, meant for GPU tensor cores; on this CPU oneDNN runs it too):
    # the features move (~3e-3), the FID of the same pair of sets stays within 1e-3 of torch-fidelity's
    model = FastInception(load_shipped()).to(device)
    half = [extract_features(model, load_uint8(d), batch_size=16, precision="fp16") for d in sets]
    assert max_rel(half[0], ours["features"][0]) > FEATURE_RTOL  # fp16 really ran
    (mu1, s1), (mu2, s2) = statistics(half[0]), statistics(half[1])
    fid = frechet_distance(mu1, s1, mu2, s2)
    print("fp16 FID:", fid, "features", max_rel(half[0], ours["features"][0]))  # shown with -s
    assert abs(fid - fids["torch-fidelity"]) <= FID_RTOL * fids["torch-fidelity"], (fid, fids)


def test_the_two_references_agree(fids):
    assert abs(fids["torch-fidelity"] - fids["clean-fid"]) <= FID_RTOL * abs(fids["clean-fid"]), fids


def test_features_equal_torch_fidelity_extractor(sets, ours, tf_extractor):
    """Pixels as torch-fidelity decodes them (its ImagesPathDataset), features from its extractor."""
    from torch_fidelity.datasets import ImagesPathDataset

    files = sorted(str(p) for p in sets[0].glob("*.png"))[:N_FEATURES]
    pixels = torch.stack([ImagesPathDataset(files)[i] for i in range(len(files))])  # uint8 N×3×H×W
    assert pixels.dtype == torch.uint8
    np.testing.assert_array_equal(pixels.permute(0, 2, 3, 1).numpy(), load_uint8(sets[0])[:N_FEATURES])
    with torch.inference_mode():
        (theirs,) = tf_extractor(pixels)
    assert theirs.shape == (N_FEATURES, FEATURE_DIM)
    diff = max_rel(ours["features"][0][:N_FEATURES], theirs.numpy())
    print(f"features vs torch-fidelity: max rel diff {diff:.2e}")
    assert diff <= FEATURE_RTOL


def test_features_equal_cleanfid_extractor(sets, cache, ours, offline):
    """Pixels as clean-fid decodes them in legacy_tensorflow mode (no resize), features from its InceptionV3W."""
    from cleanfid.utils import ResizeDataset

    files = sorted(str(p) for p in sets[0].glob("*.png"))[:N_FEATURES]
    ds = ResizeDataset(files, mode="legacy_tensorflow")
    pixels = torch.stack([ds[i] for i in range(len(files))])  # float N×3×H×W in [0, 255], not resized
    assert pixels.shape == (N_FEATURES, 3, SIZE, SIZE)
    np.testing.assert_allclose(pixels.permute(0, 2, 3, 1).numpy(), load_uint8(sets[0])[:N_FEATURES], atol=1e-4)
    model_fn = references.cleanfid_extractor(cache, "cpu")
    with torch.inference_mode():
        theirs = model_fn(pixels)
    assert theirs.shape == (N_FEATURES, FEATURE_DIM)
    diff = max_rel(ours["features"][0][:N_FEATURES], theirs.numpy())
    print(f"features vs clean-fid: max rel diff {diff:.2e}")
    assert diff <= FEATURE_RTOL


def test_converted_weights_cover_torch_fidelity_exactly(cache, tf_extractor):
    """Every parameter and buffer of torch-fidelity's module comes from a shipped unit (strict load)."""
    sd = torch.load(references.torch_fidelity_weights(cache), weights_only=True)
    assert set(tf_extractor.state_dict()) == set(sd)
    bn = [k for k in sd if k.endswith(".bn.weight")]
    assert len(bn) == 94 and all(torch.equal(sd[k], torch.ones_like(sd[k])) for k in bn)  # TF BN: no gamma
    assert all(m.eps == 1e-3 for m in tf_extractor.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert torch.isnan(sd["fc.weight"]).all()  # no output layer shipped: the Inception Score cannot use these
