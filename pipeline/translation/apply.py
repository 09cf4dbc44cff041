"""`artgan translate PATH... --model MODEL --out DIR`: a user's own image files and folders through a translator.

Folders are searched recursively in sorted order (hidden files and folders skipped); each readable image, any size
or mode, is converted as preprocess converts it (to the translator's image_size) and written atomically as
DIR/<path relative to the folder given, suffix .png> (DIR/<file name>.png for a file given alone), so the folder
structure is kept. A file that is not an image (or is broken) gets one line naming it and why, and the rest are
still translated. Refused before any work: an --out that is a file, an --out inside an input folder (a second run
would translate the translations), two inputs that would be written to one output, and an output that would
replace an input file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pipeline.errors import ArtganError, first_line

CLI_HINT = "pass a translator (task translate; `artgan generate` draws from a generator)"


@dataclass
class Plan:
    """What to translate: (input file, output file) in order, and the lines of inputs that cannot be read."""

    jobs: list[tuple[Path, Path]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _walk(folder: Path) -> list[Path]:
    """Every file under `folder` (symlinks to files included), in sorted order; hidden names skipped."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / f for f in sorted(files) if not f.startswith(".")]
    return found


def plan(paths: list[Path], out: Path) -> Plan:
    """The (input, output) pairs of the given PATHs; one-line ArtganErrors for what must not run at all."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ArtganError(f"--out {out}: a file, not a folder; pass the folder to write the translated images into")
    out_real = out.resolve()
    result = Plan()
    sources: dict[Path, Path] = {}  # output -> the input it is made from
    for given in map(Path, paths):
        if given.is_dir():
            if out_real.is_relative_to(given.resolve()):
                raise ArtganError(
                    f"--out {out}: inside the input folder {given}; its outputs would be read as inputs next time, "
                    "so choose a folder outside it"
                )
            pairs = [(f, out / f.relative_to(given).with_suffix(".png")) for f in _walk(given)]
        elif given.exists():
            pairs = [(given, out / Path(given.name).with_suffix(".png"))]
        else:
            result.failed.append(f"error: {given}: no such file or folder")
            continue
        for src, dst in pairs:
            if dst in sources:
                raise ArtganError(
                    f"{sources[dst]} and {src} would both be written as {dst}; rename one, or translate them "
                    "into separate --out folders"
                )
            sources[dst] = src
            result.jobs.append((src, dst))
    inputs = {src.resolve(): src for src, _ in result.jobs}
    for src, dst in result.jobs:
        if dst.resolve() in inputs:
            raise ArtganError(
                f"--out {out}: {dst} is the input {inputs[dst.resolve()]}; artgan never writes over an input, so "
                "choose another --out folder"
            )
    return result


def run(todo: Plan, checkpoint: Path, ema: bool = True, err: Callable[[str], None] = print) -> dict:
    """Translate every planned input with the translator at `checkpoint`; each unreadable one is a line to `err`.
    Returns the figures (translated, failed, ...)."""
    import numpy as np
    from PIL import Image

    from pipeline.io import atomic_path
    from pipeline.translation.translator import BATCH, Translator

    translator = Translator.from_file(checkpoint, ema=ema, hint=CLI_HINT)
    for line in todo.failed:
        err(line)
    failed, done = len(todo.failed), 0
    batch: list[tuple[np.ndarray, Path]] = []

    def flush() -> None:
        nonlocal done
        if not batch:
            return
        for img, (_, dst) in zip(translator(np.stack([a for a, _ in batch])), batch):
            with atomic_path(dst) as tmp:
                Image.fromarray(img).save(tmp, format="PNG")
            done += 1
        batch.clear()

    for src, dst in todo.jobs:
        try:
            if not src.is_file():
                raise ValueError("not a regular file")
            batch.append((translator.convert(src), dst))
        except Exception as exc:  # not an image, truncated, a bomb, unreadable: its line, then the others
            err(f"error: {src}: not a readable image ({first_line(exc)})")
            failed += 1
            continue
        if len(batch) == BATCH:
            flush()
    flush()
    return {
        "translated": done,
        "failed": failed,
        "image_size": translator.image_size,
        "model": translator.model,
        "step": translator.step,
        "weights": translator.weights,
    }
