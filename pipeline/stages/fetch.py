"""fetch: materialise `data.source` as image files under data/raw/ plus a manifest (parquet + CSV)."""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline import tracking
from pipeline.config import Config
from pipeline.data import manifest
from pipeline.data.sources import SOURCES, check_applicable, source_scheme
from pipeline.errors import ArtganError
from pipeline.io import atomic_dir
from pipeline.layout import MANIFEST

# DVC tracks this stage by its params and code: a folder outside the repository is not one of its dependencies
FOLDER_NOTE = (
    "fetch: note: dvc does not watch {source}; after adding or changing images there, run "
    "`dvc repro -s -f fetch` and then `dvc repro` (or `dvc exp run`)"
)


def run(cfg: Config) -> dict:
    scheme = source_scheme(cfg.data.source)
    if scheme not in SOURCES:
        raise ArtganError(f"data.source: unknown source {cfg.data.source!r}; known: {', '.join(SOURCES)}")
    check_applicable(cfg)
    fetch = SOURCES[scheme]
    raw = Path(cfg.data.raw_dir)
    with atomic_dir(raw, "data.raw_dir", MANIFEST, stage="fetch") as tmp:
        rows = fetch(cfg, tmp)
        if not rows:
            raise ArtganError(f"data.source {cfg.data.source!r} produced no images")
        df = manifest.describe(tmp, rows, source=cfg.data.source)
        if cfg.data.label and cfg.data.label not in df.columns:
            raise ArtganError(
                f"data.label: unknown column {cfg.data.label!r} for data.source {cfg.data.source!r}; "
                f"the manifest has: {', '.join(df.columns)}"
            )
        manifest.write(df, tmp / MANIFEST)
    figures = {"images": len(df), "bytes": int(df["bytes"].sum()), "distinct_sha256": int(df["sha256"].nunique())}
    tracking.log_data_stage("fetch", cfg.flat(), figures, [raw / "manifest.csv"])
    if scheme == "folder":
        print(FOLDER_NOTE.format(source=cfg.data.source), file=sys.stderr, flush=True)
    return figures
