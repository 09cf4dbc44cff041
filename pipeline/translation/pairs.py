"""Task translate's processed data as train, evaluate and render read it: both domains, their manifests, the
pairing and the held-out split (made by preprocess with pipeline/data/pairing.py)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.data.pairing import HOLDOUT, TRAIN
from pipeline.errors import ArtganError


@dataclass
class TranslationData:
    """The processed domains: uint8 N×S×S×3 arrays and their manifests (row i = image i)."""

    inputs: np.ndarray
    styles: np.ndarray
    inputs_df: pd.DataFrame
    style_df: pd.DataFrame
    paired: bool

    def train_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(input rows, style rows) training may see: the held-out inputs and, paired, their targets excluded."""
        inputs = np.flatnonzero(self.inputs_df["split"].astype(str).to_numpy() == TRAIN)
        styles = np.flatnonzero(self.style_df["split"].astype(str).to_numpy() == TRAIN)
        return inputs, styles


def load_translation_data(cfg) -> TranslationData:
    """data/processed's two domains as preprocess wrote them for task translate, or one line naming the file."""
    from pipeline.artifacts import check_images
    from pipeline.data import manifest
    from pipeline.io import read_input
    from pipeline.layout import IMAGES, INPUTS, INPUTS_MANIFEST, MANIFEST, RERUN_PREPROCESS, processed

    arrays, frames = {}, {}
    for name, table in ((IMAGES, MANIFEST), (INPUTS, INPUTS_MANIFEST)):
        path = processed(cfg, name)
        arr = read_input(path, "preprocess", lambda p: np.load(p, mmap_mode="r"))
        if name == INPUTS and not len(arr):
            raise ArtganError(
                f"{path}: no input images (made by task generate?); task is translate: {RERUN_PREPROCESS}"
            )
        arrays[name] = check_images(arr, path)
        df = read_input(processed(cfg, table), "preprocess", manifest.read)
        if len(df) != len(arr) or "split" not in df.columns:
            raise ArtganError(
                f"{processed(cfg, table)}: does not describe {path} for task translate; {RERUN_PREPROCESS}"
            )
        frames[name] = df
    inputs_df = frames[INPUTS]
    paired = bool((inputs_df["target"] >= 0).all())
    return TranslationData(arrays[INPUTS], arrays[IMAGES], inputs_df, frames[IMAGES], paired)


def data_digest(data: TranslationData) -> str:
    """Which data a translator was trained on: both arrays' bytes, the split and the pairing."""
    h = hashlib.sha256()
    for arr in (data.styles, data.inputs):
        h.update(hashlib.sha256(np.ascontiguousarray(arr).data).digest())
    for df in (data.style_df, data.inputs_df):
        h.update("\n".join(df["split"].astype(str)).encode())
    h.update(data.inputs_df["target"].to_numpy(np.int64).tobytes())
    return h.hexdigest()


def holdout_rows(inputs_df) -> np.ndarray:
    """The held-out input rows (split == HOLDOUT) ordered by path: the first N are the same on every run, so the
    triplets and the memorisation picture show the same images as data grows (the split is by content)."""
    rows = np.flatnonzero(inputs_df["split"].astype(str).to_numpy() == HOLDOUT)
    order = np.argsort(inputs_df["path"].astype(str).to_numpy()[rows], kind="stable")
    return rows[order].astype(np.int64)
