"""The built-in OpenMoji source: thousands of distinct, deterministic renders, and the fetch stage."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from helpers import isolate_mlflow, tiny_cfg
from PIL import Image

from pipeline import layout
from pipeline.config import parse
from pipeline.data import openmoji


@pytest.fixture(scope="module")
def all_glyphs():
    names = openmoji.glyph_names()
    return names, list(openmoji.render(names, 128))


def test_glyph_names_are_sorted_code_point_sequences():
    names = openmoji.glyph_names()
    assert len(names) >= 4000
    assert names == sorted(names)
    assert len(set(names)) == len(names)
    assert openmoji.text_of("1F600") == "\U0001f600"
    assert openmoji.text_of("1F468-200D-1F469") == "\U0001f468\u200d\U0001f469"


@pytest.mark.slow
def test_rendering_every_glyph_gives_thousands_of_distinct_images(all_glyphs):
    names, glyphs = all_glyphs
    assert len(glyphs) >= 4000
    assert len({g.sha256 for g in glyphs}) >= 4000
    # in name order, and each one named after what was asked for
    rendered = [g.name for g in glyphs]
    kept = set(rendered)
    assert rendered == [n for n in names if n in kept]


@pytest.mark.slow
def test_rendering_twice_gives_the_same_bytes(all_glyphs):
    names, glyphs = all_glyphs
    again = list(openmoji.render(names, 128))
    assert [g.sha256 for g in again] == [g.sha256 for g in glyphs]
    assert [g.name for g in again] == [g.name for g in glyphs]


def test_svg_renders_in_worker_processes_are_the_same_glyphs_in_the_same_order():
    names = openmoji.glyph_names()[:100]  # more than one chunk per worker: the pool runs
    assert len(names) > 2 * openmoji.SVG_CHUNK
    one = list(openmoji.render_svg(names, 32, "line"))
    two = list(openmoji.render_svg(names, 32, "line", workers=2))
    assert len(one) >= 90
    assert [(w.name, w.sha256, p.sha256) for w, p in two] == [(w.name, w.sha256, p.sha256) for w, p in one]
    assert any(w.sha256 != p.sha256 for w, p in one)  # the line layer alone, not the whole glyph again


def test_a_consumer_that_stops_early_gets_the_first_glyphs_from_the_worker_processes():
    import itertools

    names = openmoji.glyph_names()
    renders = openmoji.render_svg(names, 32, "color", workers=2)
    first = list(itertools.islice(renders, 3))
    renders.close()  # shuts the pool down, cancelling the renders not started
    assert [w.name for w, _ in first] == [w.name for w, _ in openmoji.render_svg(names[:5], 32, "color")][:3]


def test_each_render_is_a_128px_rgba_png_with_the_stated_sha256(all_glyphs):
    import hashlib

    _, glyphs = all_glyphs
    for g in glyphs:
        assert hashlib.sha256(g.png).hexdigest() == g.sha256
        with Image.open(io.BytesIO(g.png)) as im:
            assert im.format == "PNG"
            assert im.size == (128, 128)
            assert im.mode == "RGBA"
            im.load()
            assert im.getbbox() is not None  # something was drawn


def test_render_size_is_respected():
    names = openmoji.glyph_names()[:3]
    for g in openmoji.render(names, 32):
        with Image.open(io.BytesIO(g.png)) as im:
            assert im.size == (32, 32)


def test_fetch_stage_writes_images_and_manifest(tmp_path, monkeypatch, mlflow_dir):
    from pipeline.stages import fetch

    isolate_mlflow(monkeypatch, tmp_path, mlflow_dir)
    cfg = parse(tiny_cfg(tmp_path, data={"max_images": 50}))
    figures = fetch.run(cfg)

    raw = tmp_path / "data" / "raw"
    assert figures["images"] == 50 and figures["distinct_sha256"] == 50
    assert len(list((raw / "images").glob("*.png"))) == 50
    df = pd.read_parquet(raw / layout.MANIFEST)
    assert len(df) == 50
    for col in ("path", "sha256", "width", "height", "mode", "label"):
        assert col in df.columns
    assert df["sha256"].is_unique
    assert (df["width"] == 128).all() and (df["height"] == 128).all()
    assert (df["mode"] == "RGBA").all()
    assert all((raw / p).is_file() for p in df["path"])
    # a deterministic prefix in name order
    assert list(df["name"]) == sorted(df["name"])
    assert (raw / "manifest.csv").is_file()
    # no temporary directories left beside the output
    assert not [p for p in raw.parent.iterdir() if p.name.startswith(".")]


def test_fetch_twice_is_reproducible(tmp_path, monkeypatch, mlflow_dir):
    from pipeline.stages import fetch

    isolate_mlflow(monkeypatch, tmp_path, mlflow_dir)
    cfg = parse(tiny_cfg(tmp_path, data={"max_images": 10}))
    fetch.run(cfg)
    first = pd.read_parquet(tmp_path / "data" / "raw" / layout.MANIFEST)
    fetch.run(cfg)  # replaces the directory whole
    second = pd.read_parquet(tmp_path / "data" / "raw" / layout.MANIFEST)
    assert list(first["sha256"]) == list(second["sha256"])
    assert len(list((tmp_path / "data" / "raw" / "images").glob("*.png"))) == 10
