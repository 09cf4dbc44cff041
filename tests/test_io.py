"""Atomic outputs: a stage that fails leaves the previous output in place and no temporary files."""
from __future__ import annotations

import os
import stat

import pytest

from pipeline.errors import ArtganError
from pipeline.io import atomic_dir, atomic_path, read_json, require, write_json


def test_write_json_round_trips_and_creates_parents(tmp_path):
    p = tmp_path / "a" / "b" / "x.json"
    write_json(p, {"b": 1, "a": [1, 2]})
    assert read_json(p) == {"a": [1, 2], "b": 1}
    assert p.read_text().endswith("\n")


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "out.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert p.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["out.txt"]


def test_failed_directory_keeps_the_old_directory(tmp_path):
    d = tmp_path / "raw"
    d.mkdir()
    (d / "keep").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(d) as tmp:
            (tmp / "new").write_text("2")
            raise RuntimeError("boom")
    assert sorted(os.listdir(d)) == ["keep"]
    assert sorted(os.listdir(tmp_path)) == ["raw"]


def test_directory_is_replaced_whole(tmp_path):
    d = tmp_path / "raw"
    d.mkdir()
    (d / "stale").write_text("1")
    with atomic_dir(d) as tmp:
        (tmp / "fresh").write_text("2")
    assert sorted(os.listdir(d)) == ["fresh"]
    assert sorted(os.listdir(tmp_path)) == ["raw"]


def test_require_names_the_stage_that_makes_a_missing_input(tmp_path):
    with pytest.raises(ArtganError, match="artgan fetch") as info:
        require(tmp_path / "nope.parquet", "fetch")
    assert "nope.parquet" in str(info.value) and "\n" not in str(info.value)
    (tmp_path / "yes").write_text("")
    assert require(tmp_path / "yes", "fetch") == tmp_path / "yes"


def test_outputs_get_the_usual_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "x.json", {})
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "f").write_text("")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
