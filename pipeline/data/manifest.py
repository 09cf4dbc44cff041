"""The manifest: one row per image (path, sha256, width, height, mode, label, ...) as parquet + CSV."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.io import atomic_path

COLUMNS = ["path", "name", "sha256", "width", "height", "mode", "format", "bytes", "label"]


def describe(root: Path, rows: list[dict]) -> pd.DataFrame:
    """Open every image once (header only) and record what it is."""
    from PIL import Image, UnidentifiedImageError

    from pipeline.data.sources import file_sha256
    from pipeline.errors import ArtganError

    records = []
    for row in rows:
        path = root / str(row["path"])
        try:
            with Image.open(path) as im:
                width, height, mode, fmt = im.width, im.height, im.mode, im.format
        except (UnidentifiedImageError, OSError) as exc:
            raise ArtganError(f"image {row['name']!r} of the source ({row['path']} in data.raw_dir) is not a "
                              f"readable image ({exc.__class__.__name__}); remove or replace it") from None
        records.append(
            {**row, "sha256": file_sha256(path), "width": width, "height": height, "mode": mode,
             "format": fmt, "bytes": path.stat().st_size}
        )
    extra = list(dict.fromkeys(k for row in rows for k in row if k not in COLUMNS))  # e.g. an hf label column
    df = pd.DataFrame.from_records(records, columns=COLUMNS + extra)
    for col in ["label", *extra]:
        df[col] = df[col].astype("string")
    return df


def write(df: pd.DataFrame, parquet: Path) -> None:
    with atomic_path(parquet) as tmp:
        df.to_parquet(tmp, index=False)
    with atomic_path(parquet.with_suffix(".csv")) as tmp:
        df.to_csv(tmp, index=False)


def read(parquet: Path) -> pd.DataFrame:
    return pd.read_parquet(parquet)
