"""validate: check every image, quarantine the bad ones with a reason, then a great-expectations suite.

Every file of data/raw/manifest.parquet is checked on its own: read and decoded in full with Pillow
(Pillow's decompression-bomb limit becomes a quarantine reason, never a crash), then held against
`validate.*` (formats, modes, min/max side, aspect ratio); a byte-identical copy of an earlier image is a
duplicate. A bad file is quarantined with a short reason (`validate.on_bad_file: quarantine`, the
default) or stops the stage with one line per file (`fail`; duplicates are quarantined either way). No
file is ever deleted, moved or modified: the images stay in data/raw, untouched.

Outputs:
- data/validated/manifest.parquet (+ .csv), the contract with preprocess: every row of
  data/raw/manifest.parquet in the same order, plus `status` ("ok" | "quarantined"), `reason` ("" when
  ok) and `note` ("" or e.g. "animated GIF, 12 frames: the first frame is used"). Written only when
  validation succeeds (atomically), so a failed run never leaves it looking complete.
- reports/validation.json: {"summary": ..., "result": the great-expectations result}.
- reports/validation_summary.json: the counts (a DVC metric).
- reports/validation/: great-expectations Data Docs (index.html).

The suite is built from `validate.*` and runs over the whole manifest: per-image expectations on the
ok rows (a `status == "ok"` row condition), table-level ones (ok images >= min_images, duplicate
fraction, images per class) over all of it. Every expectation is critical: a failure exits non-zero
with one line per failure.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path

import pandas as pd

from pipeline import tracking
from pipeline.config import Config, ValidateCfg
from pipeline.data import manifest
from pipeline.errors import ArtganError
from pipeline.io import atomic_dir, check_replaceable, read_input, write_json
from pipeline.layout import MANIFEST, VALIDATION, VALIDATION_DOCS, VALIDATION_SUMMARY

DOCS_SIGNATURE = "index.html"  # the Data Docs site's front page
OK, QUARANTINED = "ok", "quarantined"


# ---- per-file checks -------------------------------------------------------------------------------


def _ratio(x: float) -> str:
    return f"{x:.3g}" if x < 10 else f"{x:.1f}"


def _int(x) -> int | None:
    return None if pd.isna(x) else int(x)


def check_file(path: Path, v: ValidateCfg) -> tuple[str, str, str]:
    """(kind, reason, note) for one image file; kind and reason are "" for a good file.

    The file is opened read-only and decoded in full (the first frame of an animation, which is what
    preprocess uses); nothing is written.
    """
    from PIL import Image, ImageFile, UnidentifiedImageError

    if not path.is_file():
        return "missing", "missing file", ""
    if path.stat().st_size == 0:
        return "zero_byte", "zero-byte file", ""
    limit = Image.MAX_IMAGE_PIXELS
    truncated_ok = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error here, whatever a caller set
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                with Image.open(path) as im:
                    size, mode, fmt = im.size, im.mode, im.format
                    frames = getattr(im, "n_frames", 1) if getattr(im, "is_animated", False) else 1
                    im.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                return "decompression_bomb", _bomb_reason(path, limit), ""
            except UnidentifiedImageError:
                return "not_an_image", "not an image (Pillow cannot identify it)", ""
            except OSError as exc:
                msg = str(exc) or exc.__class__.__name__
                if "truncated" in msg.lower():
                    return "truncated", f"truncated image ({msg})", ""
                return "undecodable", f"undecodable image ({msg})", ""
            except Exception as exc:  # SyntaxError ("broken PNG file"), ValueError, EOFError, ...
                return "undecodable", f"undecodable image ({exc.__class__.__name__}: {exc})", ""
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated_ok
    note = f"animated {fmt}, {frames} frames: the first frame is used" if frames > 1 else ""
    w, h = size
    if fmt not in v.formats:
        return "format", f"format {fmt} not in validate.formats", note
    if mode not in v.modes:
        return "mode", f"mode {mode} not in validate.modes", note
    if min(w, h) < v.min_side:
        return "too_small", f"smaller than validate.min_side ({w}×{h})", note
    if max(w, h) > v.max_side:
        return "too_large", f"larger than validate.max_side ({w}×{h})", note
    ratio = w / h
    lo, hi = v.aspect_ratio
    if not lo <= ratio <= hi:
        return "aspect_ratio", f"aspect ratio {_ratio(ratio)} outside validate.aspect_ratio [{lo}, {hi}]", note
    return "", "", note


def _bomb_reason(path: Path, limit: int | None) -> str:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # the header only, to count its pixels
    try:
        with Image.open(path) as im:
            pixels = im.width * im.height
    except Exception:
        return f"decompression bomb (more pixels than Pillow's limit {limit})"
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    return f"decompression bomb ({pixels} pixels > Pillow's limit {limit})"


def check_all(raw: Path, df: pd.DataFrame, v: ValidateCfg) -> pd.DataFrame:
    """The manifest plus status, reason, note (and `kind`, the check that failed, dropped before writing)."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    kinds, reasons, notes = [], [], []
    for path, w, h in zip(df["path"], df["width"], df["height"]):
        w, h = _int(w), _int(h)
        if limit and w is not None and h is not None and w * h > limit:  # never decoded
            kind, reason, note = (
                "decompression_bomb",
                f"decompression bomb ({w * h} pixels > Pillow's limit {limit})",
                "",
            )
        else:
            kind, reason, note = check_file(raw / str(path), v)
        kinds.append(kind)
        reasons.append(reason)
        notes.append(note)
    out = df.copy()
    out["kind"], out["reason"], out["note"] = kinds, reasons, notes
    first: dict[tuple[str, str], str] = {}
    domains = out["domain"].astype(str) if "domain" in out.columns else pd.Series(["style"] * len(out))
    for i, (sha, kind, path, domain) in enumerate(zip(out["sha256"], out["kind"], out["path"], domains)):
        if kind or domain == "input":  # task translate: equal inputs may pair with different targets (skin tones)
            continue
        if (domain, sha) in first:
            out.iloc[i, out.columns.get_loc("kind")] = "duplicate"
            out.iloc[i, out.columns.get_loc("reason")] = f"duplicate of {first[(domain, sha)]}"
        else:
            first[(domain, sha)] = str(path)
    out.insert(len(df.columns), "status", [OK if not k else QUARANTINED for k in out["kind"]])
    for col in ("status", "reason", "note"):
        out[col] = out[col].astype("string")
    return out


