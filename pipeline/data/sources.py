"""`data.source` schemes -> functions that materialise a dataset as image files plus a manifest.

A source writes into a fresh directory and returns one row per image it wrote; the fetch stage turns
those rows into the manifest. SOURCES is the plain-dict registry.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

from pipeline.errors import ArtganError

Row = dict[str, object]


def source_scheme(source: str) -> str:
    """`openmoji` -> `openmoji`; `folder:/x` -> `folder`."""
    return source.split(":", 1)[0]


def fetch_openmoji(spec: str, out_dir: Path, render_size: int, max_images: int) -> list[Row]:
    from pipeline.data import openmoji

    if spec != "openmoji":
        raise ArtganError(f"data.source {spec!r}: the built-in OpenMoji source takes no argument; use 'openmoji'")
    seen: set[str] = set()
    rows: list[Row] = []
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True)
    for glyph in openmoji.render(openmoji.glyph_names(), render_size):
        if glyph.sha256 in seen:  # a few code-point sequences draw the same picture; keep the first
            continue
        seen.add(glyph.sha256)
        rel = Path("images") / f"{glyph.name}.png"
        (out_dir / rel).write_bytes(glyph.png)
        rows.append({"path": rel.as_posix(), "name": glyph.name, "label": None})
        if max_images and len(rows) >= max_images:
            break
    return rows


SOURCES: dict[str, Callable[[str, Path, int, int], list[Row]]] = {
    "openmoji": fetch_openmoji,
}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
