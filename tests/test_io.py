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
    (d / "manifest.parquet").write_text("")
    with pytest.raises(RuntimeError):
        with atomic_dir(d, "data.raw_dir", "manifest.parquet") as tmp:
            (tmp / "new").write_text("2")
            raise RuntimeError("boom")
    assert sorted(os.listdir(d)) == ["keep", "manifest.parquet"]
    assert sorted(os.listdir(tmp_path)) == ["raw"]


def test_directory_is_replaced_whole(tmp_path):
    d = tmp_path / "raw"
    d.mkdir()
    (d / "stale").write_text("1")
    (d / "manifest.parquet").write_text("")  # an artgan output: it may be replaced
    with atomic_dir(d, "data.raw_dir", "manifest.parquet") as tmp:
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
        with atomic_dir(tmp_path / "d", "reports_dir", "grid.png") as tmp:
            (tmp / "f").write_text("")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755


@pytest.mark.parametrize("what", ["folder", "file"])
def test_a_folder_artgan_did_not_make_is_never_replaced(tmp_path, what):
    d = tmp_path / "art"
    if what == "folder":
        d.mkdir()
        (d / "notes.txt").write_text("mine")
    else:
        d.write_text("mine")
    ran = []
    with pytest.raises(ArtganError, match=r"^data\.raw_dir: .*art exists and is not an artgan output") as info:
        with atomic_dir(d, "data.raw_dir", "manifest.parquet") as tmp:
            ran.append(tmp)
    assert not ran  # refused before any work
    assert "\n" not in str(info.value)
    assert (d / "notes.txt" if what == "folder" else d).read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == ["art"]


def test_an_empty_folder_may_be_filled(tmp_path):
    d = tmp_path / "raw"
    d.mkdir()
    with atomic_dir(d, "data.raw_dir", "manifest.parquet") as tmp:
        (tmp / "manifest.parquet").write_text("")
    assert sorted(os.listdir(d)) == ["manifest.parquet"]


def test_an_unreadable_input_names_the_file_and_the_stage_that_makes_it(tmp_path):
    import numpy as np

    from pipeline.io import read_input

    good = tmp_path / "good.npy"
    np.save(good, np.arange(3))
    assert read_input(good, "preprocess", np.load).tolist() == [0, 1, 2]
    bad = tmp_path / "images.npy"
    bad.write_bytes(b"\x93NUMPY\x01\x00garbage")  # a truncated header
    with pytest.raises(ArtganError, match=rf"^{bad}: unreadable \(\w+: .+\); re-run `artgan preprocess` \(or `dvc repro`\)$"):
        read_input(bad, "preprocess", np.load)
    with pytest.raises(ArtganError, match="missing input; run `artgan preprocess`"):
        read_input(tmp_path / "nope.npy", "preprocess", np.load)
