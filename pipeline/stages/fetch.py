"""fetch: materialise `data.source` as image files under data/raw/ plus a manifest (parquet + CSV).

Task translate fetches two domains into the same folder: the style (`data.source`) as task generate does, and the
input (`translate.input`) under data/raw/inputs/; the manifest's `domain` column says which is which."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from pipeline import tracking
from pipeline.config import Config
from pipeline.data import manifest
from pipeline.data.pairing import INPUT, INPUT_DIR, STYLE, decide_paired, keys
from pipeline.data.sources import SOURCES, check_applicable, source_scheme
from pipeline.errors import ArtganError
from pipeline.io import atomic_dir
from pipeline.layout import MANIFEST

# DVC tracks this stage by its params and code: a folder outside the repository is not one of its dependencies
FOLDER_NOTE = (
    "fetch: note: dvc does not watch {source}; after adding or changing images there, run "
    "`dvc repro -s -f fetch` and then `dvc repro` (or `dvc exp run`)"
)


def input_cfg(cfg: Config) -> Config:
    """The config that fetches task translate's input domain: translate.input as the source; a url: pin (data.sha256)
    belongs to the input only when the style is not a url: download too."""
    scheme = source_scheme(cfg.translate.input)
    keep_pin = scheme == "url" and source_scheme(cfg.data.source) != "url"
    data = cfg.data.model_copy(
        update={
            "source": cfg.translate.input,
            "sha256": cfg.data.sha256 if keep_pin else "",
            "filter": cfg.data.filter if scheme == "hf" else {},
        }
    )
    return cfg.model_copy(update={"data": data})


def fetch_domain(cfg: Config, out: Path, param: str) -> pd.DataFrame:
    source = cfg.data.source
    scheme = source_scheme(source)
    if scheme not in SOURCES:
        raise ArtganError(f"{param}: unknown source {source!r}; known: {', '.join(SOURCES)}")
    rows = SOURCES[scheme](cfg, out)
    if not rows:
        raise ArtganError(f"{param} {source!r} produced no images")
    if scheme == "folder":
        print(FOLDER_NOTE.format(source=source), file=sys.stderr, flush=True)
    return manifest.describe(out, rows, source=source)


def run(cfg: Config) -> dict:
    check_applicable(cfg)
    translate = cfg.task == "translate"
    raw = Path(cfg.data.raw_dir)
    with atomic_dir(raw, "data.raw_dir", MANIFEST, stage="fetch") as tmp:
        df = fetch_domain(cfg, tmp, "data.source")
        if cfg.data.label and cfg.data.label not in df.columns:
            raise ArtganError(
                f"data.label: unknown column {cfg.data.label!r} for data.source {cfg.data.source!r}; "
                f"the manifest has: {', '.join(df.columns)}"
            )
        if translate:
            inputs = fetch_domain(input_cfg(cfg), tmp / INPUT_DIR, "translate.input")
            inputs["path"] = [f"{INPUT_DIR}/{p}" for p in inputs["path"].astype(str)]
            style_keys, input_keys = keys(df, STYLE), keys(inputs, INPUT)
            if cfg.translate.pairing == "paired" and not set(style_keys) & set(input_keys):
                raise ArtganError(
                    f"translate.pairing is paired, but no file of translate.input {cfg.translate.input!r} has the "
                    f"name of one in data.source {cfg.data.source!r}; name each pair alike (e.g. photo/a.jpg and "
                    "style/a.png), or set translate.pairing to unpaired"
                )
            df = pd.concat([df.assign(domain=STYLE), inputs.assign(domain=INPUT)], ignore_index=True)
        manifest.write(df, tmp / MANIFEST)
    figures = {"images": len(df), "bytes": int(df["bytes"].sum()), "distinct_sha256": int(df["sha256"].nunique())}
    if translate:
        figures["input_images"] = int((df["domain"] == INPUT).sum())
        figures["paired"] = decide_paired(cfg.translate.pairing, input_keys, style_keys)
    tracking.log_data_stage("fetch", cfg.flat(), figures, [raw / "manifest.csv"])
    return figures
