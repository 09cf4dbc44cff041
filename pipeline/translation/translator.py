"""A trained translator (task translate): its checkpoint read and checked, uint8 images translated in batches, and an
image file converted as preprocess converts it. evaluate, render, `artgan translate`, the pyfunc model and the ONNX
export all go through it, so an image is translated the same way everywhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import ArtganError, first_line
from pipeline.io import require, torch_load
from pipeline.layout import CHECKPOINT, RERUN_TRAIN, model_file

KIND = "translator"
# what a registered model holds: the input -> style direction only (no discriminators, no way back)
TRANSLATOR_KEYS = (
    "kind",
    "model",
    "image_size",
    "g_channels",
    "blend",
    "generator",
    "generator_ema",
    "step",
    "config",
    "mlflow_run_id",
    "images_sha256",
)
BATCH = 32  # images per forward pass when translating files (memory stays flat for any number of files)


def made_by(ckpt: object) -> str:
    """The task that wrote a checkpoint dict: translate (a translator) or generate (a generator)."""
    return "translate" if isinstance(ckpt, dict) and ckpt.get("kind") == KIND else "generate"


def check_task(cfg) -> None:
    """models/checkpoint.pt was made by `cfg.task`, or one line saying which task made it and to re-run train."""
    path = model_file(cfg, CHECKPOINT)
    made = made_by(torch_load(require(path, "train"), RERUN_TRAIN, what="not an artgan checkpoint"))
    if made != cfg.task:
        what = "a translator" if made == "translate" else "a generator"
        raise ArtganError(f"{path}: {what} (made by task {made}), but task is {cfg.task}; {RERUN_TRAIN}")


def read_translator(path: str | Path, hint: str = "pass a translator checkpoint (`artgan train` with task: translate)"):
    """The translator checkpoint dict at `path` (models/checkpoint.pt or the registered copy), or one line naming the
    file: missing, not a checkpoint, a generator's (task generate), or without the fields a translator needs."""
    from pipeline.models.translators import BLENDS, TRANSLATORS

    p = Path(path)
    if p.is_dir():
        raise ArtganError(f"{p}: a directory, not a checkpoint; pass the checkpoint file (models/checkpoint.pt)")
    if not p.is_file():
        raise ArtganError(
            f"{p}: no such checkpoint; run `artgan train` (or `dvc repro`) with task: translate first, or pass "
            "--model PATH (or an MLflow model URI such as models:/<name>@champion)"
        )
    ckpt = torch_load(p, hint, what="not an artgan checkpoint")
    if made_by(ckpt) != "translate":
        raise ArtganError(f"{p}: a generator (made by task generate: noise -> images), not a translator; {hint}")
    ok = (
        ckpt.get("model") in TRANSLATORS
        and isinstance(ckpt.get("image_size"), int)
        and isinstance(ckpt.get("g_channels"), int)
        and (ckpt.get("blend") or "none") in BLENDS  # None: from before translate.blend
        and isinstance(ckpt.get("generator"), dict)
    )
    if not ok:
        raise ArtganError(
            f"{p}: not an artgan translator (no model, image_size, g_channels or weights, or an unknown blend); {hint}"
        )
    return ckpt


def translator_only(ckpt: dict) -> dict:
    """The part of a training checkpoint that translates inputs into the style: what the registry stores."""
    return {k: ckpt.get(k) for k in TRANSLATOR_KEYS}


def new_generator(ckpt: dict, state: dict):
    """A generator of the checkpoint's model and size holding `state` (a snapshot's or the final weights), in eval
    mode: dropout off, and instance norm per image, so an image translates the same in any batch."""
    from pipeline.models.translators import new_translator

    # a checkpoint from before translate.blend has none: its generator draws the image itself
    G = new_translator(ckpt["model"], int(ckpt["image_size"]), int(ckpt["g_channels"]), ckpt.get("blend") or "none")
    G.load_state_dict(state)
    return G.eval()


def translate_uint8(G, images: np.ndarray, batch_size: int = BATCH) -> np.ndarray:
    """uint8 N×S×S×3 -> G -> uint8 N×S×S×3 (quantised as a saved PNG), on G's device, in batches."""
    import torch

    from pipeline.imaging import to_uint8
    from pipeline.metrics.inception import exact_gpu, model_device

    device = model_device(G)
    out = []
    with torch.no_grad(), exact_gpu(device, deterministic=True):  # the same translations on every run
        for s in range(0, len(images), batch_size):
            x = torch.from_numpy(np.array(images[s : s + batch_size])).to(device)  # a copy: inputs may be read-only
            x = x.permute(0, 3, 1, 2).float().div(127.5).sub(1)
            out.append(to_uint8(G(x)).cpu().numpy())
    size = images.shape[1] if images.ndim == 4 else 0
    return np.concatenate(out) if out else np.zeros((0, size, size, 3), np.uint8)


class Translator:
    """One direction of a trained translator in eval mode, with what converting a new image needs: the size, the
    resize policy and the background of the preprocess it was trained after."""

    def __init__(self, ckpt: dict, ema: bool = True, key: str = "generator"):
        self.weights = "ema" if ema and ckpt.get(f"{key}_ema") is not None else "raw"
        self.G = new_generator(ckpt, ckpt[f"{key}_ema"] if self.weights == "ema" else ckpt[key])
        self.model = str(ckpt["model"])
        self.image_size = int(ckpt["image_size"])
        self.step = int(ckpt.get("step") or 0)
        pre = (ckpt.get("config") or {}).get("preprocess") or {}
        self.resize = str(pre.get("resize", "center-crop"))
        self.background = tuple(int(c) for c in pre.get("background", (255, 255, 255)))

    @classmethod
    def from_file(cls, path: str | Path, ema: bool = True, hint: str | None = None) -> "Translator":
        ckpt = read_translator(path, *(hint,) if hint else ())
        return cls.from_checkpoint(ckpt, path, ema)

    @classmethod
    def from_checkpoint(cls, ckpt: dict, path: str | Path, ema: bool = True, key: str = "generator") -> "Translator":
        try:
            return cls(ckpt, ema=ema, key=key)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ArtganError(
                f"{path}: its translator weights do not fit the model it records ({first_line(exc)}); "
                "re-run `artgan train`"
            ) from None

    def to(self, device) -> "Translator":
        self.G.to(device)
        return self

    def __call__(self, images: np.ndarray, batch_size: int = BATCH) -> np.ndarray:
        """uint8 N×S×S×3 at this translator's size -> translated uint8 N×S×S×3."""
        if images.ndim != 4 or images.shape[1:] != (self.image_size, self.image_size, 3):
            raise ArtganError(
                f"images of shape {'×'.join(map(str, images.shape))}: this translator takes N×{self.image_size}×"
                f"{self.image_size}×3 (convert them first)"
            )
        return translate_uint8(self.G, images, batch_size)

    def convert(self, source) -> np.ndarray:
        """An image file (a path or a binary file object), any size or mode, as preprocess converts it: uint8
        S×S×3 (EXIF orientation, first frame, RGB on the background, made square, Lanczos)."""
        from pipeline.data.decode import to_rgb_square

        return to_rgb_square(source, self.image_size, self.background, self.resize)
