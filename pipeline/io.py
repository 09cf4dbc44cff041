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


def check_replaceable(path: str | os.PathLike, key: str, signature: str) -> Path:
    """`path`, if artgan may replace it whole: absent, an empty folder, or a folder holding `signature` (the file
    every output of that kind holds). Anything else (the user's own folder, a file) is a one-line error naming
    the param `key`: replacing it would delete what is in it."""
    from pipeline.errors import ArtganError

    dst = Path(path)
    if dst.exists() and not (dst.is_dir() and ((dst / signature).exists() or not any(dst.iterdir()))):
        raise ArtganError(f"{key}: {dst} exists and is not an artgan output (no {signature}); artgan replaces "
                          f"that folder whole, so point {key} at a new folder (or move {dst} away yourself)")
    return dst


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, key: str, signature: str) -> Iterator[Path]:
    """Yield a fresh temp directory beside `path`; on success it replaces `path` whole.

    Only a folder artgan made is replaced (see `check_replaceable`, checked before any work starts)."""
    dst = check_replaceable(path, key, signature)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        if dst.exists():
            old = dst.with_name(f".{dst.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dst, old)
            os.replace(tmp, dst)
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
