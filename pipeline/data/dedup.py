"""Near duplicates: 64-bit DCT perceptual hashes within a Hamming distance of an earlier kept image's (found
through hash bands, not all pairs), confirmed on small RGB thumbnails (the grayscale hash alone calls different
flags or skin tones duplicates)."""

from __future__ import annotations

import numpy as np

BIG_BUCKET = 256  # a hash band shared by more images than this is searched blockwise


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
                    i, j = np.nonzero(
                        (d <= max_distance) & (np.arange(g)[None, :] > np.arange(r0, r0 + len(rows))[:, None])
                    )
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


def near_duplicates(
    h: np.ndarray, thumbs: np.ndarray, max_distance: int, max_diff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
