"""Atomic outputs: everything is written to a temporary sibling, then renamed into place."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp file path beside `path`; on success it replaces `path`, on failure it is removed."""
    dst = Path(path)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
        os.replace(tmp_path, dst)
    finally:
        tmp_path.unlink(missing_ok=True)


MARKER = ".artgan"  # in every folder an artgan stage made: proof that artgan may replace it whole
MARKER_FORMAT = 1
# the stage that makes a folder, by the file every such folder holds (callers that do not name their stage)
STAGE_OF = {"manifest.parquet": "fetch", "images.npy": "preprocess", "grid.png": "render"}


def is_artgan_output(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder holding artgan's ownership marker (a JSON file with its format version)."""
    marker = Path(path) / MARKER
    try:
        return marker.is_file() and not marker.is_symlink() and "format" in json.loads(marker.read_text())
    except (OSError, ValueError, TypeError):
        return False


def write_marker(folder: Path, key: str, stage: str) -> None:
    """The ownership marker of an output folder artgan made: the stage, the param that names the folder and
    the marker's format (deterministic: a stage run twice makes the same folder, byte for byte)."""
    (folder / MARKER).write_text(
        json.dumps({"format": MARKER_FORMAT, "param": key, "stage": stage}, sort_keys=True) + "\n"
    )


def check_replaceable(path: str | os.PathLike, key: str, signature: str) -> Path:
    """`path`, if artgan may replace it whole: absent, an empty folder, or a folder holding the marker artgan
    writes into every output folder it makes (`.artgan`). Anything else (the user's own folder, a file, an output
    of an artgan from before the marker, which holds `signature` but no marker) is a one-line error naming the
    param `key`: replacing it would delete what is in it."""
    from pipeline.errors import ArtganError

    dst = Path(path)
    if not os.path.lexists(dst) or is_artgan_output(dst):
        return dst
    if dst.is_dir() and not dst.is_symlink() and not any(dst.iterdir()):
        return dst
    if dst.is_dir() and (dst / signature).exists():
        raise ArtganError(
            f"{key}: {dst} holds a {signature} but no {MARKER} marker (made by an older artgan, or a "
            f"folder of yours): artgan replaces only folders it marked; if it is an old output, delete "
            f"{dst} and run again, else point {key} at a new folder"
        )
    raise ArtganError(
        f"{key}: {dst} exists and is not an artgan output (no {MARKER} marker); artgan replaces "
        f"that folder whole, so point {key} at a new folder (or move {dst} away yourself)"
    )


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, key: str, signature: str, stage: str | None = None) -> Iterator[Path]:
    """Yield a fresh temp directory beside `path`; on success it replaces `path` whole, marked as artgan's
    (`.artgan`, naming `stage`: by default the stage that makes `signature`).

    Only a folder artgan made is replaced (see `check_replaceable`, checked before any work starts)."""
    dst = check_replaceable(path, key, signature)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    try:
        yield tmp
        write_marker(tmp, key, stage or STAGE_OF.get(signature, ""))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        if os.path.lexists(dst):
            check_replaceable(dst, key, signature)  # still artgan's, after the work
            old = dst.with_name(f".{dst.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dst, old)
            try:
                os.replace(tmp, dst)
            except BaseException:
                os.replace(old, dst)  # the earlier output back in place: a failed swap loses nothing
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, obj: object) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> dict:
    return json.loads(Path(path).read_text())


def torch_load(path: str | os.PathLike, hint: str, weights_only: bool = True, what: str = "unreadable"):
    """torch.load onto the CPU, or a one-line ArtganError naming the file, `what` it is, and what to do (`hint`)
    when it is not a torch file, is truncated or holds what weights_only refuses."""
    import torch

    from pipeline.errors import ArtganError, first_line

    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as exc:
        raise ArtganError(f"{path}: {what} ({first_line(exc)}); {hint}") from None


def read_input(path: str | os.PathLike, stage: str, reader: Callable[[Path], T]) -> T:
    """`reader(path)` of a stage's input: a missing or unreadable (corrupt, truncated) file is a one-line error
    naming it and the stage that makes it."""
    from pipeline.errors import ArtganError, first_line

    p = require(path, stage)
    try:
        return reader(p)
    except Exception as exc:
        raise ArtganError(f"{p}: unreadable ({first_line(exc)}); re-run `artgan {stage}` (or `dvc repro`)") from None


def require(path: str | os.PathLike, stage: str) -> Path:
    """The input `path` of a stage, or a one-line error saying which stage makes it."""
    from pipeline.errors import ArtganError

    p = Path(path)
    if not p.exists():
        raise ArtganError(f"{p}: missing input; run `artgan {stage}` (or `dvc repro`) first")
    return p
