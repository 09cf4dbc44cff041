"""data.source schemes against real local files: a folder tree, an HTTP server on 127.0.0.1 serving
archives, Hugging Face datasets saved to disk, torchvision roots laid out as the real ones.

Every bad input is one clear error line naming what is wrong, leaves data/raw absent, and leaves the
user's files byte-identical.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import pickle
import shutil
import struct
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import isolate_mlflow, tiny_cfg
from PIL import Image

from pipeline.config import parse
from pipeline.errors import ArtganError

# ---- helpers ---------------------------------------------------------------------------------------


def png_bytes(seed: int, size: int = 20) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def snapshot(root: Path) -> dict:
    """Every entry under `root` (bytes names, links not followed): the link target or the content hash."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, os.fsencode(root))
            if os.path.islink(p):
                out[rel] = ("link", os.readlink(p))
            elif os.path.isdir(p):
                out[rel] = ("dir",)
            else:
                with open(p, "rb") as f:
                    out[rel] = ("file", hashlib.sha256(f.read()).hexdigest())
    return out


@pytest.fixture
def fetch(tmp_path, monkeypatch, mlflow_dir):
    """fetch(source, **data) -> the manifest; data/raw and the download cache live under tmp_path."""
    from pipeline.data import manifest
    from pipeline.stages import fetch as stage

    isolate_mlflow(monkeypatch, tmp_path, mlflow_dir)

    def run(source: str, **data):
        data = {"source": source, "max_images": 0, "download_dir": str(tmp_path / "downloads"), **data}
        cfg = parse(tiny_cfg(tmp_path, data=data))
        stage.run(cfg)
        return manifest.read(Path(cfg.data.raw_dir) / "manifest.parquet")

    run.raw = tmp_path / "data" / "raw"
    return run


