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


def artgan_output(d, *files: str):
    """A folder as an artgan stage leaves it: its files and the ownership marker."""
    with atomic_dir(d, "data.raw_dir", "manifest.parquet", stage="fetch") as tmp:
        for name in files:
            (tmp / name).write_text("")
    return d


def test_failed_directory_keeps_the_old_directory(tmp_path):
    d = artgan_output(tmp_path / "raw", "keep", "manifest.parquet")
    with pytest.raises(RuntimeError):
        with atomic_dir(d, "data.raw_dir", "manifest.parquet") as tmp:
            (tmp / "new").write_text("2")
            raise RuntimeError("boom")
    assert sorted(os.listdir(d)) == [".artgan", "keep", "manifest.parquet"]
    assert sorted(os.listdir(tmp_path)) == ["raw"]


def test_directory_is_replaced_whole(tmp_path):
    d = artgan_output(tmp_path / "raw", "stale")  # an artgan output: it may be replaced
    with atomic_dir(d, "data.raw_dir", "manifest.parquet") as tmp:
        (tmp / "fresh").write_text("2")
    assert sorted(os.listdir(d)) == [".artgan", "fresh"]
    assert sorted(os.listdir(tmp_path)) == ["raw"]


def test_a_folder_artgan_makes_holds_a_marker_naming_the_stage_and_the_format(tmp_path):
    d = artgan_output(tmp_path / "raw", "manifest.parquet")
    assert read_json(d / ".artgan") == {"format": 1, "param": "data.raw_dir", "stage": "fetch"}
    with atomic_dir(tmp_path / "render", "reports_dir", "grid.png") as tmp:  # a caller that names no stage
        (tmp / "grid.png").write_text("")
    assert read_json(tmp_path / "render" / ".artgan")["stage"] == "render"


@pytest.mark.parametrize(
    "key, signature",
    [("data.raw_dir", "manifest.parquet"), ("data.processed_dir", "images.npy"), ("reports_dir", "grid.png")],
)
def test_a_users_folder_that_happens_to_hold_the_outputs_file_is_never_replaced(tmp_path, key, signature):
    """The trial: data.raw_dir pointed at a folder of the user's with a manifest.parquet in it was replaced whole.
    Only the marker proves ownership; a folder without it (an older artgan's output too) is refused."""
    d = tmp_path / "mine"
    (d / "photos").mkdir(parents=True)
    (d / "notes.txt").write_text("mine")
    (d / "photos" / "holiday.png").write_bytes(b"png")
    (d / signature).write_bytes(b"theirs")
    ran = []
    with pytest.raises(
        ArtganError,
        match=rf"^{key}: {d} holds a {signature} but no \.artgan marker .*"
        rf"delete {d} and run again, else point {key} at a new folder$",
    ) as info:
        with atomic_dir(d, key, signature) as tmp:
            ran.append(tmp)
    assert not ran and "\n" not in str(info.value)
    assert sorted(os.listdir(d)) == sorted(["notes.txt", "photos", signature])
    assert (d / signature).read_bytes() == b"theirs" and (d / "photos" / "holiday.png").read_bytes() == b"png"
    assert sorted(os.listdir(tmp_path)) == ["mine"]


def test_a_marker_that_is_not_artgans_proves_nothing(tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("mine")
    (d / ".artgan").write_text("my own dotfile")
    with pytest.raises(ArtganError, match=r"is not an artgan output \(no \.artgan marker\)"):
        with atomic_dir(d, "data.raw_dir", "manifest.parquet"):
            pass
    assert sorted(os.listdir(d)) == [".artgan", "notes.txt"]


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


def test_an_empty_or_missing_folder_may_be_filled(tmp_path):
    # DVC deletes a stage's outputs before it runs the stage: a missing folder is always artgan's to make
    for d in (tmp_path / "raw", tmp_path / "absent" / "raw"):
        if d.name == "raw" and d.parent == tmp_path:
            d.mkdir()
        with atomic_dir(d, "data.raw_dir", "manifest.parquet") as tmp:
            (tmp / "manifest.parquet").write_text("")
        assert sorted(os.listdir(d)) == [".artgan", "manifest.parquet"]


def test_an_unreadable_input_names_the_file_and_the_stage_that_makes_it(tmp_path):
    import numpy as np

    from pipeline.io import read_input

    good = tmp_path / "good.npy"
    np.save(good, np.arange(3))
    assert read_input(good, "preprocess", np.load).tolist() == [0, 1, 2]
    bad = tmp_path / "images.npy"
    bad.write_bytes(b"\x93NUMPY\x01\x00garbage")  # a truncated header
    with pytest.raises(
        ArtganError, match=rf"^{bad}: unreadable \(\w+: .+\); re-run `artgan preprocess` \(or `dvc repro`\)$"
    ):
        read_input(bad, "preprocess", np.load)
    with pytest.raises(ArtganError, match="missing input; run `artgan preprocess`"):
        read_input(tmp_path / "nope.npy", "preprocess", np.load)


def test_a_folder_param_outside_the_dvc_project_is_one_line_only_under_dvc(tmp_path):
    from helpers import tiny_cfg

    from pipeline.config import parse
    from pipeline.layout import check_inside_dvc_project

    root = tmp_path / "project"
    root.mkdir()
    inside = parse({"train": {"out_dir": "models_b"}})
    check_inside_dvc_project(inside, {"DVC_ROOT": str(root)})
    outside = parse({**tiny_cfg(tmp_path), "reports_dir": str(tmp_path / "elsewhere")})
    check_inside_dvc_project(outside, {})  # `artgan render` itself may write anywhere
    with pytest.raises(ArtganError, match=r"^data.raw_dir: .* is outside the DVC project .*set data.raw_dir") as exc:
        check_inside_dvc_project(outside, {"DVC_ROOT": str(root)})
    assert "\n" not in str(exc.value)
    with pytest.raises(ArtganError, match="^train.out_dir: ../models is outside"):
        check_inside_dvc_project(parse({"train": {"out_dir": "../models"}}), {"DVC_ROOT": str(root)})
