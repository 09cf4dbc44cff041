"""`data.source` schemes -> functions that materialise a dataset as image files plus a manifest.

A source `fn(cfg, out_dir)` writes into the fresh directory `out_dir` and returns one row per image
it wrote (path relative to out_dir, name, label, and optionally further columns); the fetch stage
turns those rows into the manifest. SOURCES is the plain-dict registry. The user's own files are
only ever read: folder sources are copied, archives are extracted into out_dir.

  openmoji              the built-in OpenMoji set, rendered offline from its colour font
  openmoji:color        the same glyphs drawn from their SVGs (task translate's built-in style)
  openmoji:line         their line layers alone, pixel-aligned with :color (the built-in input)
  folder:<path>         a folder tree of images; labels = first-level sub-folder names
  url:<http(s)://...>   a zip or tar(.gz) archive, pinned by data.sha256, extracted safely
  hf:<dataset>          a Hugging Face dataset (data.filter, data.label)
  torchvision:<Name>    MNIST, FashionMNIST, CIFAR10, CelebA
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from pipeline.errors import ArtganError

Row = dict[str, object]


def source_scheme(source: str) -> str:
    """`openmoji` -> `openmoji`; `folder:/x` -> `folder`."""
    return source.split(":", 1)[0]


OPENMOJI_SPECS = ("openmoji", "openmoji:color", "openmoji:line")


def fetch_openmoji(cfg, out_dir: Path) -> list[Row]:
    """`openmoji`: the colour font's glyphs; `openmoji:color` / `openmoji:line`: the SVGs whole / their line layers.

    Rows are named by the glyph, so the :color and :line sets share names (task translate's pairing key) and their
    pixels align. A sequence whose whole picture repeats an earlier one's is the same emoji and is left out of every
    set; identical line layers of different pictures (one outline, five skin tones) are all kept: they pair with
    different colourings.
    """
    from pipeline.cores import cores
    from pipeline.data import openmoji

    spec, render_size, max_images = cfg.data.source, cfg.fetch.render_size, cfg.data.max_images
    if spec not in OPENMOJI_SPECS:
        raise ArtganError(
            f"data.source {spec!r}: unknown OpenMoji source; use one of {', '.join(OPENMOJI_SPECS)} "
            "(the colour font's glyphs, the SVGs whole, their line layers)"
        )
    names = openmoji.glyph_names()
    if spec == "openmoji":
        glyphs = ((g, g) for g in openmoji.render(names, render_size))
    else:
        glyphs = openmoji.render_svg(names, render_size, spec.split(":", 1)[1], workers=cores(cfg.train.threads))
    seen: set[str] = set()
    rows: list[Row] = []
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True)
    for whole, glyph in glyphs:
        if whole.sha256 in seen:  # a few code-point sequences draw the same picture; keep the first
            continue
        seen.add(whole.sha256)
        rel = Path("images") / f"{glyph.name}.png"
        (out_dir / rel).write_bytes(glyph.png)
        rows.append({"path": rel.as_posix(), "name": glyph.name, "label": None})
        if max_images and len(rows) >= max_images:
            break
    return rows


def _what(cfg) -> str:
    return f"data.source {cfg.data.source!r}"


def fetch_folder(cfg, out_dir: Path) -> list[Row]:
    from pipeline.data import folder

    path = cfg.data.source.split(":", 1)[1]
    if not path:
        raise ArtganError(f"{_what(cfg)}: name the folder, e.g. folder:art/ (sub-folders become labels)")
    root = Path(path).expanduser()
    if root.is_dir() and folder.inside(os.path.realpath(out_dir), os.path.realpath(root)):
        raise ArtganError(
            f"data.raw_dir: {cfg.data.raw_dir} is inside the source folder {path}; the source is only "
            "ever read, so point data.raw_dir outside it (the default is data/raw)"
        )
    found = folder.scan(root, _what(cfg), path)
    return folder.copy_into(found, out_dir, cfg.data.max_images)


def fetch_url(cfg, out_dir: Path) -> list[Row]:
    import shutil

    from pipeline.data import archive, folder, remote

    url = cfg.data.source.split(":", 1)[1]
    if not url.startswith(("http://", "https://")):
        raise ArtganError(f"{_what(cfg)}: expected url:http://... or url:https://... (a zip or tar archive)")
    local = remote.download(url, Path(cfg.data.download_dir) / "url", cfg.data.sha256, cfg.data.timeout, _what(cfg))
    staging = out_dir / ".extract"
    try:
        archive.extract(local, staging, _what(cfg))
        root = staging
        while True:  # an archive of one top folder (art/...): its sub-folders are the labels
            entries = [e for e in root.iterdir() if e.name not in folder.SKIPPED_DIRS]
            if len(entries) == 1 and entries[0].is_dir():
                root = entries[0]
            else:
                break
        shown = f"{url}!{root.relative_to(staging).as_posix()}".rstrip(".")
        found = folder.scan(root, _what(cfg), shown, "archive")
        return folder.copy_into(found, out_dir, cfg.data.max_images, move=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fetch_hf(cfg, out_dir: Path) -> list[Row]:
    from pipeline.data import hf

    return hf.fetch_hf(cfg, out_dir)


def fetch_torchvision(cfg, out_dir: Path) -> list[Row]:
    from pipeline.data import tvision

    return tvision.fetch_torchvision(cfg, out_dir)


SOURCES: dict[str, Callable[..., list[Row]]] = {
    "openmoji": fetch_openmoji,
    "folder": fetch_folder,
    "url": fetch_url,
    "hf": fetch_hf,
    "torchvision": fetch_torchvision,
}


def domain_sources(cfg) -> dict[str, str]:
    """The source of each domain: task generate has the style (data.source) only; translate adds the input."""
    if cfg.task == "translate":
        return {"style": cfg.data.source, "input": cfg.translate.input}
    return {"style": cfg.data.source}


def _sources_shown(cfg) -> str:
    if cfg.task == "translate":
        return f"data.source is {cfg.data.source!r} and translate.input is {cfg.translate.input!r}"
    return f"data.source is {cfg.data.source!r}"


def check_applicable(cfg) -> None:
    """Keys that only one scheme reads must not be set for another: they would be silently ignored. For task
    translate a key applies when either domain's source reads it."""
    schemes = {source_scheme(s) for s in domain_sources(cfg).values()}
    if cfg.data.sha256 and "url" not in schemes:
        raise ArtganError(f"data.sha256 pins url: downloads only, but {_sources_shown(cfg)}; set data.sha256 to ''")
    if cfg.data.label not in ("", "label"):  # said now, not after the copy
        for scheme in sorted(schemes & {"folder", "url"}):
            raise ArtganError(
                f"data.label: a {scheme}: source has one label column, 'label' (the first-level "
                f"sub-folders), not {cfg.data.label!r}; set data.label to label (or to '' for no classes)"
            )
    if cfg.data.filter and "hf" not in schemes:
        raise ArtganError(
            f"data.filter applies to hf: datasets only, but {_sources_shown(cfg)}; set data.filter to {{}}"
        )
