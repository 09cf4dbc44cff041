"""reports/index.html: one self-contained page over everything the pipeline reports.

Dataset summary (processed manifest), validation result, params, metrics, curves, sample grids, the
interpolation and the memorisation pairs. Every image is referenced by a relative path under
`reports_dir`, so the folder can be moved or zipped; CSS is inline, there is no script and no external
URL. Every input is optional: a missing one reads "not available", never a broken image. All text is
HTML-escaped.
"""
from __future__ import annotations

import json
from html import escape
from pathlib import Path
from urllib.parse import quote

from pipeline.config import Config
from pipeline.io import atomic_path
from pipeline.metrics.fid import UNBIASED_FID_SAMPLES

MAX_CLASS_GRIDS = 64  # render draws a grid for each of the first 64 classes

INDEX = "index.html"
MANIFEST = "manifest.parquet"
VALIDATION = "validation.json"
VALIDATION_SUMMARY = "validation_summary.json"
DUPLICATES = "duplicates.csv"
METRICS = "metrics.json"
RENDER = "render"
MEMORISATION = "memorisation.png"

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; background: #fff; }
h1 { border-bottom: 2px solid #345; } h2 { margin-top: 1.6em; color: #345; }
table { border-collapse: collapse; margin: .5em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #eef2f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: #176b2c; font-weight: bold; } .fail { color: #b00020; font-weight: bold; }
.na { color: #888; font-style: italic; } .warn { color: #8a5a00; }
figure { display: inline-block; margin: .5em 1em .5em 0; vertical-align: top; }
figcaption { font-size: .85em; color: #555; }
img { max-width: 100%; border: 1px solid #ddd; }
img.px { image-rendering: pixelated; min-width: 256px; }
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
    """A figure for `reports/rel`, or "not available" when the file is missing."""
    if not (reports / rel).is_file():
        return _na(caption)
    cls = ' class="px"' if pixelated else ""
    return (f'<figure><img{cls} src="{escape(quote(rel))}" alt="{escape(caption)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


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
        rows.insert(1, ("fetched / ok / quarantined", f"{summary.get('images', '?')} / {summary.get('ok', '?')} / "
                                                        f"{summary.get('quarantined', '?')}" + (f" ({reasons})" if reasons else "")))
    if (reports / DUPLICATES).is_file():
        import pandas as pd

        dups = pd.read_csv(reports / DUPLICATES)
        kinds = dups["kind"].value_counts().to_dict() if "kind" in dups else {}
        rows.insert(2, ("duplicates removed", f"{len(dups)} (" + ", ".join(f"{k}: {v}" for k, v in kinds.items())
                        + f"; listed in {DUPLICATES})"))
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


def validation_section(reports: Path) -> str:
    data = _read_json(reports / VALIDATION)
    if data is None:
        return _na(f"validation result ({VALIDATION})")
    result = data.get("result", data)
    results = result.get("results") or []
    ok = bool(result.get("success", all(r.get("success") for r in results)))
    passed = sum(bool(r.get("success")) for r in results)
    verdict = f'<span class="{"pass" if ok else "fail"}">{"passed" if ok else "FAILED"}</span>'
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
        rows.append((conf.get("type", "?"), kwargs, observed, _verdict(r.get("success"))))
    return (f"<p>Validation {verdict}: {passed} of {len(results)} expectations met.</p>"
            + _table(rows, ("expectation", "arguments", "observed", "result")))


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
        warnings = [*warnings, f"FID from {n_fake} < {UNBIASED_FID_SAMPLES} generated images is biased upwards; "
                               "compare FIDs only at equal sample counts (KID is unbiased)."]
    if warnings:
        out += '<ul class="warn">' + "".join(f"<li>{escape(str(w))}</li>" for w in warnings) + "</ul>"
    return out


def build_html(cfg: Config) -> str:
    reports = Path(cfg.reports_dir)
    metrics = _read_json(reports / METRICS)
    r = f"{RENDER}/"
    class_grids = sorted((reports / RENDER / "class_grids").glob("*.png"))
    classes = "".join(_img(reports, f"{r}class_grids/{p.name}", f"class grid {p.stem}") for p in class_grids)
    if not classes:
        classes = _na("per-class grids" + ("" if cfg.data.label else " (unconditional model)"))
    elif len(class_grids) >= MAX_CLASS_GRIDS:
        classes = f"<p>The first {MAX_CLASS_GRIDS} classes.</p>" + classes
    copy_rate = (metrics or {}).get("copy_rate")
    heldout = (metrics or {}).get("copy_rate_heldout_real")
    n_real = (metrics or {}).get("fid_n_real")
    baseline = f" (real images held out of the training features: {escape(_fmt(heldout))})" if heldout is not None else ""
    searched = f" of the {escape(_fmt(n_real))} in the FID statistics" if n_real is not None else ""
    copy_line = (f"<p>Copy rate: <b>{escape(_fmt(copy_rate))}</b>{baseline}: the fraction of samples closer to "
                 f"their nearest training image{searched} than any other training image is to it.</p>"
                 if copy_rate is not None else _na("copy rate"))
    params = _table([(k, v) for k, v in cfg.flat().items()], ("param", "value"))
    sections = [
        ("Dataset", dataset_section(cfg)),
        ("Validation", validation_section(reports)),
        ("Metrics", metrics_section(metrics)),
        ("Training curves", _img(reports, f"{r}loss_curves.png", "loss curves", pixelated=False)
         + _img(reports, f"{r}fid_curve.png", "FID over training", pixelated=False)),
        ("Samples", _img(reports, f"{r}grid.png", "EMA generator, fixed seeds")
         + _img(reports, f"{r}grid_raw.png", "raw generator, fixed seeds")),
        ("Per-class samples", classes),
        ("Training progress", _img(reports, f"{r}progress.png", "samples across training checkpoints")),
        ("Latent interpolation", _img(reports, f"{r}interp.png", "latent interpolation strip")
         + _img(reports, f"{r}interp.gif", "latent interpolation (animated)")),
        ("Memorisation", copy_line + _img(reports, MEMORISATION, "closest generated / training pairs")),
        ("Params", params),
    ]
    body = "\n".join(f"<section><h2>{escape(t)}</h2>\n{html}\n</section>" for t, html in sections)
    title = f"artgan report: {cfg.model.arch} / {cfg.train.loss} on {cfg.data.source}"
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{escape(title)}</title>\n'
            f"<style>{CSS}</style>\n</head>\n<body>\n<h1>{escape(title)}</h1>\n{body}\n</body>\n</html>\n")


def write_report(cfg: Config) -> Path:
    """Write `<reports_dir>/index.html` atomically and return its path."""
    out = Path(cfg.reports_dir) / INDEX
    with atomic_path(out) as tmp:
        tmp.write_text(build_html(cfg), encoding="utf-8")
    return out