# ---- the great-expectations suite ------------------------------------------------------------------


def build_suite(cfg: Config):
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    v = cfg.validate_cfg
    ok = {"row_condition": Column("status") == OK}
    # what the per-file checks (size, aspect ratio, format, mode: each a quarantine reason) cannot see: the dataset
    # as a whole, i.e. the ok count, unique content, the duplicate fraction, labels and class sizes
    exps = [
        gxe.ExpectColumnValuesToNotBeNull(column="path"),
        gxe.ExpectColumnValuesToBeInSet(column="status", value_set=[OK, QUARANTINED]),
        gxe.ExpectColumnSumToBeBetween(column="ok", min_value=v.min_images),  # ok images, at least
        gxe.ExpectColumnValuesToBeUnique(column="sha256", row_condition=Column("ok") == 1),  # within the style
        gxe.ExpectColumnMeanToBeBetween(column="duplicate", min_value=0, max_value=v.max_duplicate_fraction),
    ]
    if cfg.task == "translate":  # the input domain needs as many ok images as the style
        exps.append(gxe.ExpectColumnSumToBeBetween(column="input_ok", min_value=v.min_images))
    if cfg.data.label:
        exps += [
            gxe.ExpectColumnValuesToNotBeNull(column=cfg.data.label, **ok),
            gxe.ExpectColumnValuesToBeBetween(column="class_size", min_value=v.min_images_per_class, **ok),
        ]
    suite = gx.ExpectationSuite(name="artgan_manifest")
    for exp in exps:
        suite.add_expectation(exp)
    return suite