def fetch_error(fetch, source: str, *needles: str, **data) -> str:
    with pytest.raises(ArtganError) as info:
        fetch(source, **data)
    msg = str(info.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, msg
    assert not fetch.raw.exists(), "a failed fetch must not leave data/raw behind"
    return msg


# ---- folder: ---------------------------------------------------------------------------------------


@pytest.fixture
def art(tmp_path):
    """A user's folder: two labelled sub-folders, a top-level image, a text file, an inside link."""
    root = tmp_path / "user" / "art"
    for i, rel in enumerate(
        [
            "Impressionism/monet.png",
            "Impressionism/renoir.png",
            "Cubism/picasso.png",
            "Cubism/deep/braque.png",
            "loose.png",
        ]
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(png_bytes(i))
    (root / "README.txt").write_text("notes")
    (root / "Cubism" / "again.png").symlink_to("picasso.png")  # inside the folder: the same file once
    return root


def test_folder_copies_images_with_sub_folder_labels_and_leaves_the_folder_as_it_was(fetch, art):
    before = snapshot(art)
    df = fetch(f"folder:{art}", label="label")
    assert snapshot(art) == before
    assert sorted(df["path"]) == sorted(
        [
            "images/Cubism/deep/braque.png",
            "images/Cubism/picasso.png",
            "images/Impressionism/monet.png",
            "images/Impressionism/renoir.png",
            "images/loose.png",
        ]
    )
    labels = dict(zip(df["path"], df["label"]))
    assert labels["images/Cubism/deep/braque.png"] == "Cubism"  # the first-level sub-folder
    assert labels["images/Impressionism/monet.png"] == "Impressionism"
    assert pd.isna(labels["images/loose.png"])
    for rel, sha in zip(df["path"], df["sha256"]):  # copied byte for byte
        src = art / rel.removeprefix("images/")
        assert hashlib.sha256(src.read_bytes()).hexdigest() == sha
        assert not (fetch.raw / rel).is_symlink()


def test_folder_fetch_says_how_to_refetch_after_the_folder_changes(fetch, art, capsys):
    fetch(f"folder:{art}")
    err = capsys.readouterr().err
    assert f"dvc does not watch folder:{art}" in err and "`dvc repro -s -f fetch` and then `dvc repro`" in err


def test_a_folder_label_other_than_label_is_refused_before_anything_is_copied(fetch, art):
    fetch_error(fetch, f"folder:{art}", "data.label", "'style'", "set data.label to label", label="style")


def test_folder_max_images_is_a_sorted_prefix(fetch, art):
    df = fetch(f"folder:{art}", max_images=2)
    assert list(df["path"]) == ["images/Cubism/deep/braque.png", "images/Cubism/picasso.png"]


def _loop_dir(root: Path) -> str:
    (root / "sub").mkdir()
    (root / "sub" / "up").symlink_to("..")
    return "sub/up"


def _loop_file(root: Path) -> str:
    (root / "a.png").symlink_to("b.png")
    (root / "b.png").symlink_to("a.png")
    return "a.png"


def _outside(root: Path) -> str:
    secret = root.parent / "secret.png"
    secret.write_bytes(png_bytes(9))
    (root / "cat.png").symlink_to(secret)
    return "cat.png"


def _outside_dir(root: Path) -> str:
    (root / "etc").symlink_to("/etc")
    return "etc"


def _broken(root: Path) -> str:
    (root / "gone.png").symlink_to("nowhere.png")
    return "gone.png"


def _no_images(root: Path) -> str:
    (root / "notes.txt").write_text("x")
    (root / "sub").mkdir()
    (root / "sub" / "data.csv").write_text("a,b\n")
    return "no images"


def _empty(root: Path) -> str:
    return "is empty"


def _non_utf8(root: Path) -> str:
    with open(os.path.join(os.fsencode(root), b"caf\xe9.png"), "wb") as f:
        f.write(png_bytes(3))
    return "not valid UTF-8"


@pytest.mark.parametrize(
    "make, why",
    [
        (_loop_dir, "symlink loop"),
        (_loop_file, "symlink loop"),
        (_outside, "outside the folder"),
        (_outside_dir, "outside the folder"),
        (_broken, "broken symlink"),
        (_no_images, ".png"),
        (_empty, "put images in it"),
        (_non_utf8, "rename it"),
    ],
)
def test_bad_folders_are_one_clear_error_and_stay_untouched(fetch, tmp_path, make, why):
    root = tmp_path / "user" / "art"
    root.mkdir(parents=True)
    (root / "ok.png").write_bytes(png_bytes(0)) if make not in (_no_images, _empty) else None
    needle = make(root)
    before = snapshot(tmp_path / "user")
    msg = fetch_error(fetch, f"folder:{root}", why, needle)
    assert str(root) in msg or needle in msg
    assert snapshot(tmp_path / "user") == before


@pytest.mark.parametrize(
    "where",
    [
        "the source itself",
        "a folder of the user's",
        "inside the source",
        "a folder of the user's with a manifest.parquet",
    ],
)
def test_data_raw_dir_never_replaces_or_writes_into_the_users_folders(fetch, art, tmp_path, where):
    """fetch replaces data.raw_dir whole: pointed at a folder artgan did not make (no .artgan marker, whatever
    files it holds), or into the source, it refuses before copying anything, and every file of the user's stays
    as it was."""
    mine = tmp_path / "user" / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    if where.endswith("manifest.parquet"):
        (mine / "photos").mkdir()
        (mine / "photos" / "holiday.png").write_bytes(png_bytes(9))
        pd.DataFrame({"path": ["photos/holiday.png"]}).to_parquet(mine / "manifest.parquet")
    raw_dir, needle = {
        "the source itself": (art, "is not an artgan output"),
        "a folder of the user's": (mine, "is not an artgan output"),
        "inside the source": (art / "raw", "is inside the source folder"),
        "a folder of the user's with a manifest.parquet": (mine, "but no .artgan marker"),
    }[where]
    before = snapshot(tmp_path / "user")
    with pytest.raises(ArtganError, match=rf"^data\.raw_dir: {raw_dir}.* {needle}") as info:
        fetch(f"folder:{art}", raw_dir=str(raw_dir))
    assert "\n" not in str(info.value)
    assert snapshot(tmp_path / "user") == before


def test_a_fetched_folder_is_replaced_by_the_next_fetch(fetch, art):
    first = fetch(f"folder:{art}")
    assert json.loads((fetch.raw / ".artgan").read_text())["stage"] == "fetch"  # what proves it is artgan's
    (fetch.raw / "stale.txt").write_text("from an earlier run")
    assert sorted(fetch(f"folder:{art}")["path"]) == sorted(first["path"])
    assert not (fetch.raw / "stale.txt").exists()


def test_missing_folder_is_named(fetch, tmp_path):
    fetch_error(fetch, f"folder:{tmp_path / 'nope'}", "does not exist", str(tmp_path / "nope"))


def test_unknown_scheme_is_refused_with_the_known_ones():
    with pytest.raises(ArtganError) as info:
        parse({"data": {"source": "kaggle:someone/art"}})
    known = str(info.value).split("known:")[1]
    for scheme in ("openmoji", "folder", "url", "hf", "torchvision"):
        assert scheme in known


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"source": "folder:x", "sha256": "ab" * 32}, "data.sha256"),
        ({"source": "folder:x", "filter": {"style": "Cubism"}}, "data.filter"),
    ],
)
def test_keys_of_another_scheme_are_not_silently_ignored(fetch, data, needle):
    source = data.pop("source")
    fetch_error(fetch, source, needle, **data)


