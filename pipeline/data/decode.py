"""One image file to the training square: decoded, to RGB on a background, made square and resized, plus the
two thumbnails dedup compares (a grayscale one for the perceptual hash, a small RGB one to confirm)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

HASH_SIDE = 32  # pHash: DCT of a 32×32 grayscale thumbnail, the 8×8 lowest frequencies against their median
THUMB_SIDE = 16  # a near-duplicate candidate is confirmed on a 16×16 RGB thumbnail (mean absolute difference)


def to_rgb(im, background: tuple[int, int, int]):
    """Any PIL mode to RGB; transparency (alpha, a palette or tRNS transparent colour) composited onto
    `background`; 16-bit and 32-bit integer greyscale scaled to 8 bits (÷257), float clipped to 0..255."""
    from PIL import Image

    mode = im.mode
    if mode.startswith("I") or mode == "F":
        a = np.asarray(im)
        if mode == "F":
            a8 = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        else:
            a8 = np.rint(np.clip(a.astype(np.float64), 0, 65535) / 257.0).astype(np.uint8)
        return Image.fromarray(a8, "L").convert("RGB")
    if mode in ("RGBA", "LA", "La", "RGBa", "PA") or im.has_transparency_data:
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return im if mode == "RGB" else im.convert("RGB")


def fit(im, size: int, policy: str, background: tuple[int, int, int]):
    """An RGB image to size×size: center-crop (the centred square of the short side), pad (the whole image,
    long side = size, centred on `background`) or stretch (aspect ratio not kept); Lanczos resampling,
    with an integer `reduce` first when shrinking by 3× or more (same result, faster)."""
    from PIL import Image

    lanczos = Image.Resampling.LANCZOS
    w, h = im.size
    if policy == "center-crop":
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        if (w, h) != (side, side):  # crop first: resize(box=...) would filter in pixels from outside the box
            im = im.crop((left, top, left + side, top + side))
        return im if side == size else im.resize((size, size), lanczos, reducing_gap=3.0)
    if policy == "stretch":
        return im if (w, h) == (size, size) else im.resize((size, size), lanczos, reducing_gap=3.0)
    if policy == "pad":
        side = max(w, h)
        nw, nh = max(1, round(w * size / side)), max(1, round(h * size / side))
        inner = im if (w, h) == (nw, nh) else im.resize((nw, nh), lanczos, reducing_gap=3.0)
        if (nw, nh) == (size, size):
            return inner
        canvas = Image.new("RGB", (size, size), tuple(background))
        canvas.paste(inner, ((size - nw) // 2, (size - nh) // 2))
        return canvas
    raise ValueError(f"unknown resize policy {policy!r}")


def load_image(
    path: Path, size: int, policy: str = "center-crop", background: tuple[int, int, int] = (255, 255, 255)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uint8 size×size×3 image, uint8 32×32 grayscale thumbnail for the perceptual hash, uint8 16×16×3
    thumbnail that confirms a near duplicate), the thumbnails from the processed image (or, below 32 px,
    from the same geometry at 32 px)."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)  # animations: the first frame
        if im.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale when that still leaves 2× the target
            need = 2 * max(size, HASH_SIDE)
            f = need / min(im.size)
            if f < 0.5:
                im.draft(None, (max(1, int(im.width * f)), max(1, int(im.height * f))))
        rgb = to_rgb(ImageOps.exif_transpose(im), background)
        out = fit(rgb, size, policy, background)
        if size == HASH_SIDE:
            small = out
        elif size > HASH_SIDE:
            small = out.resize((HASH_SIDE, HASH_SIDE), Image.Resampling.LANCZOS, reducing_gap=3.0)
        else:
            small = fit(rgb, HASH_SIDE, policy, background)
        color = small.resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX)
        return (
            np.asarray(out, dtype=np.uint8),
            np.asarray(small.convert("L"), dtype=np.uint8),
            np.asarray(color, dtype=np.uint8),
        )


def to_rgb_square(
    path: Path, size: int, background: tuple[int, int, int] = (255, 255, 255), policy: str = "center-crop"
) -> np.ndarray:
    """One image as preprocess stores it: uint8 size×size×3."""
    return load_image(path, size, policy, background)[0]
