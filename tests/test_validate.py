"""validate: a clean fetch passes and is reported; bad files are quarantined with a reason (or stop the stage
with `on_bad_file: fail`), the user's files stay byte-identical; a failed expectation is one line per failure."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
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
    assert summary["images"] == summary["ok"] == 40 and summary["quarantined"] == 0
    assert summary["failures"] == []
    assert summary["evaluated_expectations"] == summary["successful_expectations"] >= 5
    report = read_json(tmp_path / "reports" / "validation.json")
    assert report["summary"]["success"] is True
    assert report["summary"]["images"] == 40
    assert report["result"]["success"] is True
    metric = read_json(tmp_path / "reports" / "validation_summary.json")
    assert metric["ok"] == 40 and metric["success"] is True and metric["by_reason"] == {}
    assert (tmp_path / "reports" / "validation" / "index.html").is_file()
    # the contract with preprocess: every raw row, same order, + status/reason/note
    raw_df = pd.read_parquet(raw / "manifest.parquet")
    out = pd.read_parquet(tmp_path / "data" / "validated" / "manifest.parquet")
    assert list(out.columns[: len(raw_df.columns)]) == list(raw_df.columns)
    assert {"status", "reason", "note"} <= set(out.columns)
    assert list(out["path"]) == list(raw_df["path"])
    assert set(out["status"]) == {"ok"} and set(out["reason"]) == {""}
    assert (tmp_path / "data" / "validated" / "manifest.csv").is_file()


def test_a_truncated_image_is_quarantined_and_left_as_it_is(raw, tmp_path):
    df = pd.read_parquet(raw / "manifest.parquet")
    victim = raw / df["path"].iloc[3]
    victim.write_bytes(victim.read_bytes()[:100])
    cut = victim.read_bytes()
    summary = run_validate(tmp_path)
    assert summary["success"] is True
    assert summary["quarantined"] == 1 and summary["ok"] == 39
    assert summary["by_reason"] == {"truncated": 1}
    out = pd.read_parquet(tmp_path / "data" / "validated" / "manifest.parquet")
    assert out["status"].iloc[3] == "quarantined"
    assert out["reason"].iloc[3].startswith("truncated image (")
    assert victim.read_bytes() == cut  # never deleted, never modified


def test_too_few_images_fails_the_ok_count_expectation(raw, tmp_path):
    with pytest.raises(ArtganError) as info:
        run_validate(tmp_path, min_images=1000)
    lines = failure_lines(info)
    assert len(lines) == 1, lines
    assert "'column': 'ok'" in lines[0]
    assert "1000" in lines[0] and "40" in lines[0]
    assert not (tmp_path / "data" / "validated").exists(), "a failed validation must not leave data/validated"
    assert read_json(tmp_path / "reports" / "validation_summary.json")["success"] is False


def test_every_failure_gets_its_own_line(raw, tmp_path):
    df = pd.read_parquet(raw / "manifest.parquet")
    (raw / df["path"].iloc[1]).write_bytes((raw / df["path"].iloc[0]).read_bytes())
    df.loc[1, "sha256"] = df.loc[0, "sha256"]
    from pipeline.data import manifest

    manifest.write(df, raw / "manifest.parquet")
    with pytest.raises(ArtganError) as info:
        run_validate(tmp_path, min_images=1000, max_duplicate_fraction=0.0)
    lines = failure_lines(info)
    assert len(lines) == 2, lines
    assert any("'column': 'ok'" in line for line in lines)
    assert any("duplicate" in line and "0.025" in line for line in lines)
    report = read_json(tmp_path / "reports" / "validation.json")
    assert report["summary"]["success"] is False
    assert report["summary"]["failures"] == lines


def test_duplicates_are_quarantined_up_to_max_duplicate_fraction(raw, tmp_path):
    from pipeline.data import manifest

    df = pd.read_parquet(raw / "manifest.parquet")
    (raw / df["path"].iloc[1]).write_bytes((raw / df["path"].iloc[0]).read_bytes())
    df.loc[1, "sha256"] = df.loc[0, "sha256"]
    manifest.write(df, raw / "manifest.parquet")
    summary = run_validate(tmp_path)  # 1 of 40 = 0.025 <= 0.05
    assert summary["success"] is True and summary["by_reason"] == {"duplicate": 1}
    out = pd.read_parquet(tmp_path / "data" / "validated" / "manifest.parquet")
    assert out["reason"].iloc[1] == f"duplicate of {df['path'].iloc[0]}"
    assert out["status"].iloc[0] == "ok"


def test_missing_manifest_says_to_run_fetch(tmp_path, monkeypatch, fetched):
    isolate_mlflow(monkeypatch, tmp_path, fetched.parent.parent)
    with pytest.raises(ArtganError, match="artgan fetch"):
        run_validate(tmp_path)


# ---- a user's folder of good and bad files (data.source: folder:) ----------------------------------


def _png(img, **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=save.pop("format", "PNG"), **save)
    return buf.getvalue()


def _noise(mode: str, w: int, h: int, seed: int):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def decompression_bomb(side: int) -> bytes:
    """A real, valid 1-bit side×side PNG (all black): a few KB on disk, side² pixels declared."""
    row = b"\0" * (1 + (side + 7) // 8)
    z = zlib.compressobj(9)
    body = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def make_art(root: Path) -> tuple[list[str], dict[str, str]]:
    """Good images (names listed) and bad ones (name -> the start of the expected quarantine reason)."""
    from PIL import Image

    root.mkdir(parents=True)
    files: dict[str, bytes] = {f"good_{i}.png": _png(_noise("RGB", 24, 24, i)) for i in range(6)}
    frames = [_noise("P", 24, 24, 10 + i) for i in range(3)]
    files["animated.gif"] = _png(frames[0], format="GIF", save_all=True, append_images=frames[1:], duration=50)
    files["cmyk.jpg"] = _png(_noise("CMYK", 24, 24, 20), format="JPEG")
    pal = _noise("P", 24, 24, 21)
    files["palette_alpha.png"] = _png(pal, transparency=0)
    files["gray.png"] = _png(_noise("L", 24, 24, 22))
    files["sixteen_bit.png"] = _png(Image.fromarray((np.arange(24 * 24).reshape(24, 24) * 100).astype(np.uint16)))
    good = sorted(files)

    truncated_jpeg = _png(_noise("RGB", 64, 64, 30), format="JPEG", quality=95)
    truncated_png = _png(_noise("RGB", 64, 64, 31))
    side = int((Image.MAX_IMAGE_PIXELS * 2) ** 0.5) + 1000
    bad = {
        "zero.png": (b"", "zero-byte file"),
        "truncated.jpg": (truncated_jpeg[: len(truncated_jpeg) // 2], "truncated image ("),
        "truncated.png": (truncated_png[: len(truncated_png) // 2], "truncated image ("),
        "text.jpg": (b"this is not a picture\n", "not an image"),
        "bomb.png": (
            decompression_bomb(side),
            f"decompression bomb ({side * side} pixels > Pillow's limit {Image.MAX_IMAGE_PIXELS})",
        ),
        "one_pixel.png": (_png(_noise("RGB", 1, 1, 40)), "smaller than validate.min_side (1×1)"),
        "strip.png": (_png(_noise("RGB", 640, 16, 41)), "aspect ratio 40.0 outside validate.aspect_ratio [0.25, 4.0]"),
        "ppm_named.png": (_png(_noise("RGB", 24, 24, 42), format="PPM"), "format PPM not in validate.formats"),
        "zz_copy.png": (files["good_0.png"], "duplicate of images/good_0.png"),
    }
    files.update({name: data for name, (data, _) in bad.items()})
    for name, data in files.items():
        (root / name).write_bytes(data)
    return good, {name: why for name, (_, why) in bad.items()}


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    """A user's folder of good and bad files, fetched once (data/raw kept for the tests to copy)."""
    from pipeline.stages import fetch

    base = tmp_path_factory.mktemp("art")
    good, bad = make_art(base / "user" / "art")
    before = snapshot(base / "user")
    with pytest.MonkeyPatch.context() as mp:
        isolate_mlflow(mp, base)
        fetch.run(parse(tiny_cfg(base, data={"source": f"folder:{base / 'user' / 'art'}", "max_images": 0})))
    assert snapshot(base / "user") == before
    return base, good, bad, before