def suite_frame(df: pd.DataFrame, label: str) -> pd.DataFrame:
    """The table the suite sees: the checked manifest plus helper columns (ok, input_ok, duplicate, class_size)."""
    t = df.drop(columns=["kind"]).copy()
    t["width"] = df["width"].astype("float64")
    t["height"] = df["height"].astype("float64")
    style = df["domain"].astype(str) != "input" if "domain" in df.columns else pd.Series(True, index=df.index)
    t["ok"] = ((df["status"] == OK) & style).astype("int64")  # task translate: the style's ok images
    t["input_ok"] = ((df["status"] == OK) & ~style).astype("int64")
    t["duplicate"] = (df["kind"] == "duplicate").astype("float64")
    for col in ("status", "reason", "note", "mode", "format", "sha256", "path"):
        t[col] = t[col].astype(object).where(t[col].notna(), None)
    if label and label in t.columns:
        okl = t.loc[t["ok"] == 1, label]
        sizes = t[label].map(okl.value_counts())
        # an unlabelled image has no class (null: the not-null expectation reports it, not this one)
        t["class_size"] = sizes.where(t[label].isna(), sizes.fillna(0))
    return t


def run_suite(cfg: Config, table: pd.DataFrame, docs: Path) -> dict:
    """Validate `table` with the suite in a throw-away file context; its Data Docs site is copied to `docs`."""
    import great_expectations as gx

    with tempfile.TemporaryDirectory(prefix="artgan-gx-") as tmp:
        context = gx.get_context(mode="file", project_root_dir=tmp)
        context.variables.progress_bars = {"globally": False}
        site = Path(tmp) / "site"
        for name in list(context.get_config().data_docs_sites or {}):
            context.delete_data_docs_site(name)
        context.add_data_docs_site(
            "artgan",
            {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(site)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
        batch = (
            context.data_sources.add_pandas("manifest")
            .add_dataframe_asset(name="images")
            .add_batch_definition_whole_dataframe("all")
        )
        suite = context.suites.add(build_suite(cfg))
        definition = context.validation_definitions.add(gx.ValidationDefinition(name="artgan", data=batch, suite=suite))
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name="artgan",
                validation_definitions=[definition],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
                result_format="SUMMARY",
            )
        )
        run = checkpoint.run(batch_parameters={"dataframe": table})
        result = next(iter(run.run_results.values())).to_json_dict()
        with atomic_dir(docs, "reports_dir", DOCS_SIGNATURE, stage="validate") as out:
            shutil.copytree(site, out, dirs_exist_ok=True)
    return result


def _failure_line(res: dict) -> str:
    cfg = res["expectation_config"]
    kwargs = {k: v for k, v in cfg["kwargs"].items() if k not in ("batch_id", "condition_parser")}
    cond = kwargs.get("row_condition")
    if isinstance(cond, dict) and {"column", "operator", "parameter"} <= set(cond):
        kwargs["row_condition"] = f"{cond['column'].get('name')} {cond['operator']} {cond['parameter']!r}"
    result = res.get("result", {})
    detail = ""
    if "unexpected_count" in result:
        sample = result.get("partial_unexpected_list", [])[:5]
        detail = f": {result['unexpected_count']} unexpected value(s), e.g. {sample}"
    elif "observed_value" in result:
        detail = f": observed {result['observed_value']}"
    return f"{cfg['type']} {kwargs}{detail}"


# ---- the stage -------------------------------------------------------------------------------------


def summarise(df: pd.DataFrame, result: dict | None, failures: list[str]) -> dict:
    quarantined = df["status"] == QUARANTINED
    stats = (result or {}).get("statistics", {})
    return {
        "success": bool(result and result["success"]) and not failures,
        "images": int(len(df)),
        "ok": int((~quarantined).sum()),
        "quarantined": int(quarantined.sum()),
        "by_reason": {str(k): int(n) for k, n in df.loc[quarantined, "kind"].value_counts().sort_index().items()},
        "animated": int(df["note"].str.startswith("animated").sum()),
        "evaluated_expectations": int(stats.get("evaluated_expectations", 0)),
        "successful_expectations": int(stats.get("successful_expectations", 0)),
        "failures": failures,
    }


