"""hf:<dataset> — a Hugging Face dataset (the Hub, or a folder written by `save_to_disk` / of parquet files).

The image column is found by its feature type (datasets.Image). `data.filter` keeps rows where
column == value (a class name works for ClassLabel columns); `data.label` names the column whose
values become the manifest's `label` (and a manifest column of the same name). Image bytes are
written exactly as stored in the dataset: nothing is decoded and re-encoded.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

from pipeline.errors import ArtganError

FORMAT_SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp", "TIFF": ".tif"}


def _load(name: str, cache: Path, timeout: float, what: str):
    # whole seconds: huggingface_hub reads these with int() when it is first imported ("60.0" fails its import)
    seconds = str(max(1, math.ceil(timeout)))
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", seconds)
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", seconds)
    try:
        import datasets
    except ImportError:
        raise ArtganError(f"{what}: the `datasets` package is missing; pip install datasets") from None
    local = Path(name).expanduser()
    try:
        if local.is_dir() and ((local / "state.json").exists() or (local / "dataset_dict.json").exists()):
            ds = datasets.load_from_disk(str(local))
        else:  # the Hub (streamed: only the rows used are downloaded) or a local folder of data files
            ds = datasets.load_dataset(name, streaming=True, cache_dir=str(cache))
    except FileNotFoundError as exc:
        raise ArtganError(
            f"{what}: dataset {name!r} not found on the Hub nor as a local folder ({exc}); check the name"
        ) from None
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; the user needs the first line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtganError(f"{what}: cannot load the dataset ({type(exc).__name__}: {first})") from None
    if isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        splits = list(ds)
        if "train" in ds:
            ds = ds["train"]
        elif len(splits) == 1:
            ds = ds[splits[0]]
        else:
            raise ArtganError(
                f"{what}: the dataset has no 'train' split and several others ({', '.join(splits)}); "
                "save the split you want as its own dataset"
            )
    return datasets, ds


def _wanted(feature, column: str, value, datasets, what: str):
    """The stored value a `data.filter` entry stands for (class names become ClassLabel ids)."""
    if isinstance(feature, datasets.ClassLabel):
        if isinstance(value, str):
            if value not in feature.names:
                shown = ", ".join(feature.names[:30]) + (", ..." if len(feature.names) > 30 else "")
                raise ArtganError(f"data.filter: column {column!r} of {what} has no class {value!r}; known: {shown}")
            return feature.str2int(value)
        return value
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        return str(value)
    return value


def fetch_hf(cfg, out_dir: Path) -> list[dict]:
    spec = cfg.data.source
    what = f"data.source {spec!r}"
    name = spec.split(":", 1)[1]
    if not name:
        raise ArtganError(f"{what}: name a dataset, e.g. hf:huggan/wikiart, or the folder of a saved one")
    datasets, ds = _load(name, Path(cfg.data.download_dir) / "hf", cfg.data.timeout, what)
    features = ds.features
    if features is None:
        raise ArtganError(
            f"{what}: the dataset does not declare its columns (features); save it with datasets and an Image column"
        )
    columns = ", ".join(features)
    images = [c for c, f in features.items() if isinstance(f, datasets.Image)]
    if not images:
        raise ArtganError(
            f"{what}: the dataset has no image column (columns: {columns}); "
            "artgan needs a column of type datasets.Image"
        )
    image_col = images[0]
    for column in cfg.data.filter:
        if column not in features:
            raise ArtganError(f"data.filter: unknown column {column!r} in {what}; columns: {columns}")
    conditions = {c: _wanted(features[c], c, v, datasets, what) for c, v in cfg.data.filter.items()}
    label_col = cfg.data.label
    if label_col and (label_col not in features or label_col == image_col):
        raise ArtganError(
            f"data.label: unknown column {label_col!r} in {what}; columns: "
            f"{', '.join(c for c in features if c != image_col)}"
        )
    label_feature = features[label_col] if label_col else None

    ds = ds.cast_column(image_col, datasets.Image(decode=False))  # the stored bytes, untouched
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True)
    rows: list[dict] = []
    limit = cfg.data.max_images
    for index, example in enumerate(ds):
        if any(example[c] != v for c, v in conditions.items()):
            continue
        rows.append(_write_image(example, index, image_col, label_col, label_feature, images_dir, datasets, what))
        if limit and len(rows) >= limit:
            break
    if not rows:
        if conditions:
            raise ArtganError(f"data.filter: no row of {what} matches {dict(cfg.data.filter)}; check the values")
        raise ArtganError(f"{what}: the dataset has no rows")
    return rows


def _write_image(example, index, image_col, label_col, label_feature, images_dir, datasets, what) -> dict:
    from PIL import Image

    cell = example[image_col]
    if cell is None:
        raise ArtganError(f"{what}: row {index} has no image in column {image_col!r}; drop or fix that row")
    data, src = cell.get("bytes"), cell.get("path")
    if data is None:
        if not src or not Path(src).is_file():
            raise ArtganError(f"{what}: row {index}: column {image_col!r} refers to {src!r}, which does not exist")
        data = Path(src).read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
    except Exception:  # noqa: BLE001 - not an image, or a broken one (PIL raises OSError, SyntaxError, ...):
        fmt = None  # written all the same, as a folder's bad file is copied; validate quarantines it with the reason
    suffix = FORMAT_SUFFIX.get(fmt or "", Path(src or "").suffix.lower() or ".img")
    rel = Path("images") / f"{index:07d}{suffix}"
    (images_dir.parent / rel).write_bytes(data)
    row = {"path": rel.as_posix(), "name": f"{index:07d}", "label": None}
    if label_col:
        value = example[label_col]
        if value is not None and isinstance(label_feature, datasets.ClassLabel):
            value = label_feature.int2str(int(value))
        value = None if value is None else str(value)
        row["label"] = value
        if label_col != "label":
            row[label_col] = value
    return row