@pytest.fixture
def art_raw(art, tmp_path, monkeypatch):
    base, *_ = art
    isolate_mlflow(monkeypatch, tmp_path, base)
    shutil.copytree(base / "data" / "raw", tmp_path / "data" / "raw")
    return tmp_path / "data" / "raw"


def snapshot(root: Path) -> dict:
    """Every file under `root` (bytes names): its SHA-256."""
    out = {}
    for dirpath, _, filenames in os.walk(os.fsencode(root)):
        for name in filenames:
            p = os.path.join(dirpath, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, os.fsencode(root))] = hashlib.sha256(f.read()).hexdigest()
    return out


def run_art(tmp_path, art, **validate):
    base, *_ = art
    from pipeline.stages import validate as stage

    cfg = parse(
        tiny_cfg(
            tmp_path,
            data={"source": f"folder:{base / 'user' / 'art'}", "max_images": 0},
            validate={"min_images": 5, "max_duplicate_fraction": 0.1, **validate},
        )
    )
    return stage.run(cfg)


def test_fetch_keeps_unreadable_files_with_null_header_fields(art):
    base, good, bad, _ = art
    df = pd.read_parquet(base / "data" / "raw" / "manifest.parquet").set_index("path")
    assert len(df) == len(good) + len(bad)
    for name in ("zero.png", "text.jpg", "truncated.png"):
        row = df.loc[f"images/{name}"]
        if name != "truncated.png":  # a truncated PNG still has a readable header
            assert pd.isna(row["width"]) and pd.isna(row["height"]) and pd.isna(row["mode"]) and pd.isna(row["format"])
    assert df.loc["images/zero.png", "bytes"] == 0
    bomb = df.loc["images/bomb.png"]
    assert bomb["width"] * bomb["height"] > 2 * 89478485 and bomb["bytes"] < 100_000
    assert set(df["source"]) == {f"folder:{base / 'user' / 'art'}"}


