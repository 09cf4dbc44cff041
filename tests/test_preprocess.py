"""preprocess on real image files made with Pillow: EXIF orientation, every mode to RGB with the expected
pixels, the three resize policies' geometry, exact and near duplicates dropped and reported (a different
image kept), quarantined rows skipped, raw files untouched, row i of images.npy = row i of the manifest,
the dataset digest stable and logged as the training run's MLflow dataset input."""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import isolate_mlflow, tiny_cfg
from PIL import Image

from pipeline.config import parse
from pipeline.data import decode, dedup, npy
from pipeline.data.digest import dataset_digest
from pipeline.errors import ArtganError
from pipeline.stages import preprocess as P

SIZE = 16
RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


def load(path: Path, size: int = SIZE, policy: str = "center-crop", background=WHITE) -> np.ndarray:
    return decode.to_rgb_square(path, size, background, policy)


def close(a, b, tol: int = 2) -> bool:
    return bool(np.all(np.abs(np.asarray(a, int) - np.asarray(b, int)) <= tol))


# ---- orientation, modes --------------------------------------------------------------------------


def test_exif_rotated_jpeg_comes_out_upright(tmp_path):
    a = np.zeros((20, 40, 3), np.uint8)  # stored landscape: left half red, right half blue
    a[:, :20] = RED
    a[:, 20:] = BLUE
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90° clockwise: the left half goes to the top
    Image.fromarray(a).save(tmp_path / "r.jpg", quality=95, exif=exif)
    out = load(tmp_path / "r.jpg", policy="stretch")
    assert close(out[2, 8], RED, 40) and close(out[13, 8], BLUE, 40)
    assert close(out[8, 2], out[8, 13], 40) is not False  # left and right columns alike: it was rotated


def _save(im: Image.Image, path: Path, **kw) -> Path:
    im.save(path, **kw)
    return path


