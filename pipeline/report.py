"""reports/index.html: one self-contained page over everything the pipeline reports.

Dataset summary (processed manifest), validation result, params, metrics, curves, sample grids, the
interpolation and the memorisation pairs. Every image is referenced by a relative path under
`reports_dir`, so the folder can be moved or zipped; CSS is inline, there is no script and no external
URL. Every input is optional: a missing one reads "not available", never a broken image. All text is
HTML-escaped.

Small pictures (sample grids, real samples, per-class grids, the progress strip, the memorisation pairs) are
shown as nearest-neighbour upscaled copies under `render/large/` (an integer factor, so that each is at least
LARGE_MIN_WIDTH px across and the grids about PAIR_WIDTH); the real samples and the generated grids share one factor, so they sit side by
side at the same scale. Each links to its 1:1 file. The validation result is a sentence; the checks and the
raw result are one click away (<details>).

Task translate gets its own page (build_translate_html): the dataset of both domains, the held-out triplets, the
metrics beside the identity and mean-colour baselines with the targets (FID <= 1/3 and L1 <= 1/2 of the identity's)
met or not, the curves, the progress strip and the nearest training style images.
"""

from __future__ import annotations

import json
import math
from html import escape
from pathlib import Path
from urllib.parse import quote

from pipeline.config import Config
from pipeline.io import atomic_path
from pipeline.layout import (
    DUPLICATES,
    INDEX,
    INPUTS_MANIFEST,
    LARGE,
    MANIFEST,
    MEMORISATION,
    METRICS,
    REAL,
    RENDER,
    TRIPLETS,
    VALIDATION,
    VALIDATION_SUMMARY,
)
from pipeline.metrics.fid import UNBIASED_FID_SAMPLES

MAX_CLASS_GRIDS = 64  # render draws a grid for each of the first 64 classes

LARGE_MIN_WIDTH = 256  # px: the smallest width a picture is shown at (integer factors, nearest neighbour) ...
PAIR_WIDTH = 560  # ... and, as near as an integer factor gets, the grids' width: two side by side fit the page
ROW_WIDTH = 1100  # a picture alone in its row (progress strip, memorisation pairs) up to the page's width
GRIDS = ("grid.png", "grid_raw.png", REAL)  # one scale for these and the per-class grids

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1180px; padding: 0 1em; color: #222;
       background: #fff; }
