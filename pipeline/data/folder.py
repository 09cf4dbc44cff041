"""Images from a folder tree, read-only: scanned without leaving the folder, then copied into data/raw.

The user's folder is never written to. Symbolic links are followed only while they stay inside the
folder; a link out of it, a broken link or a loop is an error naming the link. Labels are the
first-level sub-folder names (images at the top level have none).
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ArtganError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")
SKIPPED_DIRS = ("__MACOSX",)  # macOS resource forks in zip archives


@dataclass(frozen=True)
class Found:
    src: str  # the real path of the file (symlinks resolved)
    rel: tuple[str, ...]  # its path inside the folder, as the user sees it
    label: str | None


def inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _shown(display_root: str, rel: tuple[str, ...]) -> str:
    return "/".join((display_root.rstrip("/"), *rel))


def _check_utf8(name: str, display: str, what: str) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(display)
        raise ArtganError(
            f"{what}: the name {raw!r} is not valid UTF-8; rename it "
            "(e.g. `convmv -f latin1 -t utf8 --notest -r FOLDER`) and fetch again"
        ) from None


def scan(root: Path, what: str, display_root: str | None = None, kind: str = "folder") -> list[Found]:
    """Every image file under `root` (sorted by path), without following links out of `root`.

    `what` names the source in error messages (e.g. "data.source 'folder:art'"); `display_root`
    is how `root` is shown in them (default: the path itself), `kind` what it is ("folder", or "archive" for an
    unpacked archive).
    """
    display_root = display_root if display_root is not None else str(root)
    if not root.exists():
        raise ArtganError(f"{what}: folder {display_root} does not exist; check the path")
    if not root.is_dir():
        raise ArtganError(f"{what}: {display_root} is not a folder; point data.source at the folder of images")
    real_root = os.path.realpath(root)
    candidates: list[tuple[bool, Found]] = []  # (reached through a link, file)
    counts = {"entries": 0, "other": 0}

    def visit_file(real: str, rel: tuple[str, ...], display: str, via_link: bool) -> None:
        if not rel[-1].lower().endswith(IMAGE_SUFFIXES) or rel[-1].startswith("._"):
            counts["other"] += 1
            return
        _check_utf8(rel[-1], display, what)
        candidates.append((via_link, Found(real, rel, rel[0] if len(rel) > 1 else None)))

    def walk(dir_real: str, rel: tuple[str, ...], ancestors: frozenset[str], via_link: bool) -> None:
        try:
            entries = sorted(os.scandir(dir_real), key=lambda e: e.name)
        except PermissionError:
            raise ArtganError(
                f"{what}: cannot read folder {_shown(display_root, rel)} (permission denied); make it readable"
            ) from None
        for entry in entries:
            counts["entries"] += 1
            sub = rel + (entry.name,)
            display = _shown(display_root, sub)
            if entry.name in SKIPPED_DIRS:
                continue
            path = os.path.join(dir_real, entry.name)
            if entry.is_symlink():
                try:
                    target = os.path.realpath(path, strict=True)
                except OSError as exc:
                    if exc.errno == errno.ELOOP:
                        raise ArtganError(f"{what}: {display} is a symlink loop; remove or fix the link") from None
                    raise ArtganError(
                        f"{what}: {display} is a broken symlink (-> {os.readlink(path)}); remove or fix the link"
                    ) from None
                if not inside(target, real_root):
                    raise ArtganError(
                        f"{what}: {display} is a symlink to {target}, outside the folder; artgan does not follow "
                        "links out of data.source: copy the file in or remove the link"
                    )
                if os.path.isdir(target):
                    if target in ancestors:
                        raise ArtganError(
                            f"{what}: {display} is a symlink loop (it points back to "
                            f"{_shown(display_root, ())}/{os.path.relpath(target, real_root)}); "
                            "remove the link"
                        )
                    _check_utf8(entry.name, display, what)
                    walk(target, sub, ancestors | {target}, True)
                elif os.path.isfile(target):
                    visit_file(target, sub, display, True)
                continue
            if entry.is_dir(follow_symlinks=False):
                _check_utf8(entry.name, display, what)
                walk(path, sub, ancestors | {path}, via_link)
            elif entry.is_file(follow_symlinks=False):
                visit_file(path, sub, display, via_link)
            # sockets, fifos and devices are not images: skipped

    walk(real_root, (), frozenset({real_root}), False)
    if counts["entries"] == 0:
        raise ArtganError(
            f"{what}: {kind} {display_root.rstrip('!')} is empty; put images in it (sub-folders become labels)"
        )
    # a file reached several ways (links inside the folder) is taken once, under its own name if it has one
    found: dict[str, Found] = {}
    for _, f in sorted(candidates, key=lambda c: (c[0], c[1].rel)):
        found.setdefault(f.src, f)
    if not found:
        raise ArtganError(
            f"{what}: {kind} {display_root.rstrip('!')} has no images ({counts['other']} other file(s)); "
            f"artgan reads {', '.join(IMAGE_SUFFIXES)}"
        )
    return sorted(found.values(), key=lambda f: f.rel)


def copy_into(found: list[Found], out_dir: Path, max_images: int = 0, move: bool = False) -> list[dict]:
    """Copy (or move, for files artgan itself extracted) the images into out_dir/images/<rel>."""
    rows: list[dict] = []
    for f in found[:max_images] if max_images else found:
        rel = Path("images", *f.rel)
        dst = out_dir / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if move:
            os.replace(f.src, dst)
        else:
            shutil.copyfile(f.src, dst)  # contents only: the source is opened read-only
        rows.append({"path": rel.as_posix(), "name": Path(*f.rel).with_suffix("").as_posix(), "label": f.label})
    return rows
