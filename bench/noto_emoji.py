"""A second built-in-free art dataset for the quality benchmark: Google's Noto Color Emoji (SIL OFL 1.1).

Debian ships the font (`apt-get install fonts-noto-color-emoji`, /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf).
This script draws every code-point sequence that OpenMoji names and that Noto draws as one glyph into a folder of
128×128 RGBA PNGs, which artgan then reads as `data.source: folder:<out>`. Another artist's style (shaded, no dark
outlines, gradients) over much the same subjects, so a recipe tuned to OpenMoji's flat line art has to carry over.

    python bench/noto_emoji.py --out bench/out/noto     # ~3,500 PNGs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
BITMAP_SIZE = 109  # the only size the font's CBDT bitmaps have; Pillow refuses others
ATTRIBUTION = "Noto Color Emoji, Copyright 2013 Google LLC, SIL Open Font License 1.1"


def render_all(out: Path, size: int = 128) -> int:
    from PIL import Image, ImageDraw, ImageFont

    from pipeline.data.openmoji import glyph_names, text_of

    if not FONT.exists():
        sys.exit(f"error: {FONT} is missing; run `apt-get install fonts-noto-color-emoji`")
    font = ImageFont.truetype(str(FONT), size=BITMAP_SIZE, layout_engine=ImageFont.Layout.RAQM)
    out.mkdir(parents=True, exist_ok=True)
    tofu = None
    n = 0
    for name in glyph_names():
        text = text_of(name)
        left, top, right, bottom = font.getbbox(text)
        if right - left > 1.5 * BITMAP_SIZE:  # Noto has no ligature for this sequence: several glyphs side by side
            continue
        canvas = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
        ImageDraw.Draw(canvas).text((80, 80), text, font=font, anchor="mm", embedded_color=True)
        box = canvas.getbbox()
        if box is None:
            continue
        data = canvas.tobytes()
        if tofu is None:  # the font's missing-glyph box, drawn for code points it lacks (OpenMoji's own extras)
            tofu_canvas = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
            ImageDraw.Draw(tofu_canvas).text((80, 80), "\U000ffffd", font=font, anchor="mm", embedded_color=True)
            tofu = tofu_canvas.tobytes()
        if data == tofu:
            continue
        side = max(box[2] - box[0], box[3] - box[1])
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        half = side / 2 / 0.9  # the glyph fills 90% of the tile, as OpenMoji's glyphs do about
        tile = canvas.crop((round(cx - half), round(cy - half), round(cx + half), round(cy + half)))
        tile.resize((size, size), Image.LANCZOS).save(out / f"{name}.png")
        n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/out/noto")
    args = ap.parse_args()
    n = render_all(Path(args.out))
    print(f"{n} Noto Color Emoji glyphs written to {args.out} ({ATTRIBUTION})")


if __name__ == "__main__":
    main()
