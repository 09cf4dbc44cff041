"""preprocess: every validated image to RGB at data.image_size in one uint8 array, duplicates removed,
and the real FID statistics.

Reads the validated manifest (`<processed_dir>/../validated/manifest.parquet`, rows with status "ok";
the image files stay in data.raw_dir and are only read). Each image: EXIF orientation applied, first
frame of an animation, every mode to RGB (palette, 1, L, LA, CMYK, 16-bit scaled to 8 bits), alpha
composited onto `preprocess.background`, made square by `preprocess.resize` (center-crop | pad |
stretch) and resized with Lanczos (after an integer `reduce` for large images; JPEGs are decoded at a
reduced DCT scale when they are much larger than needed).

Duplicates: the same sha256 as an earlier image (exact), or (near) a 64-bit DCT perceptual hash within
`preprocess.near_duplicate_distance` bits of an earlier *kept* image's and a 16×16 RGB thumbnail within
`preprocess.near_duplicate_max_diff` mean absolute difference of it (the grayscale hash alone calls
different flags or skin tones duplicates), are left out of the processed set — never deleted from
data.raw_dir — and listed in reports/duplicates.csv.

Outputs under data/processed/: images.npy (N×S×S×3 uint8, written row by row: the stage never holds
the whole array), manifest.parquet (row i = image i), fid_stats.npz (mu, sigma and the features of the
reference images, which KID needs; `digest` = the dataset digest; `precision` = eval.fid_precision, which
evaluate checks). The dataset digest is a sha256 of the processed manifest (path, sha256 and label
columns, in order); train logs it as the MLflow dataset input of the training run.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import tracking
from pipeline.config import Config, set_threads
from pipeline.data import manifest
from pipeline.errors import ArtganError
from pipeline.io import atomic_dir, atomic_path, read_input
from pipeline.data.digest import dataset_digest
from pipeline.layout import DUPLICATES, IMAGES, MANIFEST, STATS, report_file, validated_manifest

HASH_SIDE = 32  # pHash: DCT of a 32×32 grayscale thumbnail, the 8×8 lowest frequencies against their median
THUMB_SIDE = 16  # a near-duplicate candidate is confirmed on a 16×16 RGB thumbnail (mean absolute difference)
CHUNK = 256  # images per unit of work (one worker task; bounded memory)
BIG_BUCKET = 256  # near-duplicate search: a hash band shared by more images than this is searched blockwise
# manifest columns that describe the file, not the dataset's identity (the digest leaves them out)


# ---- one image ---------------------------------------------------------------------------------------

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


def load_image(path: Path, size: int, policy: str = "center-crop",
               background: tuple[int, int, int] = (255, 255, 255)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
        return (np.asarray(out, dtype=np.uint8), np.asarray(small.convert("L"), dtype=np.uint8),
                np.asarray(color, dtype=np.uint8))


def to_rgb_square(path: Path, size: int, background: tuple[int, int, int] = (255, 255, 255),
                  policy: str = "center-crop") -> np.ndarray:
    """One image as preprocess stores it: uint8 size×size×3."""
    return load_image(path, size, policy, background)[0]


# ---- perceptual hashes and duplicates ---------------------------------------------------------------

def phash(thumbs: np.ndarray) -> np.ndarray:
    """64-bit DCT perceptual hashes (uint64) of uint8 N×32×32 grayscale thumbnails, as imagehash.phash:
    bit k = the k-th of the 8×8 lowest-frequency DCT-II coefficients (row-major) exceeds their median."""
    from scipy.fft import dct

    x = np.asarray(thumbs, dtype=np.float64)
    coeffs = dct(dct(x, axis=1), axis=2)[:, :8, :8].reshape(len(x), 64)
    bits = coeffs > np.median(coeffs, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").astype(np.uint64).ravel()


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int64)


def _bands(max_distance: int) -> list[tuple[int, int]]:
    """(shift, width) of max_distance + 1 disjoint bit bands covering 64 bits: two hashes within
    max_distance bits agree exactly on at least one band (pigeonhole)."""
    k = max_distance + 1
    widths = [64 // k + (1 if i < 64 % k else 0) for i in range(k)]
    shifts = np.concatenate([[0], np.cumsum(widths)[:-1]]).tolist()
    return list(zip(shifts, widths))


def close_pairs(h: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs p < q of hashes within `max_distance` bits: (p, q, distance), sorted by (q, distance, p).

    Multi-index hashing: candidates share one of max_distance + 1 bit bands exactly, so the work is
    about N × (bucket size) per band instead of N²; a bucket larger than BIG_BUCKET is compared
    all-pairs in blocks (a cluster of similar images costs its size squared, not N²)."""
    h = np.asarray(h, dtype=np.uint64)
    n = len(h)
    found: list[tuple[np.ndarray, np.ndarray]] = []

    def keep(a: np.ndarray, b: np.ndarray) -> None:
        ok = hamming(h[a], h[b]) <= max_distance
        if ok.any():
            a, b = a[ok], b[ok]
            found.append((np.minimum(a, b), np.maximum(a, b)))

    if n >= 2:
        for shift, width in _bands(max_distance):
            key = (h >> np.uint64(shift)) & np.uint64((1 << width) - 1)
            order = np.argsort(key, kind="stable")
            ks = key[order]
            starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
            sizes = np.diff(np.r_[starts, n])
            big = sizes > BIG_BUCKET
            small_elem = np.repeat(~big, sizes)
            for o in range(1, int(sizes[~big].max(initial=1))):  # same bucket, o apart in sorted order
                same = (ks[:-o] == ks[o:]) & small_elem[:-o]
                if not same.any():
                    break
                keep(order[:-o][same], order[o:][same])
            for s, g in zip(starts[big], sizes[big]):
                members = order[s : s + g]
                for r0 in range(0, g, 1024):
                    rows = members[r0 : r0 + 1024]
                    d = hamming(h[rows][:, None], h[members][None, :])
                    i, j = np.nonzero((d <= max_distance) & (np.arange(g)[None, :] > np.arange(r0, r0 + len(rows))[:, None]))
                    if len(i):
                        found.append((np.minimum(rows[i], members[j]), np.maximum(rows[i], members[j])))
    if not found:
        e = np.empty(0, np.int64)
        return e, e, e
    p = np.concatenate([f[0] for f in found]).astype(np.int64)
    q = np.concatenate([f[1] for f in found]).astype(np.int64)
    pq = np.unique(q * n + p)  # the same pair found through several bands
    q, p = np.divmod(pq, n)
    d = hamming(h[p], h[q])
    order = np.lexsort((p, d, q))
    return p[order], q[order], d[order]


