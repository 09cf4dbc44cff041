"""Write docs/quality.md from the rows that bench/quality_table.py ran (its results.jsonl files).

    python bench/quality_doc.py bench/out/q*/results.jsonl --out docs/quality.md

Every row's grid is copied beside the page (docs/img/quality/<row>.png), so the page shows what each FID
means. The first row named `baseline` (the defaults of 2026-12-03, no override but the protocol's) is the reference
of the "× baseline" column; rows of another dataset are compared with the baseline of that dataset.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

PROTOCOL_KEYS = ("train.threads", "eval.curve_samples", "registry.enabled")  # how a row ran, not what it tried
# kept from the page as it is: the hand-written summary between these, and the `dvc exp` sweeps (bench/quality_exps.py)
SUMMARY = ("<!-- summary: written by hand -->", "<!-- /summary -->")
SWEEPS = "<!-- dvc-exp-sweep"


def kept(out: Path) -> tuple[str, str]:
    """The summary block and everything from the first sweep on, from the page as it is now."""
    text = out.read_text() if out.exists() else ""
    summary = ""
    if SUMMARY[0] in text and SUMMARY[1] in text:
        summary = SUMMARY[0] + text.split(SUMMARY[0], 1)[1].split(SUMMARY[1], 1)[0] + SUMMARY[1]
    return summary, (SWEEPS + text.split(SWEEPS, 1)[1]).rstrip() if SWEEPS in text else ""


def read_rows(paths: list[Path]) -> list[dict]:
    rows = []
    for p in paths:
        for line in p.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                row["folder"] = p.parent / row["name"]
                rows.append(row)
    return rows


def dataset_of(row: dict) -> str:
    src = row["overrides"].get("data.source", "openmoji")
    return "noto" if "noto" in str(src) else str(src)


def tried(row: dict) -> str:
    o = {
        k: v
        for k, v in row["overrides"].items()
        if k not in PROTOCOL_KEYS and k != "data.source" and not k.startswith("data.") and k != "validate.min_images"
    }
    return (
        ", ".join(f"`{k}={'+'.join(map(str, v)) if isinstance(v, list) else v}`" for k, v in o.items())
        or "the defaults of 2026-12-03"
    )


def write(rows: list[dict], out: Path) -> None:
    img_dir = out.parent / "img" / "quality"
    img_dir.mkdir(parents=True, exist_ok=True)
    base = {}
    for r in rows:
        if tried(r) == "the defaults of 2026-12-03":
            base.setdefault(dataset_of(r), r)
    summary, sweeps = kept(out)
    lines = [
        "# Quality: what was tried, and what each setting draws",
        "",
        *([summary, ""] if summary else []),
        "Below the summary, written by `python bench/quality_doc.py` from the rows `bench/quality_table.py` ran, and",
        "by `python bench/quality_exps.py` from `dvc exp` sweeps; do not edit those parts by hand.",
        "Protocol of every row: the default evaluate (2,048 generated images against all real images of the",
        "dataset's `data/processed`, TF-Inception FID, KID, k=3 precision/recall), train and evaluate on one thread",
        "(`train.threads=1`: two rows ran side by side on the 2 cores), no FID curve. No timings: rows that share",
        "the CPU give no valid seconds, so cost is compared by FLOPs (batch × steps at the same model). The figures",
        "do not depend on it: the defaults of 2026-12-03 give FID 106.365 here and in a one-process `make repro`.",
        "The noto rows train on Google's Noto Color Emoji (`python bench/noto_emoji.py`, Debian's",
        "fonts-noto-color-emoji, SIL OFL 1.1) as `data.source: folder:...`: another artist's style over the same",
        "subjects, so a recipe tuned to OpenMoji alone shows here.",
        "",
        "| dataset | tried | seed | FID | KID ×1000 | precision | recall | FID ÷ baseline | date, machine |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        b = base.get(dataset_of(r))
        ratio = f"{r['fid'] / b['fid']:.2f}" if b else "–"
        seed = r["overrides"].get("train.seed", 0)
        lines.append(
            f"| {dataset_of(r)} | {tried(r)} | {seed} | {r['fid']:.1f} | {1000 * r['kid_mean']:.1f} ± "
            f"{1000 * r['kid_std']:.1f} | {r['precision']:.3f} | {r['recall']:.3f} | {ratio} | "
            f"{r.get('date', '?')}, {r.get('machine', '?')} |"
        )
    lines += ["", "## The grids (8×8, EMA generator, `render.seed` 0)", ""]
    for i, r in enumerate(rows):
        grid = r["folder"] / "render" / "grid.png"
        if not grid.exists():
            continue
        name = f"{i:02d}-{dataset_of(r)}-seed{r['overrides'].get('train.seed', 0)}.png"
        shutil.copyfile(grid, img_dir / name)
        lines += [f"**{dataset_of(r)}, {tried(r)}** (FID {r['fid']:.1f})", "", f"![{tried(r)}](img/quality/{name})", ""]
    lines += [sweeps] if sweeps else []
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("docs/quality.md"))
    args = ap.parse_args()
    write(read_rows(args.results), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