def test_bad_sha256_pin_is_a_config_error():
    with pytest.raises(ArtganError, match="data.sha256"):
        parse({"data": {"sha256": "1234"}})


# ---- url: ------------------------------------------------------------------------------------------


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(3)
        return super().do_GET()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """An HTTP server on 127.0.0.1 serving a folder (yielded with its base URL)."""
    root = tmp_path_factory.mktemp("www")
    handler = lambda *a, **k: _Handler(*a, directory=str(root), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


ART = {
    "wikiart/Impressionism/monet.png": png_bytes(1),
    "wikiart/Impressionism/degas.png": png_bytes(2),
    "wikiart/Cubism/picasso.png": png_bytes(3),
}


def make_zip(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, target)
    return path


def make_tar(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None, hard: bool = False) -> Path:
    with tarfile.open(path, "w:gz", format=tarfile.GNU_FORMAT) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_url_archive_is_downloaded_verified_and_extracted(fetch, server, kind):
    www, base = server
    archive = (make_zip if kind == "zip" else make_tar)(www / f"art.{kind}", ART)
    pin = sha(archive)
    df = fetch(f"url:{base}/art.{kind}", sha256=pin, label="label")
    # the single top folder is stepped into: its sub-folders are the labels
    assert sorted(df["path"]) == [
        "images/Cubism/picasso.png",
        "images/Impressionism/degas.png",
        "images/Impressionism/monet.png",
    ]
    assert dict(zip(df["name"], df["label"])) == {
        "Cubism/picasso": "Cubism",
        "Impressionism/degas": "Impressionism",
        "Impressionism/monet": "Impressionism",
    }
    for rel, digest in zip(df["path"], df["sha256"]):
        assert hashlib.sha256(ART["wikiart/" + rel.removeprefix("images/")]).hexdigest() == digest
    assert not (fetch.raw / ".extract").exists()
    assert sha(archive) == pin
    # pinned and cached: a second fetch needs no server
    archive.rename(www / "moved")
    try:
        assert len(fetch(f"url:{base}/art.{kind}", sha256=pin)) == 3
    finally:
        (www / "moved").rename(archive)


def test_url_sha256_mismatch_is_an_error(fetch, server):
    www, base = server
    archive = make_zip(www / "pinned.zip", ART)
    before = sha(archive)
    fetch_error(fetch, f"url:{base}/pinned.zip", "SHA-256", before, "data.sha256", sha256="0" * 64)
    assert sha(archive) == before


def test_a_stale_pin_of_another_cached_archive_is_never_served_from_the_cache(fetch, server):
    """data.source moves to b.zip while data.sha256 still pins a.zip (cached): the cache is keyed by URL and hash,
    so b.zip is downloaded, and its hash names the mix-up, not a.zip's images credited to b.zip."""
    www, base = server
    a = make_zip(www / "stale_a.zip", ART)
    b = make_zip(www / "stale_b.zip", {"other/x.png": png_bytes(7), "other/y.png": png_bytes(8)})
    pin_a = sha(a)
    assert len(fetch(f"url:{base}/stale_a.zip", sha256=pin_a)) == 3  # a.zip now cached under its pin
    shutil.rmtree(fetch.raw)
    msg = fetch_error(
        fetch, f"url:{base}/stale_b.zip", "SHA-256", sha(b), pin_a, f"{base}/stale_a.zip", "data.sha256", sha256=pin_a
    )
    assert "wikiart" not in msg and "monet" not in msg  # nothing of a.zip's members under b.zip's URL
    df = fetch(f"url:{base}/stale_b.zip", sha256=sha(b))
    assert sorted(df["name"]) == ["x", "y"]
    assert set(df["source"]) == {f"url:{base}/stale_b.zip"}


def test_url_404_names_the_status_and_the_url(fetch, server):
    _, base = server
    fetch_error(fetch, f"url:{base}/missing.zip", "HTTP 404", f"{base}/missing.zip")


def test_url_timeout_is_a_clear_error(fetch, server):
    _, base = server
    t0 = time.monotonic()
    fetch_error(fetch, f"url:{base}/slow.zip", "no answer", "data.timeout", timeout=0.5)
    assert time.monotonic() - t0 < 3


def test_url_that_is_not_an_archive_is_refused(fetch, server):
    www, base = server
    (www / "page.html").write_text("<html></html>")
    fetch_error(fetch, f"url:{base}/page.html", "neither a zip nor a tar")


def test_url_needs_http(fetch):
    fetch_error(fetch, "url:ftp://example.org/a.zip", "http://")


def _bomb(path: Path) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("art/a.png", png_bytes(0))
        zf.writestr("art/huge.bmp", bytes(40 << 20))  # 40 MiB of zeros -> ~40 KiB
    return path


def _tar_bomb(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo("art/huge.bmp")
        info.size = 40 << 20
        tf.addfile(info, io.BytesIO(bytes(info.size)))
    return path


@pytest.mark.parametrize(
    "build, needles",
    [
        (lambda p: make_zip(p.with_suffix(".zip"), {"../evil.png": png_bytes(0)}), ["../evil.png", ".."]),
        (lambda p: make_tar(p, {"art/../../evil.png": png_bytes(0)}), ["art/../../evil.png", ".."]),
        (lambda p: make_tar(p, {"/tmp/evil.png": png_bytes(0)}), ["/tmp/evil.png", "absolute"]),
        (lambda p: make_zip(p.with_suffix(".zip"), {"/abs/evil.png": png_bytes(0)}), ["/abs/evil.png", "absolute"]),
        (
            lambda p: make_tar(p, {"art/a.png": png_bytes(0)}, {"art/b.png": "/etc/passwd"}),
            ["art/b.png", "symbolic link"],
        ),
        (
            lambda p: make_tar(p, {"art/a.png": png_bytes(0)}, {"art/c.png": "art/a.png"}, hard=True),
            ["art/c.png", "hard link"],
        ),
        (
            lambda p: make_zip(p.with_suffix(".zip"), {"art/a.png": png_bytes(0)}, {"art/b.png": "../../etc/passwd"}),
            ["art/b.png", "symbolic link"],
        ),
        (lambda p: _bomb(p.with_suffix(".zip")), ["art/huge.bmp", "decompression bomb"]),
        (lambda p: _tar_bomb(p), ["decompression bomb"]),
        (lambda p: make_tar(p, {"art/caf\udce9.png": png_bytes(0)}), ["not valid UTF-8"]),
        (lambda p: make_tar(p, {"art/notes.txt": b"x"}), ["archive http", ".tar.gz!art has no images"]),
        (lambda p: make_zip(p.with_suffix(".zip"), {"notes.txt": b"x"}), ["archive http", ".zip has no images"]),
    ],
    ids=[
        "zip-dotdot",
        "tar-dotdot",
        "tar-absolute",
        "zip-absolute",
        "tar-symlink",
        "tar-hardlink",
        "zip-symlink",
        "zip-bomb",
        "tar-bomb",
        "tar-non-utf8",
        "no-images",
        "no-images-flat",
    ],
)
def test_unsafe_or_useless_archives_are_refused_and_nothing_escapes(fetch, server, tmp_path, build, needles):
    www, base = server
    archive = build(www / f"bad-{tmp_path.name}.tar.gz")
    before = sha(archive)
    fetch_error(fetch, f"url:{base}/{archive.name}", *needles)
    assert sha(archive) == before
    assert not (tmp_path / "evil.png").exists() and not Path("/tmp/evil.png").exists()
    assert not (tmp_path / "data" / "evil.png").exists()
    leftovers = [p for p in (tmp_path / "data").iterdir()] if (tmp_path / "data").exists() else []
    assert leftovers == [], leftovers


# ---- hf: -------------------------------------------------------------------------------------------

STYLES = ["Cubism", "Impressionism", "Realism"]


@pytest.fixture(scope="module")
def hf_saved(tmp_path_factory):
    """A dataset with the schema of huggan/wikiart (image, artist, style as ClassLabel), saved two ways."""
    import datasets

    root = tmp_path_factory.mktemp("hf")
    n = 9
    images = [png_bytes(100 + i) for i in range(n)]
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "artist": datasets.Value("string"),
            "style": datasets.ClassLabel(names=STYLES),
        }
    )
    ds = datasets.Dataset.from_dict(
        {
            "image": [{"bytes": b, "path": None} for b in images],
            "artist": [f"artist{i % 2}" for i in range(n)],
            "style": [i % 3 for i in range(n)],
        },
        features=features,
    )
    ds.save_to_disk(str(root / "saved"))
    (root / "parquet" / "data").mkdir(parents=True)
    ds.to_parquet(str(root / "parquet" / "data" / "train-00000-of-00001.parquet"))
    plain = datasets.Dataset.from_dict({"text": ["a", "b"], "style": [0, 1]})
    plain.save_to_disk(str(root / "no_images"))
    return root, images


