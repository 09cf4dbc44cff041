"""fetch: materialise `data.source` as image files under data/raw/ plus a manifest (parquet + CSV)."""
from __future__ import annotations

from pathlib import Path

from pipeline.config import Config
from pipeline.data import manifest
from pipeline.data.sources import SOURCES, source_scheme
from pipeline.errors import ArtganError
from pipeline.io import atomic_dir
from pipeline import tracking

MANIFEST = "manifest.parquet"


def run(cfg: Config) -> dict:
    fetch = SOURCES[source_scheme(cfg.data.source)]
    raw = Path(cfg.data.raw_dir)
    with atomic_dir(raw) as tmp:
        rows = fetch(cfg.data.source, tmp, cfg.fetch.render_size, cfg.data.max_images)
        if not rows:
            raise ArtganError(f"data.source {cfg.data.source!r} produced no images")
        df = manifest.describe(tmp, rows)
        manifest.write(df, tmp / MANIFEST)
    figures = {"images": len(df), "bytes": int(df["bytes"].sum()), "distinct_sha256": int(df["sha256"].nunique())}
    tracking.log_data_stage("fetch", cfg.flat(), figures, [raw / "manifest.csv"])
    return figures
