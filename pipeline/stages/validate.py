"""validate: a great-expectations suite over the manifest; the result goes to reports/validation.json.

Every image is decoded in full first (a `decodable` column), so a truncated file fails here, not in
training. Every expectation is critical: a failure exits non-zero with one line per failure.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from pipeline.config import Config
from pipeline.data import manifest
from pipeline.errors import ArtganError
from pipeline import tracking
from pipeline.io import require, write_json
from pipeline.stages.fetch import MANIFEST

REPORT = "validation.json"


def decodable(root: Path, paths: pd.Series) -> pd.Series:
    from PIL import Image

    def ok(rel: str) -> bool:
        try:
            with Image.open(root / rel) as im:
                im.load()
            return True
        except Exception:
            return False

    return paths.map(ok)


def build_suite(cfg: Config):
    import great_expectations as gx
    import great_expectations.expectations as gxe

    v = cfg.validate_cfg
    suite = gx.ExpectationSuite(name="artgan_manifest")
    for exp in [
        gxe.ExpectTableRowCountToBeBetween(min_value=v.min_images),
        gxe.ExpectColumnValuesToBeInSet(column="decodable", value_set=[True]),
        gxe.ExpectColumnValuesToBeBetween(column="width", min_value=v.min_side, max_value=v.max_side),
        gxe.ExpectColumnValuesToBeBetween(column="height", min_value=v.min_side, max_value=v.max_side),
        gxe.ExpectColumnValuesToBeInSet(column="mode", value_set=list(v.modes)),
        gxe.ExpectColumnValuesToBeUnique(column="sha256"),
        gxe.ExpectColumnValuesToNotBeNull(column="path"),
    ]:
        suite.add_expectation(exp)
    return suite


def _failure_line(res: dict) -> str:
    cfg = res["expectation_config"]
    kwargs = {k: v for k, v in cfg["kwargs"].items() if k not in ("batch_id",)}
    result = res.get("result", {})
    detail = ""
    if "unexpected_count" in result:
        sample = result.get("partial_unexpected_list", [])[:5]
        detail = f": {result['unexpected_count']} unexpected value(s), e.g. {sample}"
    elif "observed_value" in result:
        detail = f": observed {result['observed_value']}"
    return f"{cfg['type']} {kwargs}{detail}"


def run(cfg: Config) -> dict:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx

    raw = Path(cfg.data.raw_dir)
    df = manifest.read(require(raw / MANIFEST, "fetch"))
    df = df.assign(decodable=decodable(raw, df["path"]))

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    asset = context.data_sources.add_pandas("manifest").add_dataframe_asset(name="images")
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": df})
    result = batch.validate(build_suite(cfg)).to_json_dict()

    broken = [str(raw / p) for p in df.loc[~df["decodable"], "path"].head(5)]
    failures = [
        _failure_line(r) + (f"; undecodable files, e.g. {broken}" if r["expectation_config"]["kwargs"].get("column") == "decodable" else "")
        for r in result["results"]
        if not r["success"]
    ]
    summary = {
        "success": bool(result["success"]),
        "images": int(len(df)),
        "evaluated_expectations": result["statistics"]["evaluated_expectations"],
        "successful_expectations": result["statistics"]["successful_expectations"],
        "failures": failures,
    }
    report = Path(cfg.reports_dir) / REPORT
    write_json(report, {"summary": summary, "result": result})
    tracking.log_data_stage("validate", cfg.flat(), {**summary, "failures": len(failures)}, [report])
    if failures:
        raise ArtganError(
            f"{raw / MANIFEST}: {len(failures)} critical expectation(s) failed "
            f"(details in {Path(cfg.reports_dir) / REPORT}):\n" + "\n".join(failures)
        )
    return summary
