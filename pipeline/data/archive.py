"""Safe extraction of zip and tar(.gz/.bz2/.xz) archives.

Nothing is written outside the target folder: a member with an absolute path or a `..` component,
a symbolic or hard link, or a special file (device, fifo) is an error naming the member. Declared
sizes are checked before anything is written, so a decompression bomb (an extreme ratio of
uncompressed to compressed bytes) is refused without being expanded.
"""

from __future__ import annotations

import gzip
import lzma
import re
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from pipeline.errors import ArtganError

MAX_RATIO = 200  # uncompressed / compressed; images barely compress, bombs reach ~1000 per layer
SMALL = 1 << 20  # below this many bytes a high ratio is harmless (a tiny flat image, a text file)
CHUNK = 1 << 20


def _member_path(name: str, what: str) -> PurePosixPath | None:
    """The relative path a member may be written to, or an error; None for the archive root itself."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raw = name.encode("utf-8", "surrogateescape")
        raise ArtganError(
            f"{what}: archive member {raw!r} has a name that is not valid UTF-8; rename it and rebuild the archive"
        ) from None
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise ArtganError(
            f"{what}: archive member {name!r} has an absolute path; refusing to extract an archive "
            "that writes outside its folder (rebuild it with relative paths)"
        )
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArtganError(
            f"{what}: archive member {name!r} climbs out of the archive with '..'; refusing to extract "
            "it (rebuild the archive with plain relative paths)"
        )
    return PurePosixPath(*parts) if parts else None


def _check_ratio(member: str, size: int, packed: int, what: str) -> None:
    if size > SMALL and size > MAX_RATIO * max(packed, 1):
        raise ArtganError(
            f"{what}: archive member {member!r} expands {size / max(packed, 1):.0f}-fold ({size} bytes from {packed}); "
            f"refusing a likely decompression bomb (limit {MAX_RATIO}x)"
        )


def _write(src, dst: Path, limit: int, member: str, what: str) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        with open(dst, "xb") as out:
            while chunk := src.read(CHUNK):
                written += len(chunk)
                if written > limit:
                    raise ArtganError(
                        f"{what}: archive member {member!r} holds more bytes than it declares; "
                        "the archive is corrupt or malicious"
                    )
                out.write(chunk)
    except FileExistsError:
        raise ArtganError(f"{what}: archive member {member!r} appears twice; rebuild the archive") from None
    except (NotADirectoryError, IsADirectoryError):
        raise ArtganError(
            f"{what}: archive member {member!r} clashes with a file of the same name; rebuild the archive"
        ) from None


def extract(archive: Path, dest: Path, what: str) -> None:
    """Extract `archive` (zip or tar, any compression) into the new folder `dest`."""
    dest.mkdir(parents=True)
    if zipfile.is_zipfile(archive):
        _extract_zip(archive, dest, what)
    elif tarfile.is_tarfile(archive):
        _extract_tar(archive, dest, what)
    else:
        raise ArtganError(
            f"{what}: the download is neither a zip nor a tar archive; point data.source at a "
            ".zip, .tar, .tar.gz, .tar.bz2 or .tar.xz file"
        )


def _extract_zip(archive: Path, dest: Path, what: str) -> None:
    packed_total = archive.stat().st_size
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            plan: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
            total = 0
            for info in infos:  # every check before the first byte is written
                rel = _member_path(info.filename, what)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise ArtganError(
                        f"{what}: archive member {info.filename!r} is a symbolic link; artgan does "
                        "not extract links (replace it with the file itself)"
                    )
                if rel is None or info.is_dir():
                    continue
                _check_ratio(info.filename, info.file_size, info.compress_size, what)
                total += info.file_size
                plan.append((info, rel))
            _check_total(total, packed_total, what)
            for info, rel in plan:
                with zf.open(info) as src:
                    _write(src, dest.joinpath(*rel.parts), info.file_size, info.filename, what)
    except zipfile.BadZipFile as exc:
        raise ArtganError(f"{what}: the zip archive is corrupt ({exc}); download it again") from None


def _check_total(total: int, packed: int, what: str) -> None:
    if total > SMALL and total > MAX_RATIO * max(packed, 1):
        raise ArtganError(
            f"{what}: the archive expands {total / max(packed, 1):.0f}-fold ({total} bytes from {packed}); "
            f"refusing a likely decompression bomb (limit {MAX_RATIO}x)"
        )


def _extract_tar(archive: Path, dest: Path, what: str) -> None:
    packed_total = archive.stat().st_size
    total = 0
    try:
        # stream mode: each header is checked as it comes, before its data is decompressed
        with tarfile.open(archive, mode="r|*") as tf:
            for m in tf:
                rel = _member_path(m.name, what)
                if m.issym() or m.islnk():
                    kind = "symbolic" if m.issym() else "hard"
                    raise ArtganError(
                        f"{what}: archive member {m.name!r} is a {kind} link (-> {m.linkname}); "
                        "artgan does not extract links (replace it with the file itself)"
                    )
                if m.isdir() or rel is None:
                    continue
                if not m.isreg():
                    raise ArtganError(
                        f"{what}: archive member {m.name!r} is a special file (device or fifo); "
                        "rebuild the archive with regular files only"
                    )
                total += m.size
                _check_total(total, packed_total, what)
                src = tf.extractfile(m)
                assert src is not None
                with src:
                    _write(src, dest.joinpath(*rel.parts), m.size, m.name, what)
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error, lzma.LZMAError) as exc:
        raise ArtganError(f"{what}: the tar archive is corrupt or truncated ({exc}); download it again") from None