def run(cfg: Config) -> dict:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    v = cfg.validate_cfg
    raw = Path(cfg.data.raw_dir)
    reports = Path(cfg.reports_dir)
    df = read_input(raw / MANIFEST, "fetch", manifest.read)
    out_dir = Path(cfg.data.validated_dir)
    check_replaceable(out_dir, "data.validated_dir", MANIFEST)
    check_replaceable(reports / VALIDATION_DOCS, "reports_dir", DOCS_SIGNATURE)
    shutil.rmtree(out_dir, ignore_errors=True)  # a stale one must not outlive a failed run

    checked = check_all(raw, df, v)
    bad = checked[(checked["status"] == QUARANTINED) & (checked["kind"] != "duplicate")]
    if v.on_bad_file == "fail" and len(bad):
        lines = [f"{raw / p}: {r}" for p, r in zip(bad["path"], bad["reason"])]
        summary = summarise(checked, None, lines)
        shutil.rmtree(
            reports / VALIDATION_DOCS, ignore_errors=True
        )  # no Data Docs of an earlier run beside this failure
        write_json(reports / VALIDATION, {"summary": summary, "result": {"success": False, "results": []}})
        write_json(reports / VALIDATION_SUMMARY, {k: x for k, x in summary.items() if k != "failures"})
        raise ArtganError(
            f"{raw / MANIFEST}: {len(bad)} bad file(s) and validate.on_bad_file is 'fail' (set it to 'quarantine' "
            "to set them aside; the files are left as they are):\n" + "\n".join(lines)
        )

    result = run_suite(cfg, suite_frame(checked, cfg.data.label), reports / VALIDATION_DOCS)
    failures = [_failure_line(r) + _detail(r, checked, cfg) for r in result["results"] if not r["success"]]
    summary = summarise(checked, result, failures)
    write_json(reports / VALIDATION, {"summary": summary, "result": result})
    write_json(reports / VALIDATION_SUMMARY, {k: x for k, x in summary.items() if k != "failures"})
    figures = {k: x for k, x in summary.items() if k not in ("failures", "by_reason")}
    tracking.log_data_stage(
        "validate",
        cfg.flat(),
        {**figures, "failures": len(failures)},
        [reports / VALIDATION, reports / VALIDATION_SUMMARY],
    )
    if failures:
        raise ArtganError(
            f"{raw / MANIFEST}: {len(failures)} critical expectation(s) failed "
            f"(details in {reports / VALIDATION}, Data Docs in {reports / VALIDATION_DOCS}/index.html):\n"
            + "\n".join(failures)
        )
    with atomic_dir(out_dir, "data.validated_dir", MANIFEST, stage="validate") as tmp:
        manifest.write(checked.drop(columns=["kind"]), tmp / MANIFEST)
    return summary


def _detail(res: dict, df: pd.DataFrame, cfg: Config) -> str:
    """What a failure line adds beyond the expectation: the classes that are too small, the quarantine count."""
    column = res["expectation_config"]["kwargs"].get("column")
    if column == "class_size" and cfg.data.label:
        counts = df.loc[df["status"] == OK, cfg.data.label].value_counts()
        small = {str(k): int(n) for k, n in counts.items() if n < cfg.validate_cfg.min_images_per_class}
        return f"; classes below validate.min_images_per_class: {small}"
    if column == cfg.data.label and cfg.data.label:
        missing = df.loc[(df["status"] == OK) & df[cfg.data.label].isna(), "path"].astype(str).tolist()
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        return f"; images without a {cfg.data.label!r}: {shown} (label them, or move them out of data.source)"
    if column == "input_ok":
        return " ok input image(s) (translate.input; see validate.min_images)"
    if column == "ok":
        return f" ok image(s) ({int((df['status'] == QUARANTINED).sum())} quarantined; see validate.min_images)"
    return ""