def test_bad_files_are_quarantined_with_their_reason_and_nothing_is_touched(art, art_raw, tmp_path):
    base, good, bad, before = art
    raw_before = snapshot(art_raw)
    summary = run_art(tmp_path, art)
    out = pd.read_parquet(tmp_path / "data" / "validated" / "manifest.parquet")
    raw_df = pd.read_parquet(art_raw / "manifest.parquet")
    assert list(out["path"]) == list(raw_df["path"])  # every row, same order
    pd.testing.assert_frame_equal(out[raw_df.columns], raw_df)  # the raw columns as they were
    by_name = out.set_index("path")
    for name, why in bad.items():
        row = by_name.loc[f"images/{name}"]
        assert row["status"] == "quarantined", (name, row["reason"])
        assert row["reason"].startswith(why), (name, row["reason"], why)
    for name in good:
        row = by_name.loc[f"images/{name}"]
        assert (row["status"], row["reason"]) == ("ok", ""), (name, row["reason"])
    assert by_name.loc["images/animated.gif", "note"] == "animated GIF, 3 frames: the first frame is used"
    assert by_name.loc["images/cmyk.jpg", "mode"] == "CMYK"
    assert by_name.loc["images/palette_alpha.png", "mode"] == "P"

    assert summary["success"] is True
    assert (summary["images"], summary["ok"], summary["quarantined"]) == (len(good) + len(bad), len(good), len(bad))
    assert summary["animated"] == 1
    assert summary["by_reason"] == {
        "aspect_ratio": 1,
        "decompression_bomb": 1,
        "duplicate": 1,
        "format": 1,
        "not_an_image": 1,
        "too_small": 1,
        "truncated": 2,
        "zero_byte": 1,
    }
    assert read_json(tmp_path / "reports" / "validation_summary.json") == {
        k: v for k, v in summary.items() if k != "failures"
    }
    assert (tmp_path / "reports" / "validation" / "index.html").is_file()
    # the user's folder and the fetched copies: byte-identical, nothing deleted
    assert snapshot(base / "user") == before
    assert snapshot(art_raw) == raw_before


def test_allowed_modes_come_from_params(art, art_raw, tmp_path):
    run_art(tmp_path, art, modes=["L", "P", "RGB", "CMYK", "RGBA"])  # no 16-bit greyscale
    out = pd.read_parquet(tmp_path / "data" / "validated" / "manifest.parquet").set_index("path")
    assert out.loc["images/sixteen_bit.png", "status"] == "quarantined"
    assert out.loc["images/sixteen_bit.png", "reason"] == "mode I;16 not in validate.modes"


def test_on_bad_file_fail_stops_with_one_line_per_bad_file(art, art_raw, tmp_path):
    base, _, bad, before = art
    with pytest.raises(ArtganError) as info:
        run_art(tmp_path, art, on_bad_file="fail")
    head, *lines = str(info.value).splitlines()
    assert "on_bad_file" in head and f"{len(bad) - 1} bad file(s)" in head
    bad_files = {n: why for n, why in bad.items() if not why.startswith("duplicate")}  # duplicates are not bad files
    assert len(lines) == len(bad_files), lines
    for name, why in bad_files.items():
        [line] = [line for line in lines if f"images/{name}:" in line]
        assert why in line, line
    assert not (tmp_path / "data" / "validated").exists()
    assert read_json(tmp_path / "reports" / "validation.json")["summary"]["success"] is False
    assert snapshot(base / "user") == before