h1 { border-bottom: 2px solid #345; } h2 { margin-top: 1.6em; color: #345; }
table { border-collapse: collapse; margin: .5em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #eef2f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: #176b2c; font-weight: bold; } .fail { color: #b00020; font-weight: bold; }
.na { color: #888; font-style: italic; } .warn { color: #8a5a00; }
figure { display: inline-block; margin: .5em 1em .5em 0; vertical-align: top; }
figcaption { font-size: .85em; color: #555; }
img { max-width: 100%; border: 1px solid #ddd; }
img.px { image-rendering: pixelated; min-width: 256px; height: auto; }
.row { display: flex; flex-wrap: wrap; gap: 0 1em; align-items: flex-start; }
.row figure { margin-right: 0; }
details { margin: .5em 0; } summary { cursor: pointer; color: #345; }
pre { background: #f6f8fa; padding: .6em; overflow-x: auto; font-size: .8em; max-height: 30em; }
"""


def _na(what: str) -> str:
    return f'<p class="na">{escape(what)}: not available</p>'


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, default=str)
    return str(v)


def _table(rows: list[tuple], head: tuple[str, ...]) -> str:
    def cell(v: object, tag: str = "td") -> str:
        if isinstance(v, tuple) and len(v) == 2 and v[0] == "html":  # pre-escaped markup
            return f"<{tag}>{v[1]}</{tag}>"
        num = ' class="num"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
        return f"<{tag}{num}>{escape(_fmt(v))}</{tag}>"

    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "\n".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{header}</tr></thead><tbody>\n{body}\n</tbody></table>"


def _verdict(ok: object) -> tuple[str, str]:
    return ("html", '<span class="pass">pass</span>' if ok else '<span class="fail">FAIL</span>')


def _img(reports: Path, rel: str, caption: str, pixelated: bool = True) -> str:
    """A figure for `reports/rel`, or "not available" when the file is missing. A pixel picture shows its
    upscaled copy (render/large/...) where there is one, linked to the 1:1 file, at its natural size."""
    if not (reports / rel).is_file():
        return _na(caption)
    if not pixelated:
        return (
            f'<figure><img src="{escape(quote(rel))}" alt="{escape(caption)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>"
        )
    shown = large_name(rel) if (reports / large_name(rel)).is_file() else rel
    size = ""
    try:
        from PIL import Image

        with Image.open(reports / shown) as im:
            size = f' width="{im.width}" height="{im.height}"'
            scale = f" ({im.width // max(1, _width(reports / rel))}×)" if shown != rel else ""
    except Exception:
        scale = ""
    return (
        f'<figure><a href="{escape(quote(rel))}"><img class="px" src="{escape(quote(shown))}"{size} '
        f'alt="{escape(caption)}"></a><figcaption>{escape(caption + scale)}</figcaption></figure>'
    )


# ----------------------------------------------------------------------------- upscaled copies (render/large)
def large_name(rel: str) -> str:
    """render/grid.png -> render/large/grid.png; memorisation.png -> render/large/memorisation.png."""
    rel = rel.removeprefix(f"{RENDER}/")
    return f"{RENDER}/{LARGE}/{rel}"


def _width(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as im:
        return im.width


def _factor(width: int, target: int) -> int:
    """The integer factor that brings `width` up to `target` without passing it, and to LARGE_MIN_WIDTH at least."""
    width = max(1, width)
    return max(1, math.ceil(LARGE_MIN_WIDTH / width), target // width)


def upscale_pictures(render_dir: Path, memorisation: Path | None = None, overwrite: bool = True) -> list[str]:
    """Nearest-neighbour copies of the small pictures in `render_dir` (and `memorisation`) under
    `render_dir/large/`, each an integer factor larger and at least LARGE_MIN_WIDTH px across; the grids
    (generated, raw, real, per class) all take the factor of the widest of them, so they compare at one scale.
    A picture already that wide gets no copy. Returns the copies' paths relative to `render_dir`."""
    from PIL import Image

    render_dir = Path(render_dir)
    grids = [render_dir / n for n in GRIDS] + sorted((render_dir / "class_grids").glob("*.png"))
    grids = [g for g in grids if g.is_file()]
    jobs: list[tuple[Path, str, int]] = []
    if grids:
        k = _factor(max(_width(g) for g in grids), PAIR_WIDTH)
        jobs += [(g, g.relative_to(render_dir).as_posix(), k) for g in grids]
    if (render_dir / "progress.png").is_file():
        jobs.append(
            (render_dir / "progress.png", "progress.png", _factor(_width(render_dir / "progress.png"), ROW_WIDTH))
        )
    if memorisation is not None and Path(memorisation).is_file():
        jobs.append((Path(memorisation), MEMORISATION, _factor(_width(Path(memorisation)), ROW_WIDTH)))
    written = []
    for src, rel, k in jobs:
        dst = render_dir / LARGE / rel
        if k == 1 or (dst.is_file() and not overwrite):
            continue
        with Image.open(src) as im:
            big = im.convert("RGB").resize((im.width * k, im.height * k), Image.Resampling.NEAREST)
        dst.parent.mkdir(parents=True, exist_ok=True)
        big.save(dst)
        written.append(f"{LARGE}/{rel}")
    return written


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def dataset_section(cfg: Config) -> str:
    rows: list[tuple] = [("source", cfg.data.source), ("image size", f"{cfg.data.image_size}×{cfg.data.image_size}")]
    path = Path(cfg.data.processed_dir) / MANIFEST
    try:
        import pandas as pd

        df = pd.read_parquet(path)
    except Exception:  # missing or unreadable: the rest of the report still renders
        return _table(rows, ("", "")) + _na(f"manifest ({path.name})")
    rows.insert(0, ("images (after validation and de-duplication)", int(len(df))))
    reports = Path(cfg.reports_dir)
    summary = _read_json(reports / VALIDATION_SUMMARY)
    if summary is not None:
        reasons = ", ".join(f"{k}: {v}" for k, v in (summary.get("by_reason") or {}).items())
        rows.insert(
            1,
            (
                "fetched / ok / quarantined",
                f"{summary.get('images', '?')} / {summary.get('ok', '?')} / "
                f"{summary.get('quarantined', '?')}" + (f" ({reasons})" if reasons else ""),
            ),
        )
    if (reports / DUPLICATES).is_file():
        import pandas as pd

        dups = pd.read_csv(reports / DUPLICATES)
        kinds = dups["kind"].value_counts().to_dict() if "kind" in dups else {}
        rows.insert(
            2,
            (
                "duplicates removed",
                f"{len(dups)} (" + ", ".join(f"{k}: {v}" for k, v in kinds.items()) + f"; listed in {DUPLICATES})",
            ),
        )
    out = _table(rows, ("", ""))
    label = cfg.data.label
    if label:
        if label in df.columns:
            counts = df[label].astype("string").fillna("(none)").value_counts().sort_index()
            out += f"<h3>Images per class ({escape(label)})</h3>"
            out += _table([(str(k), int(v)) for k, v in counts.items()], ("class", "images"))
        else:
            out += _na(f"label column {label!r}")
    return out


def _set(values: object, limit: int = 8) -> str:
    values = list(values) if isinstance(values, (list, tuple)) else [values]
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f", … ({len(values)} in all)" if len(values) > limit else "")


def _num(v: object) -> str:
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else _fmt(v)


def check_sentence(r: dict) -> str:
    """One great-expectations result in words: "at least 1,000 ok images (4,084)"."""
    conf = r.get("expectation_config") or {}
    kind = str(conf.get("type", "?"))
    kw = conf.get("kwargs") or {}
    col = kw.get("column", "")
    lo, hi = kw.get("min_value"), kw.get("max_value")
    res = r.get("result") or {}
    if kind == "expect_column_sum_to_be_between" and col == "ok":
        text = f"at least {_num(lo)} ok images"
    elif kind == "expect_table_row_count_to_be_between":
        text = f"at least {_num(lo)} rows" if hi is None else f"{_num(lo)} to {_num(hi)} rows"
    elif kind == "expect_column_values_to_not_be_null":
        text = f"every image has a {col}"
    elif kind == "expect_column_values_to_be_in_set":
        text = f"every {col} is one of {_set(kw.get('value_set', []))}"
    elif kind == "expect_column_values_to_be_unique":
        text = f"no two images share a {col}"
    elif kind in (
        "expect_column_values_to_be_between",
        "expect_column_mean_to_be_between",
        "expect_column_sum_to_be_between",
    ):
        what = {
            "expect_column_mean_to_be_between": f"the mean {col}",
            "expect_column_sum_to_be_between": f"the sum of {col}",
        }.get(kind, f"every {col}")
        if lo is not None and hi is not None:
            text = f"{what} between {_num(lo)} and {_num(hi)}"
        elif hi is not None:
            text = f"{what} at most {_num(hi)}"
        else:
            text = f"{what} at least {_num(lo)}"
    else:
        text = kind.removeprefix("expect_").replace("_", " ") + (f" ({col})" if col else "")
    if "observed_value" in res:
        text += f" (observed {_num(res['observed_value'])})"
    elif res.get("unexpected_count"):
        text += f" ({_num(res['unexpected_count'])} unexpected)"
    return text


def validation_sentence(data: dict, summary: dict | None) -> tuple[bool, str]:
    """(passed, "4,334 images fetched, 0 quarantined; all 4 checks passed.") from validation.json (and
    validation_summary.json, whose counts it prefers)."""
    result = data.get("result", data)
    results = result.get("results") or []
    ok = bool(result.get("success", all(r.get("success") for r in results)))
    counts = {**(data.get("summary") or {}), **(summary or {})}
    parts = []
    if "images" in counts:
        parts.append(f"{_num(counts['images'])} images fetched")
    if "quarantined" in counts:
        reasons = ", ".join(f"{k}: {_num(v)}" for k, v in (counts.get("by_reason") or {}).items())
        parts.append(f"{_num(counts['quarantined'])} quarantined" + (f" ({reasons})" if reasons else ""))
    passed = sum(bool(r.get("success")) for r in results)
    n = len(results)
    if ok and n:
        checks = f"all {n} checks passed" if n > 1 else "the 1 check passed"
    elif ok:
        checks = "passed"
    else:
        checks = f"{passed} of {n} checks passed"
    return ok, (", ".join(parts) + "; " if parts else "") + checks + "."


def validation_section(reports: Path) -> str:
    data = _read_json(reports / VALIDATION)
    if data is None:
        return _na(f"validation result ({VALIDATION})")
    result = data.get("result", data)
    results = result.get("results") or []
    ok, sentence = validation_sentence(data, _read_json(reports / VALIDATION_SUMMARY))
    verdict = f'<span class="{"pass" if ok else "fail"}">{"Validation passed" if ok else "Validation FAILED"}</span>'
    out = f"<p>{verdict}: {escape(sentence)}</p>"
    failed = [r for r in results if not r.get("success")]
    if failed:
        out += (
            '<p>Failed:</p><ul class="fail-list">'
            + "".join(f"<li>{escape(check_sentence(r))}</li>" for r in failed)
            + "</ul>"
        )
    rows = []
    for r in results:
        conf = r.get("expectation_config") or {}
        kwargs = {k: v for k, v in (conf.get("kwargs") or {}).items() if k != "batch_id"}
        res = r.get("result") or {}
        if "observed_value" in res:
            observed = res["observed_value"]
        elif "unexpected_count" in res:
            observed = f"{res['unexpected_count']} unexpected"
        else:
            observed = ""
        rows.append((check_sentence(r), conf.get("type", "?"), kwargs, observed, _verdict(r.get("success"))))
    if rows:
        out += (
            f"<details><summary>The {len(rows)} checks</summary>"
            + _table(rows, ("check", "expectation", "arguments", "observed", "result"))
            + "</details>"
        )
    raw = json.dumps(data, indent=2, default=str)
    out += (
        f"<details><summary>Raw result ({VALIDATION}, great-expectations)</summary><pre>{escape(raw)}</pre></details>"
    )
    return out


def metrics_section(metrics: dict | None) -> str:
    if metrics is None:
        return _na(f"metrics ({METRICS})")
    m = dict(metrics)
    warnings = m.pop("warnings", None) or []
    rows = []
    for key, value in m.items():
        note = ""
        if key == "fid" and ("fid_n_fake" in m or "fid_n_real" in m):
            note = f"{m.get('fid_n_fake', '?')} generated vs {m.get('fid_n_real', '?')} real images"
        rows.append((key, value, note))
    out = _table(rows, ("metric", "value", "note"))
    if isinstance(warnings, str):
        warnings = [warnings]
    n_fake = m.get("fid_n_fake")
    if isinstance(n_fake, int) and n_fake < UNBIASED_FID_SAMPLES:
        warnings = [
            *warnings,
            f"FID from {n_fake} < {UNBIASED_FID_SAMPLES} generated images is biased upwards; "
            "compare FIDs only at equal sample counts (KID is unbiased).",
        ]
    if warnings:
        out += '<ul class="warn">' + "".join(f"<li>{escape(str(w))}</li>" for w in warnings) + "</ul>"
    return out


FID_TARGET, L1_TARGET = 1 / 3, 1 / 2  # task translate: at most these fractions of the identity baseline's FID and L1
BASELINES = (
    ("translated", ""),
    ("identity (input unchanged)", "identity_"),
    ("mean colour", "mean_colour_"),
    ("target (a perfect translator)", "target_"),
)


def _inputs_rows(cfg: Config) -> list[tuple]:
    """The input domain in words: its source and its train / held-out counts (inputs.parquet)."""
    rows: list[tuple] = [
        ("input domain (translate.input)", cfg.translate.input),
        ("style (data.source)", cfg.data.source),
    ]
    path = Path(cfg.data.processed_dir) / INPUTS_MANIFEST
    try:
        import pandas as pd

        df = pd.read_parquet(path, columns=["split", "target"])
    except Exception:  # missing or unreadable: the rest of the report still renders
        return rows + [("input images", ("html", _na(f"input manifest ({path.name})")))]
    split = df["split"].astype(str)
    paired = bool(len(df)) and bool((df["target"] >= 0).all())
    rows.append(
        (
            "input images (train / held out)",
            f"{len(df)} ({int((split == 'train').sum())} / {int((split == 'holdout').sum())}), "
            + ("paired with the style images by name" if paired else "unpaired"),
        )
    )
    return rows


def _target(name: str, ratio: object, goal: float, goal_text: str) -> str:
    if not isinstance(ratio, (int, float)):
        return f'<li>{escape(name)} {escape(goal_text)}: <span class="na">not available</span></li>'
    met = ratio <= goal
    verdict = '<span class="pass">met</span>' if met else '<span class="fail">not met</span>'
    return f"<li>{escape(name)} {escape(goal_text)}: {escape(_fmt(ratio))} of it, {verdict}</li>"


def translation_section(cfg: Config, metrics: dict | None) -> str:
    """Held-out triplets, the metrics beside the identity and mean-colour baselines, and the targets met or not."""
    reports = Path(cfg.reports_dir)
    m = metrics or {}
    out = _table(_inputs_rows(cfg), ("", ""))
    if "holdout_images" in m:
        out += (
            f"<p>{escape(str(m.get('model', '?')))} translator, scored on the {escape(_fmt(m['holdout_images']))} "
            f"held-out inputs training never saw ({escape(_fmt(m.get('n_train', '?')))} training inputs).</p>"
        )
    out += _img(reports, f"{RENDER}/{TRIPLETS}", "held-out input | translated | target (fixed rows)")
    if metrics is None or "fid" not in m:
        return out + _na(f"translation metrics ({METRICS})")
    rows = []
    for label, key in (("FID", "fid"), ("KID", "kid"), ("L1", "l1"), ("PSNR (dB)", "psnr"), ("SSIM", "ssim")):
        if any(f"{p}{key}" in m for _, p in BASELINES):
            rows.append((label, *(m.get(f"{p}{key}", "") for _, p in BASELINES)))
    if "cycle_l1" in m:
        rows.append(("cycle L1 (back to the input)", m["cycle_l1"], *[""] * (len(BASELINES) - 1)))
    out += _table(rows, ("metric", *(name for name, _ in BASELINES)))
    out += "<p>Targets:</p><ul>"
    out += _target("FID", m.get("fid_ratio_identity"), FID_TARGET, "at most 1/3 of the identity's")
    if "target_fid" in m:
        floor = m["target_fid"] / max(m.get("identity_fid", 0), 1e-12)
        out += (
            f"<li>a perfect translator (the held-out targets themselves) scores {escape(_fmt(floor))} of the "
            "identity's FID at this number of held-out images</li>"
        )
    if "l1" in m:
        out += _target("L1", m.get("l1_ratio_identity"), L1_TARGET, "at most 1/2 of the identity's")
    else:
        out += "<li>L1: no targets to compare with (unpaired data)</li>"
    return out + "</ul>"


def build_translate_html(cfg: Config) -> str:
    reports = Path(cfg.reports_dir)
    metrics = _read_json(reports / METRICS)
    r = f"{RENDER}/"
    sections = [
        ("Dataset", dataset_section(cfg)),
        ("Validation", validation_section(reports)),
        ("Translation", translation_section(cfg, metrics)),
        (
            "Training curves",
            _img(reports, f"{r}loss_curves.png", "loss curves", pixelated=False)
            + _img(reports, f"{r}fid_curve.png", "FID over training", pixelated=False),
        ),
        ("Training progress", _img(reports, f"{r}progress.png", "held-out inputs across training checkpoints")),
        (
            "Memorisation",
            "<p>Held-out translations (top) above their nearest training style image in FID feature space; the "
            "ratio is the distance to it over its distance to its own nearest training image (&lt; 1: closer than "
            "any two training images).</p>"
            + _img(reports, MEMORISATION, "held-out translations / nearest training style images"),
        ),
        ("All metrics", f"<details><summary>{METRICS}</summary>{metrics_section(metrics)}</details>"),
        ("Params", _table([(k, v) for k, v in cfg.flat().items()], ("param", "value"))),
    ]
    body = "\n".join(f"<section><h2>{escape(t)}</h2>\n{html}\n</section>" for t, html in sections)
    model = (metrics or {}).get("model", cfg.translate.model)
    title = f"artgan report: {model} translator, {cfg.translate.input} -> {cfg.data.source}"
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{escape(title)}</title>\n'
        f"<style>{CSS}</style>\n</head>\n<body>\n<h1>{escape(title)}</h1>\n{body}\n</body>\n</html>\n"
    )


def build_html(cfg: Config) -> str:
    if cfg.task == "translate":
        return build_translate_html(cfg)
    reports = Path(cfg.reports_dir)
    metrics = _read_json(reports / METRICS)
    r = f"{RENDER}/"
    class_grids = sorted((reports / RENDER / "class_grids").glob("*.png"))
    classes = "".join(_img(reports, f"{r}class_grids/{p.name}", f"class grid {p.stem}") for p in class_grids)
    classes = f'<div class="row">{classes}</div>' if classes else ""
    if not classes:
        classes = _na("per-class grids" + ("" if cfg.data.label else " (unconditional model)"))
    elif len(class_grids) >= MAX_CLASS_GRIDS:
        classes = f"<p>The first {MAX_CLASS_GRIDS} classes.</p>" + classes
    copy_rate = (metrics or {}).get("copy_rate")
    heldout = (metrics or {}).get("copy_rate_heldout_real")
    n_real = (metrics or {}).get("fid_n_real")
    baseline = (
        f" (real images held out of the training features: {escape(_fmt(heldout))})" if heldout is not None else ""
    )
    searched = f" of the {escape(_fmt(n_real))} in the FID statistics" if n_real is not None else ""
    copy_line = (
        f"<p>Copy rate: <b>{escape(_fmt(copy_rate))}</b>{baseline}: the fraction of samples closer to "
        f"their nearest training image{searched} than any other training image is to it.</p>"
        if copy_rate is not None
        else _na("copy rate")
    )
    params = _table([(k, v) for k, v in cfg.flat().items()], ("param", "value"))
    sections = [
        ("Dataset", dataset_section(cfg)),
        ("Validation", validation_section(reports)),
        ("Metrics", metrics_section(metrics)),
        (
            "Training curves",
            _img(reports, f"{r}loss_curves.png", "loss curves", pixelated=False)
            + _img(reports, f"{r}fid_curve.png", "FID over training", pixelated=False),
        ),
        (
            "Samples",
            '<div class="row">'
            + _img(reports, f"{r}{REAL}", "real training images")
            + _img(reports, f"{r}grid.png", "EMA generator, fixed seeds")
            + _img(reports, f"{r}grid_raw.png", "raw generator, fixed seeds")
            + "</div>",
        ),
        ("Per-class samples", classes),
        ("Training progress", _img(reports, f"{r}progress.png", "samples across training checkpoints")),
        (
            "Latent interpolation",
            _img(reports, f"{r}interp.png", "latent interpolation strip")
            + _img(reports, f"{r}interp.gif", "latent interpolation (animated)"),
        ),
        ("Memorisation", copy_line + _img(reports, MEMORISATION, "closest generated / training pairs")),
        ("Params", params),
    ]
    body = "\n".join(f"<section><h2>{escape(t)}</h2>\n{html}\n</section>" for t, html in sections)
    title = f"artgan report: {cfg.model.arch} / {cfg.train.loss} on {cfg.data.source}"
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{escape(title)}</title>\n'
        f"<style>{CSS}</style>\n</head>\n<body>\n<h1>{escape(title)}</h1>\n{body}\n</body>\n</html>\n"
    )


def write_report(cfg: Config) -> Path:
    """Write `<reports_dir>/index.html` atomically and return its path. Upscaled copies that are missing under
    render/large/ (render writes them; a report written on its own makes them) are made first."""
    reports = Path(cfg.reports_dir)
    if (reports / RENDER).is_dir():
        upscale_pictures(reports / RENDER, reports / MEMORISATION, overwrite=False)
    out = reports / INDEX
    with atomic_path(out) as tmp:
        tmp.write_text(build_html(cfg), encoding="utf-8")
    return out
