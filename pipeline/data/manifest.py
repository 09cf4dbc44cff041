"""The manifest: one row per image (path, sha256, width, height, mode, source, ...) as parquet + CSV."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.io import atomic_path

COLUMNS = ["path", "name", "sha256", "width", "height", "mode", "format", "bytes", "label", "source"]


def _header(path: Path) -> tuple[int | None, int | None, str | None, str | None]:
    """(width, height, mode, format) from the file's header, or all None when Pillow cannot open it.

    A file Pillow cannot open at all (a zero-byte file, text named .jpg) still gets its row, so validate can
    quarantine it with a reason; a decompression bomb is described from its header (never decoded here).
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.width, im.height, im.mode, im.format
    except Image.DecompressionBombError:
        limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None  # only the header is read; validate quarantines it
        try:
            with Image.open(path) as im:
                return im.width, im.height, im.mode, im.format
        except Exception:
            return None, None, None, None
        finally:
            Image.MAX_IMAGE_PIXELS = limit
    except Exception:  # UnidentifiedImageError, OSError, SyntaxError, ...: validate names the reason
        return None, None, None, None


def describe(root: Path, rows: list[dict], source: str = "") -> pd.DataFrame:
    """Open every image once (header only) and record what it is; `source` is data.source."""
    from pipeline.data.digest import file_sha256

    records = []
    for row in rows:
        path = root / str(row["path"])
        width, height, mode, fmt = _header(path)
        records.append(
            {
                **row,
                "sha256": file_sha256(path),
                "width": width,
                "height": height,
                "mode": mode,
                "format": fmt,
                "bytes": path.stat().st_size,
                "source": source,
            }
        )
    extra = list(dict.fromkeys(k for row in rows for k in row if k not in COLUMNS))  # e.g. an hf label column
    df = pd.DataFrame.from_records(records, columns=COLUMNS + extra)
    for col in ["width", "height"]:
        df[col] = df[col].astype("Int64")  # null where Pillow cannot read the header
    for col in ["mode", "format", "label", "source", *extra]:
        df[col] = df[col].astype("string")
    return df


def write(df: pd.DataFrame, parquet: Path) -> None:
    with atomic_path(parquet) as tmp:
        df.to_parquet(tmp, index=False)
    with atomic_path(parquet.with_suffix(".csv")) as tmp:
        df.to_csv(tmp, index=False)


def read(parquet: Path) -> pd.DataFrame:
    return pd.read_parquet(parquet)