def test_a_stale_validated_manifest_does_not_survive_a_failed_run(art, art_raw, tmp_path):
    run_art(tmp_path, art)
    assert (tmp_path / "data" / "validated" / "manifest.parquet").is_file()
    with pytest.raises(ArtganError, match="critical expectation"):
        run_art(tmp_path, art, min_images=1000)
    assert not (tmp_path / "data" / "validated").exists()


def labelled_failures(tmp_path, monkeypatch, art, counts: dict[str, int], extra: dict[str, bytes]) -> list[str]:
    """Validate's failure lines for a folder of class sub-folders (`counts` images each) plus `extra` files, with
    data.label set and 3 images needed per class."""
    from pipeline.stages import fetch, validate

    base, *_ = art
    isolate_mlflow(monkeypatch, tmp_path, base)
    root = tmp_path / "user" / "styles"
    for label, n in counts.items():
        (root / label).mkdir(parents=True)
        for i in range(n):
            (root / label / f"{i}.png").write_bytes(_png(_noise("RGB", 24, 24, 100 * len(label) + i)))
    for rel, data in extra.items():
        (root / rel).write_bytes(data)
    cfg = parse(
        tiny_cfg(
            tmp_path,
            data={"source": f"folder:{root}", "max_images": 0, "label": "label"},
            validate={"min_images": 5, "min_images_per_class": 3},
        )
    )
    fetch.run(cfg)
    with pytest.raises(ArtganError) as info:
        validate.run(cfg)
    return failure_lines(info)


def test_min_images_per_class_counts_ok_images_of_each_label(tmp_path, monkeypatch, art):
    lines = labelled_failures(tmp_path, monkeypatch, art, {"Cubism": 4, "Fauvism": 2}, {"Fauvism/broken.png": b""})
    assert len(lines) == 1 and "class_size" in lines[0] and "{'Fauvism': 2}" in lines[0], lines


def test_unlabelled_images_are_named_and_do_not_count_as_a_small_class(tmp_path, monkeypatch, art):
    lines = labelled_failures(
        tmp_path, monkeypatch, art, {"Cubism": 3, "Fauvism": 3}, {"toplevel.png": _png(_noise("RGB", 24, 24, 7))}
    )  # in no class folder
    assert len(lines) == 1, lines  # the not-null expectation only: every class has its 3 images
    assert "not_be_null" in lines[0] and "images without a 'label': images/toplevel.png" in lines[0], lines


def test_a_non_utf8_file_name_is_a_clear_fetch_error(tmp_path, monkeypatch, art):
    from pipeline.stages import fetch

    base, *_ = art
    isolate_mlflow(monkeypatch, tmp_path, base)
    root = tmp_path / "user" / "art"
    root.mkdir(parents=True)
    (root / "ok.png").write_bytes(_png(_noise("RGB", 24, 24, 0)))
    try:
        with open(os.path.join(os.fsencode(root), b"caf\xe9.png"), "wb") as f:
            f.write(_png(_noise("RGB", 24, 24, 1)))
    except OSError:
        pytest.skip("this filesystem refuses non-UTF-8 names")
    before = snapshot(root)
    with pytest.raises(ArtganError, match="not valid UTF-8.*rename it"):
        fetch.run(parse(tiny_cfg(tmp_path, data={"source": f"folder:{root}", "max_images": 0})))
    assert snapshot(root) == before
    assert not (tmp_path / "data" / "raw").exists()


@pytest.mark.parametrize(
    ("extra", "columns"),
    [
        ({}, set()),
        ({"task": "translate"}, {"input_ok"}),
        ({"data": {"label": "label"}}, {"label", "class_size"}),
    ],
)
def test_the_suite_checks_the_dataset_not_what_each_file_check_already_quarantines(tmp_path, extra, columns):
    """Size, aspect ratio, format and mode are quarantine reasons of the per-file checks; restating them as
    expectations over the ok rows could never fail. The suite holds the whole-dataset checks only."""
    from pipeline.config import parse
    from pipeline.stages.validate import build_suite

    raw = tiny_cfg(tmp_path)
    for key, value in extra.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) else value
    suite = build_suite(parse(raw))
    got = {e.column for e in suite.expectations}
    assert got == {"path", "status", "ok", "sha256", "duplicate"} | columns