@pytest.mark.parametrize("layout", ["saved", "parquet"])
def test_hf_dataset_with_filter_and_label(fetch, hf_saved, layout):
    root, images = hf_saved
    before = snapshot(root)
    df = fetch(f"hf:{root / layout}", filter={"style": "Impressionism"}, label="style")
    assert snapshot(root) == before
    assert len(df) == 3  # rows 1, 4, 7
    assert set(df["style"]) == {"Impressionism"} and set(df["label"]) == {"Impressionism"}
    wanted = {hashlib.sha256(images[i]).hexdigest() for i in (1, 4, 7)}
    assert set(df["sha256"]) == wanted  # the stored bytes, not re-encoded


def test_hf_filter_on_a_string_column_and_max_images(fetch, hf_saved):
    root, _ = hf_saved
    df = fetch(f"hf:{root / 'saved'}", filter={"artist": "artist0"}, max_images=2)
    assert len(df) == 2 and df["label"].isna().all()


@pytest.mark.parametrize(
    "source, data, needles",
    [
        ("no_images", {}, ["no image column", "text, style"]),
        ("saved", {"label": "genre"}, ["data.label", "'genre'", "artist", "style"]),
        ("saved", {"filter": {"genre": "x"}}, ["data.filter", "'genre'"]),
        ("saved", {"filter": {"style": "Impresionism"}}, ["data.filter", "Impresionism", "Impressionism"]),
        ("saved", {"filter": {"artist": "nobody"}}, ["data.filter", "no row"]),
        ("missing", {}, ["not found", "missing"]),
    ],
)
def test_hf_errors_name_the_column(fetch, hf_saved, source, data, needles):
    root, _ = hf_saved
    before = snapshot(root)
    fetch_error(fetch, f"hf:{root / source}", *needles, **data)
    assert snapshot(root) == before