def mean_abs_diff(thumbs: np.ndarray, a: np.ndarray, b: np.ndarray, block: int = 65536) -> np.ndarray:
    """Mean absolute difference (0..255) of thumbnails a[k] and b[k], in blocks of pairs."""
    flat = thumbs.reshape(len(thumbs), -1)
    out = np.empty(len(a), np.float64)
    for s in range(0, len(a), block):
        x = flat[a[s : s + block]].astype(np.int16)
        x -= flat[b[s : s + block]]
        out[s : s + block] = np.abs(x).mean(axis=1)
    return out


def near_duplicates(h: np.ndarray, thumbs: np.ndarray, max_distance: int,
                    max_diff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy, keep-first: image j is dropped when an earlier image that was kept has a hash within
    `max_distance` bits of j's and a 16×16 RGB thumbnail within `max_diff` mean absolute difference
    (the hash finds candidates fast; the thumbnail confirms them, colour included). Returns (kept_by,
    distance, diff): kept_by[j] = the kept image that j duplicates (the closest hash, then the earliest),
    -1 for kept images."""
    h = np.asarray(h, dtype=np.uint64)
    n = len(h)
    kept_by = np.full(n, -1, np.int64)
    dist = np.zeros(n, np.int64)
    if n == 0 or max_diff < 0:
        return kept_by, dist, np.zeros(n)
    # identical (hash, thumbnail) first: every later copy goes, whatever happens to its first occurrence
    rows = np.concatenate([h.view(np.uint8).reshape(n, 8), thumbs.reshape(n, -1)], axis=1)
    keys = np.ascontiguousarray(rows).view(np.dtype((np.void, rows.shape[1]))).ravel()
    uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    by_first = np.argsort(first, kind="stable")
    rep = first[by_first]  # representative (first) image of each distinct hash, in image order
    rank = np.empty(len(uniq), np.int64)
    rank[by_first] = np.arange(len(uniq))
    rep_of = rank[inverse.ravel()]  # each image's representative, as a position in `rep`
    rep_by = np.full(len(rep), -1, np.int64)
    rep_dist = np.zeros(len(rep), np.int64)
    rep_diff = np.zeros(len(rep))
    p, q, d = close_pairs(h[rep], max_distance)
    diff = mean_abs_diff(thumbs, rep[p], rep[q])
    ok = diff <= max_diff
    for a, b, dd, df in zip(p[ok].tolist(), q[ok].tolist(), d[ok].tolist(), diff[ok].tolist()):  # by (b, dd, a)
        if rep_by[b] < 0 and rep_by[a] < 0:  # a < b is decided already: kept
            rep_by[b], rep_dist[b], rep_diff[b] = a, dd, df
    is_rep = rep[rep_of] == np.arange(n)
    removed_rep = rep_by[rep_of] >= 0
    # a representative dropped in favour of another, and the copies of it: the same kept image
    target = np.where(removed_rep, rep[np.maximum(rep_by[rep_of], 0)], rep[rep_of])
    kept_by = np.where(is_rep & ~removed_rep, -1, target)
    dist = np.where(kept_by >= 0, np.where(removed_rep, rep_dist[rep_of], 0), 0)
    diff = np.where(kept_by >= 0, np.where(removed_rep, rep_diff[rep_of], 0.0), 0.0)
    return kept_by.astype(np.int64), dist.astype(np.int64), diff


# ---- the manifest and the digest --------------------------------------------------------------------

def read_validated(cfg: Config) -> tuple[pd.DataFrame, int, Path]:
    """The rows validate passed (status "ok"), the number it quarantined, and the file read."""
    path = validated_manifest(cfg)
    df = read_input(path, "validate", manifest.read)
    if "status" not in df.columns:
        raise ArtganError(f"{path}: no 'status' column; run `artgan validate` again")
    ok = df["status"].astype(str) == "ok"
    return df[ok].reset_index(drop=True), int((~ok).sum()), path


# ---- the whole set, streamed ------------------------------------------------------------------------

def _convert_chunk(job: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    root, paths, size, policy, background = job
    images = np.empty((len(paths), size, size, 3), np.uint8)
    gray = np.empty((len(paths), HASH_SIDE, HASH_SIDE), np.uint8)
    color = np.empty((len(paths), THUMB_SIDE, THUMB_SIDE, 3), np.uint8)
    for k, rel in enumerate(paths):
        try:
            images[k], gray[k], color[k] = load_image(Path(root) / rel, size, policy, background)
        except Exception as exc:  # validate decodes every file; this is one that changed since
            raise ArtganError(f"{Path(root) / rel}: cannot be preprocessed ({exc.__class__.__name__}: {exc}); "
                              "run `artgan validate` again") from None
    return images, phash(gray), color


def _workers(requested: int, n_jobs: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(requested or cores, n_jobs))


def _chunks(root: Path, paths: list[str], size: int, policy: str, background) -> list[tuple]:
    return [(str(root), paths[s : s + CHUNK], size, policy, tuple(background)) for s in range(0, len(paths), CHUNK)]


def _header(f, n: int, size: int) -> int:
    f.seek(0)
    np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (n, size, size, 3)})
    return f.tell()


def convert(root: Path, paths: list[str], out: Path, size: int, policy: str, background, workers: int = 0,
            progress: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Write every image of `paths` (relative to `root`) as row i of the .npy `out`, chunk by chunk
    (a pool of processes when workers != 1); return their perceptual hashes and 16×16 RGB thumbnails
    (768 bytes an image: 77 MB at 100k)."""
    from tqdm import tqdm

    jobs = _chunks(root, paths, size, policy, background)
    hashes = np.empty(len(paths), np.uint64)
    thumbs = np.empty((len(paths), THUMB_SIDE, THUMB_SIDE, 3), np.uint8)
    n_proc = _workers(workers, len(jobs))
    with open(out, "wb") as f:
        _header(f, len(paths), size)
        bar = tqdm(total=len(paths), desc=progress, unit="img", disable=progress is None, leave=False)
        if n_proc == 1:
            results = map(_convert_chunk, jobs)
            pool = None
        else:
            import multiprocessing

            pool = multiprocessing.get_context("spawn").Pool(n_proc)
            results = pool.imap(_convert_chunk, jobs)  # in order; workers stay ahead of the writer
        try:
            start = 0
            for images, h, t in results:
                f.write(memoryview(images).cast("B"))
                hashes[start : start + len(h)] = h
                thumbs[start : start + len(h)] = t
                start += len(h)
                bar.update(len(h))
        finally:
            bar.close()
            if pool is not None:
                pool.terminate()
                pool.join()
    return hashes, thumbs


def compact(path: Path, keep: np.ndarray) -> None:
    """Keep rows `keep` (ascending) of the uint8 .npy at `path`, in place: every kept row moves to a lower
    or equal offset, so a forward copy never overwrites a row still to be read; then the header and the
    length shrink. Memory: one block of rows."""
    arr = np.load(path, mmap_mode="r")
    n, size = arr.shape[0], arr.shape[1]
    offset, row = arr.offset, int(np.prod(arr.shape[1:]))
    del arr
    if len(keep) == n:
        return
    block = max(1, (8 << 20) // row)
    with open(path, "r+b") as f:
        fd = f.fileno()
        dst = 0
        runs = np.split(keep, np.flatnonzero(np.diff(keep) != 1) + 1) if len(keep) else []
        for run in runs:
            for s in range(0, len(run), block):
                src, cnt = int(run[s]), min(block, len(run) - s)
                if src != dst:
                    data = os.pread(fd, cnt * row, offset + src * row)
                    os.pwrite(fd, data, offset + dst * row)
                dst += cnt
        if _header(f, len(keep), size) != offset:
            raise AssertionError("npy header length changed")  # numpy pads the header for this
        f.truncate(offset + len(keep) * row)


def build(cfg: Config, out: Path, progress: bool = True) -> dict:
    """Everything but the FID statistics: out/images.npy and out/manifest.parquet from the validated
    manifest, exact then near duplicates left out. Returns figures plus `duplicates` (report rows) and
    `manifest` (the processed DataFrame)."""
    p = cfg.preprocess
    raw = Path(cfg.data.raw_dir)
    df, quarantined, source = read_validated(cfg)
    exact = df["sha256"].duplicated(keep="first").to_numpy()
    first_of = df.groupby("sha256", sort=False)["path"].transform("first")
    report = [{"kept": k, "removed": r, "kind": "exact", "distance": 0, "mean_abs_diff": 0.0}
              for k, r in zip(first_of[exact], df["path"][exact])]
    df = df[~exact].reset_index(drop=True)

    size = cfg.data.image_size
    hashes, thumbs = convert(raw, df["path"].astype(str).tolist(), out / IMAGES, size, p.resize, p.background, p.workers,
                     progress="preprocess" if progress else None)
    kept_by, dist, diff = near_duplicates(hashes, thumbs, p.near_duplicate_distance, p.near_duplicate_max_diff)
    near = np.flatnonzero(kept_by >= 0)
    paths = df["path"].astype(str).to_numpy()
    report += [{"kept": paths[kept_by[j]], "removed": paths[j], "kind": "near", "distance": int(dist[j]),
                "mean_abs_diff": round(float(diff[j]), 3)} for j in near]
    keep = np.flatnonzero(kept_by < 0)
    if len(keep) == 0:
        raise ArtganError(f"{source}: no images left to preprocess ({quarantined} quarantined by validate)")
    compact(out / IMAGES, keep)
    df = df.iloc[keep].drop(columns=[c for c in ("status", "reason") if c in df.columns]).reset_index(drop=True)
    manifest.write(df, out / MANIFEST)
    return {"images": int(len(df)), "image_size": size, "quarantined_skipped": quarantined,
            "exact_duplicates": int(exact.sum()), "near_duplicates": int(len(near)),
            "dataset_digest": dataset_digest(df), "duplicates": report, "manifest": df}


def write_duplicates(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["kept", "removed", "kind", "distance", "mean_abs_diff"])
            w.writeheader()
            w.writerows(rows)


def reference_indices(n: int, limit: int, seed: int = 0) -> np.ndarray:
    """All images, or a fixed random subset of `limit` of them (sorted)."""
    if limit == 0 or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def run(cfg: Config) -> dict:
    from pipeline.metrics.fid import statistics
    from pipeline.metrics.inception import FastInception, extract_features, feature_device

    size = cfg.data.image_size
    device = feature_device(cfg.eval.device)  # a bad value fails now, before the images are built
    # atomic_dir refuses a folder of the user's before any work, too
    with atomic_dir(cfg.data.processed_dir, "data.processed_dir", IMAGES, stage="preprocess") as tmp:
        built = build(cfg, tmp)
        images = np.load(tmp / IMAGES, mmap_mode="r")  # read in batches; never one whole copy in memory
        set_threads(cfg)
        ref = reference_indices(len(images), cfg.preprocess.fid_real_images)
        subset = images if len(ref) == len(images) else images[ref]
        feats = extract_features(FastInception().to(device), subset, cfg.preprocess.fid_batch_size,
                                 progress="real FID features", precision=cfg.eval.fid_precision)
        mu, sigma = statistics(feats)
        np.savez(tmp / STATS, mu=mu, sigma=sigma, features=feats, indices=ref, image_size=size,
                 digest=np.array(built["dataset_digest"]), precision=np.array(cfg.eval.fid_precision))
        del images, subset
    report = report_file(cfg, DUPLICATES)
    write_duplicates(report, built["duplicates"])
    figures = {k: v for k, v in built.items() if k not in ("duplicates", "manifest")}
    figures["fid_reference_images"] = int(len(ref))
    tracking.log_data_stage("preprocess", cfg.flat(), figures, [report],
                            tags={"dataset_digest": built["dataset_digest"]})
    return figures
