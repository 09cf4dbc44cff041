"""reports/index.html: one self-contained page over everything the pipeline reports.

Dataset summary (processed manifest), validation result, params, metrics, curves, sample grids, the
interpolation and the memorisation pairs. Every image is referenced by a relative path under
`reports_dir`, so the folder can be moved or zipped; CSS is inline, there is no script and no external
URL. Every input is optional: a missing one reads "not available", never a broken image. The page is the
Jinja2 template pipeline/templates/report.html.j2, autoescaped, so all text from params, metrics and data is
HTML-escaped; this module works out what it shows.

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
from dataclasses import dataclass
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
TEMPLATE = "report.html.j2"  # pipeline/templates/: the page, autoescaped
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


@dataclass(frozen=True)
class Verdict:
    """A table cell that reads pass or FAIL."""

    ok: bool


@dataclass(frozen=True)
class NA:
    """A table cell that reads "<what>: not available"."""

    what: str


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, default=str)
    return str(v)


def _figure(reports: Path, rel: str, caption: str, pixelated: bool = True) -> dict:
    """What the template's figure shows for `reports/rel`: "not available" when the file is missing; a pixel
    picture shows its upscaled copy (render/large/...) where there is one, linked to the 1:1 file, at its
    natural size."""
    if not (reports / rel).is_file():
        return {"missing": True, "caption": caption}
    if not pixelated:
        return {"src": quote(rel), "caption": caption}
    shown = large_name(rel) if (reports / large_name(rel)).is_file() else rel
    fig = {"src": quote(shown), "href": quote(rel), "caption": caption, "scale": ""}
    try:
        from PIL import Image

        with Image.open(reports / shown) as im:
            fig |= {"width": im.width, "height": im.height}
            if shown != rel:
                fig["scale"] = f" ({im.width // max(1, _width(reports / rel))}×)"
    except Exception:
        pass
    return fig


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


def dataset_section(cfg: Config) -> dict:
    rows: list[tuple] = [("source", cfg.data.source), ("image size", f"{cfg.data.image_size}×{cfg.data.image_size}")]
    out: dict = {"rows": rows, "missing": None, "classes": None, "label": cfg.data.label, "label_missing": None}
    path = Path(cfg.data.processed_dir) / MANIFEST
    try:
        import pandas as pd

        df = pd.read_parquet(path)
    except Exception:  # missing or unreadable: the rest of the report still renders
        return out | {"missing": f"manifest ({path.name})"}
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
    label = cfg.data.label
    if label and label in df.columns:
        counts = df[label].astype("string").fillna("(none)").value_counts().sort_index()
        out["classes"] = [(str(k), int(v)) for k, v in counts.items()]
    elif label:
        out["label_missing"] = f"label column {label!r}"
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


def validation_section(reports: Path) -> dict:
    data = _read_json(reports / VALIDATION)
    if data is None:
        return {"missing": f"validation result ({VALIDATION})"}
    results = data.get("result", data).get("results") or []
    ok, sentence = validation_sentence(data, _read_json(reports / VALIDATION_SUMMARY))
    checks = []
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
        checks.append((check_sentence(r), conf.get("type", "?"), kwargs, observed, Verdict(bool(r.get("success")))))
    return {
        "ok": ok,
        "sentence": sentence,
        "failed": [check_sentence(r) for r in results if not r.get("success")],
        "checks": checks,
        "file": VALIDATION,
        "raw": json.dumps(data, indent=2, default=str),
    }


def metrics_section(metrics: dict | None) -> dict:
    if metrics is None:
        return {"missing": f"metrics ({METRICS})"}
    m = dict(metrics)
    warnings = m.pop("warnings", None) or []
    rows = []
    for key, value in m.items():
        note = ""
        if key == "fid" and ("fid_n_fake" in m or "fid_n_real" in m):
            note = f"{m.get('fid_n_fake', '?')} generated vs {m.get('fid_n_real', '?')} real images"
        rows.append((key, value, note))
    warnings = [warnings] if isinstance(warnings, str) else [str(w) for w in warnings]
    n_fake = m.get("fid_n_fake")
    if isinstance(n_fake, int) and n_fake < UNBIASED_FID_SAMPLES:
        warnings.append(
            f"FID from {n_fake} < {UNBIASED_FID_SAMPLES} generated images is biased upwards; "
            "compare FIDs only at equal sample counts (KID is unbiased)."
        )
    return {"rows": rows, "warnings": warnings}


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
        return rows + [("input images", NA(f"input manifest ({path.name})"))]
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


def _target(name: str, ratio: object, goal: float, goal_text: str) -> dict:
    if not isinstance(ratio, (int, float)):
        return {"name": name, "goal": goal_text, "ratio": None}
    return {"name": name, "goal": goal_text, "ratio": ratio, "met": ratio <= goal}


def translation_section(cfg: Config, metrics: dict | None) -> dict:
    """Held-out triplets, the metrics beside the identity and mean-colour baselines, and the targets met or not."""
    reports = Path(cfg.reports_dir)
    m = metrics or {}
    out: dict = {
        "inputs": _inputs_rows(cfg),
        "holdout": None,
        "triplets": _figure(reports, f"{RENDER}/{TRIPLETS}", "held-out input | translated | target (fixed rows)"),
        "metrics_missing": None,
    }
    if "holdout_images" in m:
        out["holdout"] = (
            f"{m.get('model', '?')} translator, scored on the {_fmt(m['holdout_images'])} held-out inputs training "
            f"never saw ({_fmt(m.get('n_train', '?'))} training inputs)."
        )
    if metrics is None or "fid" not in m:
        return out | {"metrics_missing": f"translation metrics ({METRICS})"}
    rows = []
    for label, key in (("FID", "fid"), ("KID", "kid"), ("L1", "l1"), ("PSNR (dB)", "psnr"), ("SSIM", "ssim")):
        if any(f"{p}{key}" in m for _, p in BASELINES):
            rows.append((label, *(m.get(f"{p}{key}", "") for _, p in BASELINES)))
    if "cycle_l1" in m:
        rows.append(("cycle L1 (back to the input)", m["cycle_l1"], *[""] * (len(BASELINES) - 1)))
    floor = m["target_fid"] / max(m.get("identity_fid", 0), 1e-12) if "target_fid" in m else None
    return out | {
        "rows": rows,
        "head": ("metric", *(name for name, _ in BASELINES)),
        "fid_target": _target("FID", m.get("fid_ratio_identity"), FID_TARGET, "at most 1/3 of the identity's"),
        "floor": floor,
        "l1_target": _target("L1", m.get("l1_ratio_identity"), L1_TARGET, "at most 1/2 of the identity's")
        if "l1" in m
        else None,
    }


def _curves(reports: Path) -> dict:
    return {
        "loss_curves": _figure(reports, f"{RENDER}/loss_curves.png", "loss curves", pixelated=False),
        "fid_curve": _figure(reports, f"{RENDER}/fid_curve.png", "FID over training", pixelated=False),
    }


def _translate_page(cfg: Config, reports: Path, metrics: dict | None) -> tuple[str, dict]:
    model = (metrics or {}).get("model", cfg.translate.model)
    return f"artgan report: {model} translator, {cfg.translate.input} -> {cfg.data.source}", {
        "translation": translation_section(cfg, metrics),
        "progress": _figure(reports, f"{RENDER}/progress.png", "held-out inputs across training checkpoints"),
        "memorisation": _figure(reports, MEMORISATION, "held-out translations / nearest training style images"),
        "metrics_file": METRICS,
    }


def _generate_page(cfg: Config, reports: Path, metrics: dict | None) -> tuple[str, dict]:
    r = f"{RENDER}/"
    grids = sorted((reports / RENDER / "class_grids").glob("*.png"))
    m = metrics or {}
    copy = None
    if m.get("copy_rate") is not None:
        copy = {"rate": m["copy_rate"], "heldout": m.get("copy_rate_heldout_real"), "n_real": m.get("fid_n_real")}
    return f"artgan report: {cfg.model.arch} / {cfg.train.loss} on {cfg.data.source}", {
        "samples": [
            _figure(reports, f"{r}{REAL}", "real training images"),
            _figure(reports, f"{r}grid.png", "EMA generator, fixed seeds"),
            _figure(reports, f"{r}grid_raw.png", "raw generator, fixed seeds"),
        ],
        "class_grids": [_figure(reports, f"{r}class_grids/{p.name}", f"class grid {p.stem}") for p in grids],
        "classes_capped": MAX_CLASS_GRIDS if len(grids) >= MAX_CLASS_GRIDS else 0,
        "classes_missing": "per-class grids" + ("" if cfg.data.label else " (unconditional model)"),
        "progress": _figure(reports, f"{r}progress.png", "samples across training checkpoints"),
        "interp": _figure(reports, f"{r}interp.png", "latent interpolation strip"),
        "interp_gif": _figure(reports, f"{r}interp.gif", "latent interpolation (animated)"),
        "copy_rate": copy,
        "memorisation": _figure(reports, MEMORISATION, "closest generated / training pairs"),
    }


def _template():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        keep_trailing_newline=True,
    )
    env.filters["fmt"] = _fmt
    env.tests["verdict"] = lambda v: isinstance(v, Verdict)
    env.tests["na"] = lambda v: isinstance(v, NA)
    return env.get_template(TEMPLATE)


def build_html(cfg: Config) -> str:
    reports = Path(cfg.reports_dir)
    metrics = _read_json(reports / METRICS)
    page = _translate_page if cfg.task == "translate" else _generate_page
    title, parts = page(cfg, reports, metrics)
    parts |= {
        "dataset": dataset_section(cfg),
        "validation": validation_section(reports),
        "metrics": metrics_section(metrics),
        "params": [(k, v) for k, v in cfg.flat().items()],
        **_curves(reports),
    }
    return _template().render(title=title, css=CSS, task=cfg.task, p=parts)


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