def test_hf_rows_that_are_not_images_are_fetched_and_quarantined_by_validate(fetch, tmp_path):
    # as a folder's bad file: copied as stored, then validate quarantines it with its reason; the rest is usable
    import datasets

    from pipeline.stages import validate

    cells = [png_bytes(200 + i) for i in range(12)]
    cells[3] = b"this is not a picture"
    cells[5] = b"\xff\xd8\xff\xe0" + b"garbage" * 10  # a JPEG marker, then nothing PIL can read
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": b, "path": None} for b in cells]}, features=datasets.Features({"image": datasets.Image()})
    )
    ds.save_to_disk(str(tmp_path / "bad_rows"))
    df = fetch(f"hf:{tmp_path / 'bad_rows'}")
    assert len(df) == 12
    assert {hashlib.sha256(b).hexdigest() for b in cells} == set(df["sha256"])  # every row's bytes, as stored
    cfg = parse(
        tiny_cfg(
            tmp_path,
            data={
                "source": f"hf:{tmp_path / 'bad_rows'}",
                "max_images": 0,
                "download_dir": str(tmp_path / "downloads"),
            },
        )
    )
    out = validate.run(cfg)
    assert out["ok"] == 10 and out["by_reason"] == {"not_an_image": 1, "truncated": 1}


