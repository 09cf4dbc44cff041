"""The training array, streamed: images decoded chunk by chunk (in worker processes) into a memory-mapped .npy
that is never whole in memory, then compacted in place to the rows kept."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline.data.decode import HASH_SIDE, THUMB_SIDE, load_image
from pipeline.data.dedup import phash
from pipeline.errors import ArtganError

CHUNK = 256  # images per unit of work (one worker task; bounded memory)


def _convert_chunk(job: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    root, paths, size, policy, background = job
    images = np.empty((len(paths), size, size, 3), np.uint8)
    gray = np.empty((len(paths), HASH_SIDE, HASH_SIDE), np.uint8)
    color = np.empty((len(paths), THUMB_SIDE, THUMB_SIDE, 3), np.uint8)
    for k, rel in enumerate(paths):
        try:
            images[k], gray[k], color[k] = load_image(Path(root) / rel, size, policy, background)
        except Exception as exc:  # validate decodes every file; this is one that changed since
            raise ArtganError(
                f"{Path(root) / rel}: cannot be preprocessed ({exc.__class__.__name__}: {exc}); "
                "run `artgan validate` again"
            ) from None
    return images, phash(gray), color


def _workers(requested: int, n_jobs: int) -> int:
    from pipeline.cores import cores

    return max(1, min(cores(requested), n_jobs))


def _chunks(root: Path, paths: list[str], size: int, policy: str, background) -> list[tuple]:
    return [(str(root), paths[s : s + CHUNK], size, policy, tuple(background)) for s in range(0, len(paths), CHUNK)]


def convert(
    root: Path,
    paths: list[str],
    out: Path,
    size: int,
    policy: str,
    background,
    workers: int = 0,
    progress: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Write every image of `paths` (relative to `root`) as row i of the .npy `out`, chunk by chunk
    (a pool of processes when workers != 1); return their perceptual hashes and 16×16 RGB thumbnails
    (768 bytes an image: 77 MB at 100k)."""
    from tqdm import tqdm

    jobs = _chunks(root, paths, size, policy, background)
    hashes = np.empty(len(paths), np.uint64)
    thumbs = np.empty((len(paths), THUMB_SIDE, THUMB_SIDE, 3), np.uint8)
    n_proc = _workers(workers, len(jobs))
    array = np.lib.format.open_memmap(out, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))
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
            array[start : start + len(h)] = images
            hashes[start : start + len(h)] = h
            thumbs[start : start + len(h)] = t
            start += len(h)
            bar.update(len(h))
        array.flush()
    finally:
        bar.close()
        del array
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
        f.seek(0)
        np.lib.format.write_array_header_1_0(
            f, {"descr": "|u1", "fortran_order": False, "shape": (len(keep), size, size, 3)}
        )
        if f.tell() != offset:
            raise AssertionError("npy header length changed")  # numpy pads the header for this
        f.truncate(offset + len(keep) * row)
