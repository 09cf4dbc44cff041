"""OpenMoji as a class-labelled folder: each glyph under the sub-folder of its Unicode emoji group.

Unicode's `emoji-test.txt` names every emoji's group (Smileys & Emotion, People & Body, Animals & Nature, Food &
Drink, Travel & Places, Activities, Objects, Symbols, Flags, Component). Debian ships it in `unicode-data`
(/usr/share/unicode/emoji/emoji-test.txt). OpenMoji's own extras (private-use code points) get the group
`extras`. A sequence the file does not list (newer than its Unicode version) takes the group of its first code
point where that has one, else `other`. Groups with fewer than `--min-per-group` glyphs join `other`.

The images are the PNGs of an `openmoji` fetch (`data/raw`), copied unchanged, so that artgan reads the same
pictures as `data.source: folder:<out>` with `data.label: label` (class-conditional training):

    python bench/openmoji_groups.py --raw data/raw --out bench/out/openmoji-groups
"""

from __future__ import annotations

import argparse
import collections
import csv
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pipeline.data.openmoji import text_of  # noqa: E402  (a glyph name's code points)

EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
PRIVATE_USE = range(0xE000, 0xF900)


def slug(group: str) -> str:
    return group.lower().replace(" & ", "-").replace(" ", "-")


def _key(cps: list[int]) -> tuple[int, ...]:
    return tuple(c for c in cps if c != 0xFE0F)  # emoji presentation selectors vary between lists


def read_groups(path: Path) -> dict[tuple[int, ...], str]:
    """Code-point sequence (without FE0F) -> group slug, from emoji-test.txt's `# group:` headers."""
    groups: dict[tuple[int, ...], str] = {}
    group = "other"
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = slug(line.split(":", 1)[1].strip())
        elif line and not line.startswith("#") and ";" in line:
            cps = [int(c, 16) for c in line.split(";", 1)[0].split()]
            groups.setdefault(_key(cps), group)
    return groups


def group_of(name: str, groups: dict[tuple[int, ...], str]) -> str:
    cps = [ord(c) for c in text_of(name)]
    if cps[0] in PRIVATE_USE:
        return "extras"
    return groups.get(_key(cps)) or groups.get(_key(cps[:1])) or "other"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--raw", type=Path, default=Path("data/raw"), help="an openmoji fetch: manifest.csv + images/")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--emoji-test", type=Path, default=EMOJI_TEST)
    ap.add_argument("--min-per-group", type=int, default=50)
    args = ap.parse_args()
    if not args.emoji_test.exists():
        sys.exit(f"error: {args.emoji_test} is missing; run `apt-get install unicode-data`")
    manifest = args.raw / "manifest.csv"
    if not manifest.exists():
        sys.exit(f"error: {manifest} is missing; run `artgan fetch` with data.source openmoji first")
    groups = read_groups(args.emoji_test)
    rows = list(csv.DictReader(manifest.open()))
    label = {r["name"]: group_of(r["name"], groups) for r in rows}
    counts = collections.Counter(label.values())
    small = {g for g, n in counts.items() if n < args.min_per_group}
    label = {k: ("other" if g in small else g) for k, g in label.items()}
    if args.out.exists():
        shutil.rmtree(args.out)
    for r in rows:
        dest = args.out / label[r["name"]] / Path(r["path"]).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.raw / r["path"], dest)
    print("| group | images |\n|---|---:|")
    for g, n in collections.Counter(label.values()).most_common():
        print(f"| {g} | {n:,} |")


if __name__ == "__main__":
    main()
