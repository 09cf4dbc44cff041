"""Reading the artifacts one stage writes and a later one reads: the processed images and labels, and the
trained checkpoint, generators and snapshots. Each reader names the file and the stage that remakes it when
the artifact is missing or is not what that stage writes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data.digest import images_digest
from pipeline.errors import ArtganError
from pipeline.io import read_input, require, torch_load
from pipeline.layout import (
    CHECKPOINT,
    IMAGES,
    MANIFEST,
    RERUN_PREPROCESS,
    RERUN_TRAIN,
    SNAPSHOTS,
    model_file,
    processed,
)

GENERATOR_KEYS = ("generator", "generator_ema", "config", "classes", "class_counts", "kind", "step")


def read_checkpoint(path: str | Path, hint: str = "pass the models/checkpoint.pt that `artgan train` writes") -> dict:
    """The checkpoint dict `artgan train` wrote at `path` (a generator-only copy will do), or a one-line
    ArtganError naming the file and saying what to do (`hint`)."""
    p = Path(path)
    if p.is_dir():
        raise ArtganError(f"{p}: a directory, not a checkpoint; pass the checkpoint file (models/checkpoint.pt)")
    if not p.is_file():
        raise ArtganError(
            f"{p}: no such checkpoint; run `artgan train` (or `dvc repro`) first, or pass "
            "--model PATH (or an MLflow model URI such as models:/<name>@champion)"
        )
    ckpt = torch_load(p, hint, what="not an artgan checkpoint")
    try:
        model, data = ckpt["config"]["model"], ckpt["config"]["data"]
        ok = (
            isinstance(ckpt["generator"], dict)
            and all(k in model for k in ("arch", "z_dim", "g_channels", "d_channels"))
            and "image_size" in data
        )
    except (KeyError, TypeError, IndexError):
        ok = False
    if not ok:
        raise ArtganError(f"{p}: not an artgan checkpoint (no generator weights and model config); {hint}")
    return ckpt


def generator_only(ckpt: dict) -> dict:
    """The part of a training checkpoint a generator needs (no discriminator): what the registry stores."""
    return {k: ckpt.get(k) for k in GENERATOR_KEYS} | {"discriminator": None}


def check_images(arr: np.ndarray, path: Path) -> np.ndarray:
    """`arr` if it is what preprocess writes, uint8 N×S×S×3 (0..255 by its type), else a one-line error naming
    the file: a float array in [0, 1] made by hand would train on near-black images without a word."""
    shape = "×".join(map(str, arr.shape))
    if arr.dtype != np.uint8:
        raise ArtganError(
            f"{path}: {arr.dtype} images of shape {shape}, not uint8 0..255 as preprocess writes "
            f"them; {RERUN_PREPROCESS}"
        )
    if arr.ndim != 4 or arr.shape[3] != 3 or arr.shape[1] != arr.shape[2] or not len(arr):
        raise ArtganError(
            f"{path}: shape {shape}, not N×S×S×3 (N square RGB images) as preprocess writes them; {RERUN_PREPROCESS}"
        )
    return arr


def load_images(cfg) -> np.ndarray:
    """uint8 N×S×S×3 as preprocess wrote it."""
    path = processed(cfg, IMAGES)
    arr = check_images(read_input(path, "preprocess", np.load), path)
    if arr.shape[1] != cfg.data.image_size:
        raise ArtganError(
            f"{processed(cfg, IMAGES)}: images are {arr.shape[1]} px but data.image_size is "
            f"{cfg.data.image_size}; {RERUN_PREPROCESS}"
        )
    return arr


def load_labels(cfg, n: int) -> tuple[np.ndarray | None, list[str]]:
    """Class indices from the processed manifest's `data.label` column (sorted class names), or None."""
    if not cfg.data.label:
        return None, []
    from pipeline.data import manifest

    path = processed(cfg, MANIFEST)
    df = read_input(path, "preprocess", manifest.read)
    col = cfg.data.label
    if col not in df.columns:
        raise ArtganError(
            f"data.label: column {col!r} is not in {path} (columns: {', '.join(df.columns)}); "
            "set data.label to one of them or to '' for unconditional training"
        )
    values = df[col]
    if values.isna().any():
        raise ArtganError(
            f"data.label: {int(values.isna().sum())} images in {path} have no {col!r}; "
            "label every image or set data.label to ''"
        )
    if len(values) != n:
        raise ArtganError(f"{path}: {len(values)} rows but {n} images; run `artgan preprocess` again")
    classes = sorted(values.astype(str).unique())
    if len(classes) < 2:
        raise ArtganError(f"data.label: column {col!r} has a single class; conditional training needs two or more")
    index = {c: i for i, c in enumerate(classes)}
    return values.astype(str).map(index).to_numpy(np.int64, copy=True), classes


def check_trained_on(cfg, images: np.ndarray) -> None:
    """A one-line error when models/checkpoint.pt was trained on other images than data/processed holds (a
    preprocess of another dataset since): its scores would be those of the wrong data. Checkpoints from before
    the record pass."""
    path = model_file(cfg, CHECKPOINT)
    trained = read_checkpoint(require(path, "train"), RERUN_TRAIN).get("images_sha256")
    if trained is not None and trained != images_digest(images):
        raise ArtganError(
            f"{path} was trained on other images than {processed(cfg, IMAGES)} holds "
            f"(preprocessed again since); {RERUN_TRAIN}"
        )


def processed_manifest(cfg):
    """data/processed/manifest.parquet, or None when there is none (images.npy made by hand); a truncated or
    corrupt one is a one-line error naming it and preprocess."""
    from pipeline.data import manifest

    path = processed(cfg, MANIFEST)
    if not path.exists():
        return None
    return read_input(path, "preprocess", manifest.read)


def load_generator(cfg, ema: bool = True):
    """The trained generator from models/checkpoint.pt (EMA weights when trained with them), in eval mode.

    Returns (G, z_dim, n_classes, class_counts)."""
    ckpt = read_checkpoint(require(model_file(cfg, CHECKPOINT), "train"), RERUN_TRAIN)
    G = generator_from(ckpt, ema)
    return G, ckpt["config"]["model"]["z_dim"], len(ckpt.get("classes") or []), list(ckpt.get("class_counts") or [])


def generator_from(ckpt: dict, ema: bool = True):
    """The generator a checkpoint dict holds (EMA weights when asked for and present), in eval mode."""
    G = new_generator(ckpt)
    weights = ckpt["generator_ema"] if ema and ckpt.get("generator_ema") is not None else ckpt["generator"]
    G.load_state_dict(weights)
    return G.eval()


def new_generator(ckpt: dict):
    """An untrained generator of the architecture a checkpoint records."""
    from pipeline.models import build

    m = ckpt["config"]["model"]
    G, _ = build(
        m["arch"],
        ckpt["config"]["data"]["image_size"],
        m["z_dim"],
        m["g_channels"],
        m["d_channels"],
        n_classes=len(ckpt.get("classes") or []),
        spectral_norm=m["spectral_norm"],
    )
    return G


def load_snapshots(cfg) -> list:
    """(step, generator in eval mode) for every snapshot training kept (models/snapshots.pt)."""
    ckpt = read_checkpoint(require(model_file(cfg, CHECKPOINT), "train"), RERUN_TRAIN)
    snaps = torch_load(require(model_file(cfg, SNAPSHOTS), "train"), RERUN_TRAIN)
    out = []
    for step, weights in zip(snaps["steps"], snaps["generators"]):
        G = new_generator(ckpt)
        G.load_state_dict(weights)
        out.append((step, G.eval()))
    return out
