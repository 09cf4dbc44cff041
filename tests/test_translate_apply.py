"""`artgan translate PATH... --model MODEL --out DIR`: a user's folder of images of any size and mode through a 16 px
translator, a bad file named and skipped, outputs written beside nothing they could overwrite."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_translate_eval import SIZE, project_cfg, write_checkpoint
from typer.testing import CliRunner

from pipeline.cli import app


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("translator")
    cfg = project_cfg(root)
    ckpt = write_checkpoint(cfg)
    return Path(cfg.train.out_dir) / "checkpoint.pt", ckpt


def photos(root: Path) -> Path:
    """A folder of two good images (a CMYK JPEG, an RGBA PNG of another size, in a subfolder) and one bad file."""
    folder = root / "photos"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)).convert("CMYK").save(folder / "a.jpg")
    rgba = rng.integers(0, 256, (30, 10, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(folder / "sub" / "b.png")
    (folder / "notes.png").write_text("not an image, whatever its name says")
    return folder


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def invoke(*args: str):
    return CliRunner().invoke(app, ["translate", *map(str, args)])


def test_a_folder_with_a_bad_file_translates_the_rest_and_exits_1(tmp_path, checkpoint):
    from pipeline.translation.translator import Translator

    path, ckpt = checkpoint
    folder = photos(tmp_path)
    before = _digests(folder)
    out = tmp_path / "out"
    res = invoke(folder, "--model", path, "--out", out)
    assert res.exit_code == 1, res.output
    assert res.stderr.splitlines() == [
        f"error: {folder / 'notes.png'}: not a readable image (UnidentifiedImageError: cannot identify image file "
        f"{str(folder / 'notes.png')!r})"
    ]
    summary = json.loads(res.stdout.strip().splitlines()[-1].removeprefix("translate: "))
    assert (summary["translated"], summary["failed"], summary["image_size"]) == (2, 1, SIZE)
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["a.png", "sub/b.png"]  # the folder structure kept; nothing for the bad file, no temp file
    tr = Translator(ckpt)
    for name, src in (("a.png", folder / "a.jpg"), ("sub/b.png", folder / "sub" / "b.png")):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size == (SIZE, SIZE) and im.mode == "RGB"
            assert np.array_equal(np.asarray(im), tr(tr.convert(src)[None])[0])  # converted as preprocess does
    assert _digests(folder) == before  # inputs byte-identical


def test_files_given_one_by_one_and_all_good_exit_0(tmp_path, checkpoint):
    path, _ = checkpoint
    folder = photos(tmp_path)
    out = tmp_path / "out"
    res = invoke(folder / "a.jpg", folder / "sub" / "b.png", "--model", path, "--out", out)
    assert res.exit_code == 0 and res.stderr == ""
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]


def test_an_out_folder_inside_an_input_folder_is_refused_before_any_work(tmp_path, checkpoint):
    path, _ = checkpoint
    folder = photos(tmp_path)
    before = _digests(folder)
    res = invoke(folder, "--model", path, "--out", folder / "translated")
    assert res.exit_code == 1
    assert res.stderr.splitlines() == [
        f"error: --out {folder / 'translated'}: inside the input folder {folder}; its outputs would be read as "
        "inputs next time, so choose a folder outside it"
    ]
    assert _digests(folder) == before


def test_an_output_that_would_replace_an_input_is_refused(tmp_path, checkpoint):
    path, _ = checkpoint
    folder = photos(tmp_path)
    before = _digests(folder)
    res = invoke(folder / "sub" / "b.png", "--model", path, "--out", folder / "sub")
    assert res.exit_code == 1 and "artgan never writes over an input" in res.stderr
    assert len(res.stderr.splitlines()) == 1 and _digests(folder) == before


def test_two_inputs_for_one_output_are_refused(tmp_path, checkpoint):
    path, _ = checkpoint
    folder = photos(tmp_path)
    Image.new("RGB", (8, 8)).save(folder / "a.png")  # a.jpg and a.png -> out/a.png
    res = invoke(folder, "--model", path, "--out", tmp_path / "out")
    assert res.exit_code == 1 and "would both be written as" in res.stderr
    assert not (tmp_path / "out").exists()


def test_a_missing_path_is_one_line_and_the_rest_are_translated(tmp_path, checkpoint):
    path, _ = checkpoint
    folder = photos(tmp_path)
    res = invoke(tmp_path / "nope.jpg", folder / "a.jpg", "--model", path, "--out", tmp_path / "out")
    assert res.exit_code == 1
    assert res.stderr.splitlines() == [f"error: {tmp_path / 'nope.jpg'}: no such file or folder"]
    assert (tmp_path / "out" / "a.png").is_file()


def test_a_generator_checkpoint_is_one_line(tmp_path, checkpoint):
    path, ckpt = checkpoint
    folder = photos(tmp_path)
    gen = tmp_path / "generator.pt"
    torch.save({**ckpt, "kind": "gan"}, gen)
    res = invoke(folder, "--model", gen, "--out", tmp_path / "out")
    assert res.exit_code == 1
    assert res.stderr.splitlines() == [
        f"error: {gen}: a generator (made by task generate: noise -> images), not a translator; pass a translator "
        "(task translate; `artgan generate` draws from a generator)"
    ]
    assert not (tmp_path / "out").exists()


def test_generate_refuses_a_translator_in_one_line(tmp_path, checkpoint):
    path, _ = checkpoint
    res = CliRunner().invoke(app, ["generate", "--model", str(path), "--out", str(tmp_path / "g.png")])
    assert res.exit_code == 1
    assert res.stderr.splitlines() == [
        f"error: {path}: a translator (made by task translate), not a generator; `artgan translate PATH... "
        f"--model {path} --out DIR` translates images with it"
    ]
