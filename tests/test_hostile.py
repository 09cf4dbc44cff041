"""A hostile corpus, run through the `artgan` command a user runs: every case ends in one error line, a quarantine
reason or correct output; no input file changes (sha256 before and after); nothing is written outside the project.

Each case is a fresh project folder beside the inputs it is given, all under one temporary root, so "outside the
project" is everything else under that root.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

pytestmark = pytest.mark.e2e
ARTGAN = Path(sys.executable).parent / "artgan"


def _png(seed: int, size: int = 24) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One MLflow store for the module (creating one costs seconds), outside every case's root."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def case(tmp_path, store):
    """(root, project, run): `run(*args, **params)` writes the project's params.yaml and runs `artgan *args` there."""
    project = tmp_path / "project"
    project.mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "GX_ANALYTICS_ENABLED": "False"}
    env.pop("DVC_ROOT", None)

    def run(*args: str, params: dict) -> subprocess.CompletedProcess:
        (project / "params.yaml").write_text(yaml.safe_dump(params))
        return subprocess.run([str(ARTGAN), *args], cwd=project, env=env, capture_output=True, text=True, timeout=600)

    return tmp_path, project, run


def _one_error_line(res: subprocess.CompletedProcess, *needles: str) -> str:
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def _outside(root: Path, project: Path) -> dict[str, str]:
    return {k: v for k, v in _tree(root).items() if not k.startswith(f"{project.name}/")}


def test_a_folder_of_broken_images_is_quarantined_with_reasons_and_left_as_it_was(case):
    root, project, run = case
    art = root / "art"
    for i in range(12):
        (art / "good").mkdir(parents=True, exist_ok=True)
        (art / "good" / f"{i}.png").write_bytes(_png(i))
    (art / "bad").mkdir()
    (art / "bad" / "text.png").write_text("not an image at all")
    (art / "bad" / "truncated.png").write_bytes(_png(99)[:60])
    (art / "bad" / "empty.png").write_bytes(b"")
    (art / "bad" / "tiny.png").write_bytes(_png(7, size=4))
    before = _outside(root, project)
    params = {"data": {"source": f"folder:{art}", "max_images": 0}, "validate": {"min_images": 10}}
    assert run("fetch", params=params).returncode == 0
    res = run("validate", params=params)
    assert res.returncode == 0, res.stderr
    df = pd.read_parquet(project / "data" / "validated" / "manifest.parquet").set_index("path")
    bad = df[df["status"] == "quarantined"]
    assert len(bad) == 4 and bad["reason"].astype(str).str.len().min() > 0  # each with its reason
    assert (df["status"] == "ok").sum() == 12
    assert _outside(root, project) == before  # the user's folder byte for byte, nothing new beside it


def test_a_bad_param_is_one_line_naming_it(case):
    root, project, run = case
    _one_error_line(run("fetch", params={"train": {"lossx": "ns"}}), "train.lossx")
    _one_error_line(run("fetch", params={"train": {"steps": "many"}}), "train.steps")
    _one_error_line(run("fetch", params={"data": {"image_size": 33}}), "data.image_size")
    assert _tree(project).keys() == {"params.yaml"}  # nothing was made


def test_a_users_folder_named_as_an_output_is_never_replaced(case):
    root, project, run = case
    mine = root / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    pd.DataFrame({"x": [1]}).to_parquet(mine / "manifest.parquet")
    before = _tree(mine)
    _one_error_line(run("fetch", params={"data": {"raw_dir": str(mine), "max_images": 20}}), "data.raw_dir", str(mine))
    assert _tree(mine) == before


def test_an_archive_that_climbs_out_is_refused_and_writes_nothing_outside(case):
    root, project, run = case
    www = root / "www"
    www.mkdir()
    with tarfile.open(www / "evil.tar.gz", "w:gz") as tf:
        for name, data in (("art/ok.png", _png(1)), ("../../escaped.png", _png(2))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(www), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        before = _outside(root, project)
        url = f"http://127.0.0.1:{httpd.server_address[1]}/evil.tar.gz"
        pin = hashlib.sha256((www / "evil.tar.gz").read_bytes()).hexdigest()
        params = {"data": {"source": f"url:{url}", "sha256": pin, "download_dir": str(project / ".artgan" / "dl")}}
        _one_error_line(run("fetch", params=params), "..")
        assert _outside(root, project) == before
        assert not (project / "data" / "raw").exists()
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_hand_made_float_array_is_refused_by_train_naming_the_file(case):
    root, project, run = case
    processed = project / "data" / "processed"
    processed.mkdir(parents=True)
    np.save(processed / "images.npy", np.random.default_rng(0).random((40, 16, 16, 3)))
    before = _tree(processed)
    line = _one_error_line(
        run("train", params={"data": {"image_size": 16}, "train": {"steps": 2}}), "images.npy", "float64", "preprocess"
    )
    assert "uint8" in line
    assert _tree(processed) == before
    assert not (project / "models").exists()
