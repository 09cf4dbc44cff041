"""The dataset's fingerprints: of one file, of the training array, and of the processed manifest.

- `file_sha256`: one file's bytes (the manifest's `sha256` column, download pins).
- `images_digest`: the training images' bytes (images.npy's array) and, when conditional, their labels: which
  data a checkpoint was trained on, and part of the resume key.
- `dataset_digest`: the processed manifest's identity (paths, file hashes, labels), which MLflow's dataset
  input, the FID reference and the registry's champion compare.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

# manifest columns that describe a file rather than say which image it is or what its label is
DESCRIPTIVE = {"name", "width", "height", "mode", "format", "bytes", "source", "status", "reason"}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def images_digest(images: np.ndarray, labels: np.ndarray | None = None) -> str:
    """sha256 of the images' bytes, then of the labels' (when given)."""
    h = hashlib.sha256(np.ascontiguousarray(images).data)
    if labels is not None:
        h.update(labels.tobytes())
    return h.hexdigest()


def digest_columns(df) -> list[str]:
    """path, sha256 and the label columns (`label` and any extra column a source added)."""
    first = [c for c in ("path", "sha256") if c in df.columns]
    return first + [c for c in df.columns if c not in ("path", "sha256") and c not in DESCRIPTIVE]


def dataset_digest(df) -> str:
    """sha256 of the processed manifest's identity: column names, then per row (in order) the path,
    sha256 and labels as JSON; independent of parquet/pandas versions and of file metadata."""
    cols = digest_columns(df)
    h = hashlib.sha256(json.dumps(cols).encode())
    values = df[cols].astype("string").astype(object).where(df[cols].notna(), None)
    for row in values.itertuples(index=False, name=None):
        h.update(b"\n" + json.dumps(row, ensure_ascii=False).encode())
    return h.hexdigest()
