"""validate: a clean fetch passes and is reported; corrupt or too-small data fails, one line per failure."""
from __future__ import annotations

import shutil

import pandas as pd
import pytest
from helpers import isolate_mlflow, tiny_cfg

from pipeline.config import parse
from pipeline.errors import ArtganError
from pipeline.io import read_json


@pytest.fixture(scope="module")
def fetched(tmp_path_factory):
    """40 fetched images, made once; each test copies them."""
    from pipeline.stages import fetch

    root = tmp_path_factory.mktemp("fetched")
    with pytest.MonkeyPatch.context() as mp:
        isolate_mlflow(mp, root)
        fetch.run(parse(tiny_cfg(root, data={"max_images": 40})))
    return root / "data" / "raw"


@pytest.fixture
def raw(fetched, tmp_path, monkeypatch):
    isolate_mlflow(monkeypatch, tmp_path, fetched.parent.parent)  # the store the fetch created
    dst = tmp_path / "data" / "raw"
    shutil.copytree(fetched, dst)
    return dst


def run_validate(tmp_path, **validate):
    from pipeline.stages import validate as stage

    cfg = parse(tiny_cfg(tmp_path, validate={"min_images": 10, **validate}))
    return stage.run(cfg)


def failure_lines(exc: pytest.ExceptionInfo) -> list[str]:
    head, *lines = str(exc.value).splitlines()
    assert "critical expectation(s) failed" in head
    assert "validation.json" in head
    return lines


def test_clean_data_passes_and_writes_the_report(raw, tmp_path):
    summary = run_validate(tmp_path)
    assert summary["success"] is True
    assert summary["images"] == 40
    assert summary["failures"] == []
    assert summary["evaluated_expectations"] == summary["successful_expectations"] >= 7
    report = read_json(tmp_path / "reports" / "validation.json")
    assert report["summary"]["success"] is True
    assert report["summary"]["images"] == 40
    assert report["result"]["success"] is True


def test_truncated_image_fails_the_decodable_expectation(raw, tmp_path):
    df = pd.read_parquet(raw / "manifest.parquet")
    victim = raw / df["path"].iloc[3]
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(ArtganError) as info:
        run_validate(tmp_path)
    lines = failure_lines(info)
    assert len(lines) == 1, lines
    assert "decodable" in lines[0]
    assert "1 unexpected" in lines[0]
    report = read_json(tmp_path / "reports" / "validation.json")
    assert report["summary"]["success"] is False
    assert report["summary"]["failures"] == lines


def test_too_few_images_fails_the_row_count_expectation(raw, tmp_path):
    with pytest.raises(ArtganError) as info:
        run_validate(tmp_path, min_images=1000)
    lines = failure_lines(info)
    assert len(lines) == 1, lines
    assert "row_count" in lines[0]
    assert "1000" in lines[0] and "40" in lines[0]


def test_every_failure_gets_its_own_line(raw, tmp_path):
    df = pd.read_parquet(raw / "manifest.parquet")
    victim = raw / df["path"].iloc[0]
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(ArtganError) as info:
        run_validate(tmp_path, min_images=1000, modes=["RGB"])
    lines = failure_lines(info)
    assert len(lines) == 3, lines
    assert any("row_count" in line for line in lines)
    assert any("decodable" in line for line in lines)
    assert any("mode" in line and "RGBA" in line for line in lines)


def test_duplicate_images_fail_the_unique_sha256_expectation(raw, tmp_path):
    from pipeline.data import manifest

    df = pd.read_parquet(raw / "manifest.parquet")
    (raw / df["path"].iloc[1]).write_bytes((raw / df["path"].iloc[0]).read_bytes())
    df.loc[1, "sha256"] = df.loc[0, "sha256"]
    manifest.write(df, raw / "manifest.parquet")
    with pytest.raises(ArtganError) as info:
        run_validate(tmp_path)
    lines = failure_lines(info)
    assert len(lines) == 1, lines
    assert "unique" in lines[0] and "sha256" in lines[0]


def test_missing_manifest_says_to_run_fetch(tmp_path, monkeypatch, fetched):
    isolate_mlflow(monkeypatch, tmp_path, fetched.parent.parent)
    with pytest.raises(ArtganError, match="artgan fetch"):
        run_validate(tmp_path)