def test_hf_fetch_in_a_fresh_process_at_the_default_timeout(hf_saved, tmp_path):
    # the command as a user runs it: huggingface_hub is first imported after artgan set its timeouts
    import subprocess
    import sys

    from helpers import write_params

    root, images = hf_saved
    raw = tiny_cfg(
        tmp_path, data={"source": f"hf:{root / 'saved'}", "max_images": 0, "download_dir": str(tmp_path / "downloads")}
    )
    params = write_params(tmp_path / "params.yaml", raw)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MLFLOW_", "DVC_"))}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    r = subprocess.run(
        [sys.executable, "-m", "pipeline", "fetch", "--params", str(params)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(list((tmp_path / "data" / "raw" / "images").rglob("*.png"))) == len(images)


# ---- torchvision: ----------------------------------------------------------------------------------


def _idx(path: Path, arr: np.ndarray) -> None:
    magic = struct.pack(">HBB", 0, 0x08, arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
    path.write_bytes(magic + arr.astype(np.uint8).tobytes())


@pytest.mark.parametrize("name", ["MNIST", "FashionMNIST"])
def test_torchvision_mnist_layout(fetch, tmp_path, name):
    raw = tmp_path / "downloads" / "torchvision" / name / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    labels = np.arange(12) % 10
    _idx(raw / "train-images-idx3-ubyte", train)
    _idx(raw / "train-labels-idx1-ubyte", labels)
    _idx(raw / "t10k-images-idx3-ubyte", train[:2])
    _idx(raw / "t10k-labels-idx1-ubyte", labels[:2])
    before = snapshot(tmp_path / "downloads")
    df = fetch(f"torchvision:{name}", label="label")
    assert len(df) == 12 and set(df["mode"]) == {"L"} and set(df["width"]) == {28}
    first = np.asarray(Image.open(fetch.raw / df["path"][0]))
    np.testing.assert_array_equal(first, train[0])  # lossless
    import torchvision.datasets as tvd

    classes = getattr(tvd, name).classes
    assert list(df["label"]) == [classes[i] for i in labels]
    assert snapshot(tmp_path / "downloads") == before  # nothing downloaded or changed


def test_torchvision_cifar10_layout(fetch, tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    base = tmp_path / "downloads" / "torchvision" / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(1)
    sums = {}

    def dump(name: str, obj: dict) -> None:
        (base / name).write_bytes(pickle.dumps(obj))
        sums[name] = hashlib.md5((base / name).read_bytes()).hexdigest()

    batches = []
    for b in range(1, 6):
        data = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
        batches.append(data)
        dump(f"data_batch_{b}", {"data": data, "labels": [b % 10, (b + 1) % 10]})
    dump("test_batch", {"data": batches[0], "labels": [0, 1]})
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    dump("batches.meta", {"label_names": names})
    # torchvision checks the published MD5s; the local fixture files have their own (the loader is real)
    monkeypatch.setattr(tvd.CIFAR10, "train_list", [[f"data_batch_{b}", sums[f"data_batch_{b}"]] for b in range(1, 6)])
    monkeypatch.setattr(tvd.CIFAR10, "test_list", [["test_batch", sums["test_batch"]]])
    monkeypatch.setattr(
        tvd.CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names", "md5": sums["batches.meta"]}
    )
    df = fetch("torchvision:CIFAR10", label="label")
    assert len(df) == 10 and set(df["mode"]) == {"RGB"} and set(df["width"]) == {32}
    first = np.asarray(Image.open(fetch.raw / df["path"][0]))
    np.testing.assert_array_equal(first, batches[0][0].reshape(3, 32, 32).transpose(1, 2, 0))
    assert list(df["label"][:2]) == ["automobile", "bird"]


def test_torchvision_unknown_dataset(fetch):
    fetch_error(fetch, "torchvision:ImageNet", "ImageNet", "MNIST, FashionMNIST, CIFAR10, CelebA")


def test_a_file_that_only_looks_like_an_image_is_kept_for_validate_to_quarantine(fetch, tmp_path):
    root = tmp_path / "user" / "art"
    root.mkdir(parents=True)
    (root / "ok.png").write_bytes(png_bytes(0))
    (root / "fake.jpg").write_text("not a picture")
    (root / "zero.png").write_bytes(b"")
    before = snapshot(root)
    df = fetch(f"folder:{root}").set_index("path")
    assert list(df.index) == ["images/fake.jpg", "images/ok.png", "images/zero.png"]
    for name in ("fake.jpg", "zero.png"):  # a row with no header fields: validate quarantines it
        assert df.loc[f"images/{name}", ["width", "height", "mode", "format"]].isna().all()
    assert df.loc["images/ok.png", "width"] == 20 and df.loc["images/ok.png", "format"] == "PNG"
    assert (fetch.raw / "images" / "fake.jpg").read_text() == "not a picture"
    assert snapshot(root) == before