def test_palette_with_transparency_is_composited_on_the_background(tmp_path):
    im = Image.new("P", (SIZE, SIZE), 0)
    im.putpalette([*RED, *GREEN] + [0] * 762)
    im.paste(1, (SIZE // 2, 0, SIZE, SIZE))
    path = _save(im, tmp_path / "p.png", transparency=0)  # index 0 (red) transparent
    out = load(path, background=BLUE)
    assert close(out[4, 2], BLUE, 0) and close(out[4, 12], GREEN, 0)


def test_la_rgba_cmyk_16bit_gray_bilevel_to_rgb(tmp_path):
    la = Image.new("LA", (SIZE, SIZE), (200, 0))
    la.paste((200, 255), (SIZE // 2, 0, SIZE, SIZE))
    out = load(_save(la, tmp_path / "la.png"), background=(10, 20, 30))
    assert close(out[3, 2], (10, 20, 30), 0) and close(out[3, 12], (200, 200, 200), 0)

    rgba = Image.new("RGBA", (SIZE, SIZE), (255, 0, 0, 128))  # half-transparent red on white
    assert close(load(_save(rgba, tmp_path / "rgba.png"))[5, 5], (255, 127, 127), 1)

    cmyk = Image.new("CMYK", (SIZE, SIZE), (0, 0, 0, 0))
    cmyk.paste((255, 0, 0, 0), (0, 0, SIZE // 2, SIZE))  # full cyan on the left
    out = load(_save(cmyk, tmp_path / "c.tif"))
    assert close(out[3, 2], (0, 255, 255), 0) and close(out[3, 12], WHITE, 0)

    a16 = np.zeros((SIZE, SIZE), np.uint16)
    a16[:, 4:8] = 128 * 257
    a16[:, 8:] = 65535
    im16 = Image.fromarray(a16)
    assert im16.mode.startswith("I;16")
    path = _save(im16, tmp_path / "g16.png")
    assert Image.open(path).mode.startswith("I")
    out = load(path)
    assert close(out[3, 1], BLACK, 0) and close(out[3, 5], (128, 128, 128), 0) and close(out[3, 12], WHITE, 0)

    assert close(load(_save(Image.new("L", (SIZE, SIZE), 77), tmp_path / "l.png"))[5, 5], (77, 77, 77), 0)
    assert close(load(_save(Image.new("1", (SIZE, SIZE), 1), tmp_path / "b.png"))[5, 5], WHITE, 0)


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (SIZE, SIZE), c) for c in (RED, BLUE, GREEN)]
    path = tmp_path / "a.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(path).n_frames == 3
    out = load(path)
    assert out.shape == (SIZE, SIZE, 3) and close(out[8, 8], RED, 0)


# ---- resize policies -------------------------------------------------------------------------------


@pytest.fixture
def wide(tmp_path) -> Path:
    a = np.zeros((32, 64, 3), np.uint8)  # 64×32: red | green (the centred square) | blue
    a[:, :16] = RED
    a[:, 16:48] = GREEN
    a[:, 48:] = BLUE
    return _save(Image.fromarray(a), tmp_path / "wide.png")


def test_center_crop_keeps_the_centred_square(wide):
    out = load(wide, policy="center-crop")
    assert out.shape == (SIZE, SIZE, 3) and close(out, np.broadcast_to(GREEN, out.shape), 0)


def test_pad_keeps_the_whole_image_on_the_background(wide):
    out = load(wide, policy="pad", background=BLACK)
    assert close(out[:4], 0, 0) and close(out[12:], 0, 0)  # 16×8 content centred, background above and below
    assert close(out[8, 0], RED, 8) and close(out[8, 8], GREEN, 8) and close(out[8, 15], BLUE, 8)


def test_stretch_squeezes_the_whole_image(wide):
    out = load(wide, policy="stretch")
    for row in (0, 8, 15):
        assert close(out[row, 0], RED, 8) and close(out[row, 8], GREEN, 8) and close(out[row, 15], BLUE, 8)


def test_downscaling_is_antialiased(tmp_path):
    a = np.zeros((256, 256, 3), np.uint8)
    a[:, ::2] = 255  # one-pixel stripes: any antialiased filter gives mid-grey, point sampling black or white
    out = load(_save(Image.fromarray(a), tmp_path / "stripes.png"))
    assert close(out[2:-2, 2:-2], 128, 8)


def test_unknown_resize_policy_is_a_config_error():
    with pytest.raises(ArtganError, match="preprocess.resize"):
        parse({"preprocess": {"resize": "fill"}})


# ---- hashes and the duplicate search ----------------------------------------------------------------


def test_close_pairs_match_brute_force():
    rng = np.random.default_rng(0)
    h = rng.integers(0, 1 << 62, 400, dtype=np.int64).astype(np.uint64)
    h[200:] = h[:200] ^ (np.uint64(1) << rng.integers(0, 64, 200).astype(np.uint64))  # planted pairs
    h[:50] &= np.uint64(0xFFFF)  # a crowded band: the blockwise path
    for dmax in (0, 2, 4):
        p, q, d = dedup.close_pairs(h, dmax)
        full = np.bitwise_count(h[:, None] ^ h[None, :])
        i, j = np.nonzero((full <= dmax) & np.triu(np.ones_like(full, bool), 1))
        assert set(zip(p.tolist(), q.tolist())) == set(zip(i.tolist(), j.tolist()))
        assert np.array_equal(d, full[p, q])


def test_near_duplicates_greedy_keep_first_matches_the_definition():
    rng = np.random.default_rng(1)
    n = 300
    h = (rng.integers(0, 1 << 12, n).astype(np.uint64)) * np.uint64(0x1001001001001)  # many close hashes
    protos = rng.integers(0, 256, (4, 16, 16, 3))
    noise = rng.integers(0, 3, (n, 16, 16, 3)) * 4 * (rng.random((n, 1, 1, 1)) < 0.5)  # half: 0..2.7 apart
    thumbs = np.clip(protos[rng.integers(0, 4, n)] + noise, 0, 255).astype(np.uint8)
    kept_by, dist, diff = dedup.near_duplicates(h, thumbs, 4, 1.4)
    flat = thumbs.reshape(n, -1).astype(int)
    kept = []
    for j in range(n):  # the definition, directly
        hits = [i for i in kept if np.bitwise_count(h[i] ^ h[j]) <= 4 and np.abs(flat[i] - flat[j]).mean() <= 1.4]
        if hits:
            assert kept_by[j] in hits and dist[j] == min(np.bitwise_count(h[i] ^ h[j]) for i in hits)
        else:
            assert kept_by[j] == -1
            kept.append(j)
    assert 0 < len(kept) < n


def test_phash_is_imagehash_phash():
    # imagehash.phash: DCT-II of the 32×32 grayscale, the 8×8 low frequencies against their median, row-major
    from scipy.fftpack import dct

    rng = np.random.default_rng(2)
    thumbs = rng.integers(0, 256, (5, 32, 32), dtype=np.uint8)
    for t, h in zip(thumbs, dedup.phash(thumbs)):
        low = dct(dct(t.astype(float), axis=0), axis=1)[:8, :8]
        bits = (low > np.median(low)).ravel()
        assert int(h) == int("".join("1" if b else "0" for b in bits), 2)


# ---- the stage on a folder --------------------------------------------------------------------------


def _pattern(seed: int, side: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.zeros((side, side, 3), np.uint8)
    a[:] = rng.integers(0, 256, 3)
    for _ in range(6):
        x, y = rng.integers(0, side - 24, 2)
        w, h = rng.integers(12, 40, 2)
        a[y : y + h, x : x + w] = rng.integers(0, 256, 3)
    return a


def make_dataset(root: Path, cfg_over: dict | None = None) -> tuple:
    """data/raw/ with 12 distinct images, an exact copy, a JPEG re-save (near), a corrupt quarantined file,
    and data/validated/manifest.parquet as validate writes it."""
    raw = root / "data" / "raw"
    (raw / "images").mkdir(parents=True)
    rows = []

    def add(name: str, data: bytes, label: str, status: str = "ok") -> None:
        rel = f"images/{name}"
        (raw / rel).write_bytes(data)
        rows.append(
            {
                "path": rel,
                "name": name,
                "sha256": hashlib.sha256(data).hexdigest(),
                "width": 96,
                "height": 96,
                "mode": "RGB",
                "format": "PNG",
                "bytes": len(data),
                "label": label,
                "source": "test",
                "status": status,
                "reason": "" if status == "ok" else "undecodable",
            }
        )

    def png(a: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
        b = io.BytesIO()
        Image.fromarray(a).save(b, fmt, **kw)
        return b.getvalue()

    for i in range(12):
        add(f"img{i:02d}.png", png(_pattern(i)), "ab"[i % 2])
        if i == 3:
            add("copy_of_03.png", png(_pattern(3)), "b")  # exact: same bytes
            add("broken.png", b"\x89PNG not really", "a", status="quarantined")
        if i == 6:
            add("resaved_05.jpg", png(_pattern(5), "JPEG", quality=92), "b")  # near
    df = pd.DataFrame(rows)
    (root / "data" / "validated").mkdir(parents=True)
    df.to_parquet(root / "data" / "validated" / "manifest.parquet", index=False)
    # a JPEG re-save of a 48 px image differs by ~1.3 in 16×16 thumbnails: above the OpenMoji-safe default 1.0
    cfg = parse(tiny_cfg(root, **(cfg_over or {"preprocess": {"workers": 1, "near_duplicate_max_diff": 2.0}})))
    return cfg, df


def _tree_digest(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("pre")
    cfg, df = make_dataset(root)
    before = _tree_digest(root / "data" / "raw")
    out = root / "out"
    out.mkdir()
    result = P.build(cfg, out, progress=False)
    return cfg, df, out, result, before


def test_duplicates_are_dropped_and_reported_and_quarantined_rows_skipped(built):
    cfg, df, out, result, _ = built
    kept = pd.read_parquet(out / "manifest.parquet")
    assert result["images"] == 12 and len(kept) == 12
    assert result["exact_duplicates"] == 1 and result["near_duplicates"] == 1 and result["quarantined_skipped"] == 1
    assert set(kept["path"]) == {f"images/img{i:02d}.png" for i in range(12)}  # every different image kept
    assert "status" not in kept.columns and "reason" not in kept.columns
    rows = {r["removed"]: r for r in result["duplicates"]}
    assert (
        rows["images/copy_of_03.png"]["kept"] == "images/img03.png" and rows["images/copy_of_03.png"]["kind"] == "exact"
    )
    near = rows["images/resaved_05.jpg"]
    assert near["kept"] == "images/img05.png" and near["kind"] == "near" and near["distance"] <= 4
    assert near["mean_abs_diff"] <= 2.0


def test_images_row_i_is_manifest_row_i(built):
    cfg, _, out, _, _ = built
    images = np.load(out / "images.npy")
    kept = pd.read_parquet(out / "manifest.parquet")
    assert images.shape == (12, SIZE, SIZE, 3) and images.dtype == np.uint8
    for i, rel in enumerate(kept["path"]):
        assert np.array_equal(images[i], load(Path(cfg.data.raw_dir) / rel))


def test_raw_files_are_byte_identical_afterwards(built):
    cfg, _, _, _, before = built
    assert _tree_digest(Path(cfg.data.raw_dir)) == before


def test_a_pool_of_workers_writes_the_same_array(built, tmp_path, monkeypatch):
    cfg, _, out, result, _ = built
    monkeypatch.setattr(npy, "CHUNK", 4)  # several chunks over 2 spawned processes
    cfg2 = cfg.model_copy(update={"preprocess": cfg.preprocess.model_copy(update={"workers": 2})})
    r2 = P.build(cfg2, tmp_path, progress=False)
    assert np.array_equal(np.load(tmp_path / "images.npy"), np.load(out / "images.npy"))
    assert r2["dataset_digest"] == result["dataset_digest"]


def test_near_duplicates_can_be_kept(tmp_path):
    cfg, _ = make_dataset(tmp_path, {"preprocess": {"workers": 1, "near_duplicate_max_diff": -1}})
    result = P.build(cfg, tmp_path, progress=False)
    assert result["images"] == 13 and result["near_duplicates"] == 0 and result["exact_duplicates"] == 1


def test_digest_is_stable_and_covers_paths_hashes_labels(built):
    _, _, out, result, _ = built
    df = pd.read_parquet(out / "manifest.parquet")
    assert result["dataset_digest"] == dataset_digest(df) == dataset_digest(df.copy())
    assert len(result["dataset_digest"]) == 64
    for col, value in (("label", "z"), ("sha256", "0" * 64), ("path", "images/other.png")):
        changed = df.copy()
        changed.loc[3, col] = value
        assert dataset_digest(changed) != result["dataset_digest"]
    assert dataset_digest(df.iloc[::-1]) != result["dataset_digest"]  # order is part of the dataset
    assert dataset_digest(df.assign(bytes=0)) == result["dataset_digest"]  # file metadata is not


def test_a_missing_validated_manifest_says_to_run_validate(tmp_path):
    cfg, _ = make_dataset(tmp_path)
    (tmp_path / "data" / "validated" / "manifest.parquet").unlink()
    with pytest.raises(ArtganError, match="artgan validate"):
        P.build(cfg, tmp_path, progress=False)


# ---- the whole stage and the training run ------------------------------------------------------------


def test_stage_outputs_and_the_training_runs_dataset_input(tmp_path, monkeypatch):
    import mlflow

    from pipeline.stages import train

    cfg, _ = make_dataset(
        tmp_path,
        {
            "preprocess": {"workers": 1, "fid_real_images": 6, "fid_batch_size": 6, "near_duplicate_max_diff": 2.0},
            "train": {
                "steps": 2,
                "batch_size": 4,
                "sample_every": 100,
                "out_dir": str(tmp_path / "models"),
                "checkpoint_dir": str(tmp_path / "ckpt"),
            },
        },
    )
    isolate_mlflow(monkeypatch, tmp_path)
    figures = P.run(cfg)
    processed = Path(cfg.data.processed_dir)
    stats = np.load(processed / "fid_stats.npz")
    assert str(stats["digest"]) == figures["dataset_digest"]
    assert len(stats["indices"]) == 6 and stats["features"].shape == (6, 2048) and int(stats["image_size"]) == SIZE
    with open(Path(cfg.reports_dir) / "duplicates.csv") as f:
        report = list(csv.DictReader(f))
    assert {(r["removed"], r["kind"]) for r in report} == {
        ("images/copy_of_03.png", "exact"),
        ("images/resaved_05.jpg", "near"),
    }

    result = train.run(cfg)
    run = mlflow.get_run(result["run_id"])
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1
    ds, tags = inputs[0].dataset, {t.key: t.value for t in inputs[0].tags}
    assert ds.digest == figures["dataset_digest"][:32] and tags["sha256"] == figures["dataset_digest"]
    assert tags["mlflow.data.context"] == "training"
    assert run.data.tags["dataset_digest"] == figures["dataset_digest"]
    assert ds.source_type == "local" or "manifest.parquet" in ds.source
