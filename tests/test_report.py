"""report: reports/index.html opens in headless Chromium with every image loaded, survives a move of the
reports folder (relative paths), says "not available" for missing inputs, escapes text, shows failures.

Everything here is real: PNG grids and an animated GIF written by Pillow, matplotlib curves, a parquet
manifest, a great-expectations-shaped validation.json. The browser is Debian's `chromium` (make setup).
"""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from helpers import tiny_cfg
from PIL import Image

from pipeline.config import Config
from pipeline.report import write_report

CHROMIUM = Path("/usr/bin/chromium")
CLASSES = ("animals", "flags")
# real, grid, grid_raw, 2 class grids, progress, interp.png, interp.gif, loss and FID curves, memorisation
ALL_IMAGES = 9 + len(CLASSES)
MIN_SHOWN = 256  # px: the displayed width of every sample grid, progress strip and memorisation picture
XSS = "<script>alert('x')</script>"


# ----------------------------------------------------------------------------------------- fixtures
def noise_grid(path: Path, seed: int, tiles: int = 8, tile: int = 16) -> None:
    """A tiles×tiles grid of random colour tiles with white gutters, like render's grids."""
    rng = np.random.default_rng(seed)
    side = tiles * (tile + 2) + 2
    arr = np.full((side, side, 3), 255, np.uint8)
    for i in range(tiles):
        for j in range(tiles):
            y, x = 2 + i * (tile + 2), 2 + j * (tile + 2)
            arr[y : y + tile, x : x + tile] = rng.integers(0, 256, (tile, tile, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def animated_gif(path: Path, frames: int = 6) -> None:
    rng = np.random.default_rng(7)
    imgs = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(frames)]
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=120, loop=0)
    with Image.open(path) as im:
        assert im.is_animated and im.n_frames == frames


def curve_png(path: Path, series: dict[str, list[float]], ylabel: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3))
    ax = fig.subplots()
    for name, ys in series.items():
        ax.plot(range(0, 10 * len(ys), 10), ys, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.legend()
    fig.savefig(path, dpi=80)


def expectation(type_: str, success: bool, observed: object = None, **kwargs) -> dict:
    result = (
        {"observed_value": observed}
        if observed is not None
        else {"element_count": 40, "unexpected_count": 0 if success else 3, "partial_unexpected_list": []}
    )
    return {
        "exception_info": {"exception_message": None, "exception_traceback": None, "raised_exception": False},
        "expectation_config": {
            "kwargs": {"batch_id": "manifest-images", **kwargs},
            "meta": {},
            "severity": "critical",
            "type": type_,
        },
        "meta": {},
        "result": result,
        "success": success,
    }


def validation_json(success: bool = True) -> dict:
    results = [
        expectation("expect_table_row_count_to_be_between", True, 40, min_value=10),
        expectation("expect_column_values_to_be_in_set", success, column="mode", value_set=["RGB", "RGBA"]),
        expectation("expect_column_values_to_be_unique", True, column="sha256"),
    ]
    ok = sum(r["success"] for r in results)
    return {
        "summary": {
            "success": success,
            "images": 40,
            "ok": 40,
            "quarantined": 0,
            "by_reason": {},
            "evaluated_expectations": 3,
            "successful_expectations": ok,
            "failures": [] if success else ["expect_column_values_to_be_in_set ..."],
        },
        "result": {
            "success": success,
            "results": results,
            "meta": {"great_expectations_version": "1.24.1"},
            "statistics": {
                "evaluated_expectations": 3,
                "successful_expectations": ok,
                "unsuccessful_expectations": 3 - ok,
                "success_percent": 100.0 * ok / 3,
            },
        },
    }


def manifest(path: Path, labels: list[str]) -> None:
    n = len(labels)
    df = pd.DataFrame(
        {
            "path": [f"images/{i:04d}.png" for i in range(n)],
            "name": [f"{i:04d}" for i in range(n)],
            "sha256": [f"{i:064x}" for i in range(n)],
            "width": [72] * n,
            "height": [72] * n,
            "mode": ["RGBA"] * n,
            "format": ["PNG"] * n,
            "bytes": [1500 + i for i in range(n)],
            "category": labels,
        }
    )
    df["label"] = pd.Series([None] * n, dtype="string")
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False)


def build(
    tmp_path: Path,
    *,
    missing: tuple[str, ...] = (),
    labels: list[str] | None = None,
    metrics: dict | None = None,
    valid: bool = True,
    **cfg_overrides,
) -> Config:
    """A complete reports dir (less `missing`, paths relative to it) and its Config; writes index.html."""
    data = {"label": "category", **cfg_overrides.pop("data", {})}
    cfg = Config.model_validate(tiny_cfg(tmp_path, data=data, **cfg_overrides))
    reports, render = Path(cfg.reports_dir), Path(cfg.reports_dir) / "render"
    render.mkdir(parents=True)
    labels = labels or [CLASSES[i % 2] for i in range(40)]
    files = {
        "render/grid.png": lambda p: noise_grid(p, 0),
        "render/grid_raw.png": lambda p: noise_grid(p, 1),
        "render/real.png": lambda p: noise_grid(p, 5),
        "render/progress.png": lambda p: noise_grid(p, 2, tiles=4),
        "render/interp.png": lambda p: noise_grid(p, 3, tiles=1),
        "render/interp.gif": animated_gif,
        "render/loss_curves.png": lambda p: curve_png(
            p, {"loss_d": [1.4, 1.1, 0.9, 0.8], "loss_g": [0.7, 1, 1.3, 1.2]}, "loss"
        ),
        "render/fid_curve.png": lambda p: curve_png(p, {"fid": [310, 240, 190, 170]}, "FID"),
        "memorisation.png": lambda p: noise_grid(p, 4, tiles=2),
        "metrics.json": lambda p: p.write_text(
            json.dumps(
                metrics
                or {
                    "fid": 171.25,
                    "fid_n_fake": 1024,
                    "fid_n_real": 2048,
                    "kid_mean": 0.1234,
                    "kid_std": 0.0021,
                    "precision": 0.61,
                    "recall": 0.33,
                    "copy_rate": 0.0117,
                }
            )
        ),
        "validation.json": lambda p: p.write_text(json.dumps(validation_json(valid))),
        "manifest": lambda _: manifest(Path(cfg.data.processed_dir) / "manifest.parquet", labels),
    }
    files.update(
        {f"render/class_grids/class_{k:03d}.png": (lambda p, k=k: noise_grid(p, 10 + k)) for k in range(len(CLASSES))}
    )
    for rel, make in files.items():
        if rel not in missing and not (rel.startswith("render/class_grids") and "class_grids" in missing):
            (reports / rel).parent.mkdir(parents=True, exist_ok=True)
            make(reports / rel)
    write_report(cfg)
    return cfg


def open_report(browser, index: Path) -> dict:
    """Load index.html; return its images' load state and displayed size, its text (closed <details> left out,
    as a reader sees it), the text with every <details> opened, script count and a screenshot."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("requestfailed", lambda r: errors.append(r.url))
    try:
        page.goto(index.resolve().as_uri(), wait_until="load")
        imgs = page.evaluate("""() => Array.from(document.images, i =>
            ({src: i.getAttribute('src'), alt: i.alt, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight,
              shown: i.getBoundingClientRect().width, top: i.getBoundingClientRect().top,
              link: i.closest('a') ? i.closest('a').getAttribute('href') : null,
              rendering: getComputedStyle(i).imageRendering}))""")
        text = page.inner_text("body")
        png = page.screenshot(full_page=True)
        page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
        return {
            "imgs": imgs,
            "text": text,
            "opened": page.inner_text("body"),
            "failed": errors,
            "scripts": page.evaluate("document.scripts.length"),
            "png": png,
        }
    finally:
        page.close()


def assert_all_loaded(view: dict, expected: int) -> None:
    imgs = view["imgs"]
    assert len(imgs) == expected, [i["src"] for i in imgs]
    broken = [i["src"] for i in imgs if not (i["complete"] and i["w"] > 0 and i["h"] > 0)]
    assert not broken, f"images that did not load: {broken}"
    assert not view["failed"], f"failed requests: {view['failed']}"
    for i in imgs:
        assert i["alt"], i["src"]
        assert not re.match(r"^([a-z]+:|/)", i["src"]), f"not a relative path: {i['src']}"


def assert_not_blank(png: bytes) -> None:
    arr = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert arr.shape[0] > 900 and arr.shape[1] >= 1200, arr.shape
    std = float(arr.std())
    assert std > 20, f"screenshot looks blank (pixel std {std:.1f})"
    packed = (arr[..., 0].astype(np.uint32) << 16) | (arr[..., 1].astype(np.uint32) << 8) | arr[..., 2]
    colours = len(np.unique(packed))
    assert colours > 1000, f"screenshot has only {colours} colours"


# -------------------------------------------------------------------------------------------- tests
def test_every_image_loads_and_the_page_is_not_blank(tmp_path, browser):
    cfg = build(tmp_path)
    index = Path(cfg.reports_dir) / "index.html"
    html = index.read_text()
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert not list(Path(cfg.reports_dir).glob(".index.html.*")), "temporary file left behind"

    view = open_report(browser, index)
    assert_all_loaded(view, ALL_IMAGES)
    assert_not_blank(view["png"])
    rendering = {i["src"]: i["rendering"] for i in view["imgs"]}
    assert rendering["render/large/grid.png"] == rendering["render/large/class_grids/class_001.png"] == "pixelated"
    assert rendering["render/loss_curves.png"] != "pixelated"  # curves are smoothed, grids are not
    text = view["text"]
    assert "not available" not in text
    assert "Validation passed: 40 images fetched, 0 quarantined; all 3 checks passed." in text
    assert "expect_column_values_to_be_unique" not in text  # the raw result is one click away ...
    assert "expect_column_values_to_be_unique" in view["opened"] and '"great_expectations_version"' in view["opened"]
    assert "no two images share a sha256" in view["opened"]  # ... and the checks in words beside it
    assert re.search(r"images\s+40", text) and "16×16" in text and "openmoji" in text
    assert re.search(r"animals\s+20", text) and re.search(r"flags\s+20", text)  # label counts
    assert "1024 generated vs 2048 real images" in text  # sample counts beside FID
    assert "0.0117" in text and "FID from 1024 < 2048 generated images is biased upwards" in text  # the report's own
    assert "nearest training image of the 2048 in the FID statistics than" in text  # what the copy rate searched
    assert re.search(r"train\.loss\s+ns", text) and re.search(r"data\.label\s+category", text)  # params


def test_small_pictures_are_upscaled_pixels_shown_at_least_256_px_wide_real_beside_generated(tmp_path, browser):
    cfg = build(tmp_path)
    reports = Path(cfg.reports_dir)
    view = open_report(browser, reports / "index.html")
    imgs = {i["src"]: i for i in view["imgs"]}
    small = (
        "real.png",
        "grid.png",
        "grid_raw.png",
        "class_grids/class_000.png",
        "class_grids/class_001.png",
        "progress.png",
        "memorisation.png",
    )
    for name in small:
        src = f"render/large/{name}"
        assert src in imgs, sorted(imgs)
        orig = reports / ("memorisation.png" if name == "memorisation.png" else f"render/{name}")
        with Image.open(orig) as a, Image.open(reports / src) as b:
            k = b.width // a.width
            assert k >= 2 and b.size == (a.width * k, a.height * k), (name, a.size, b.size)
            big = np.asarray(b.convert("RGB"))
            assert np.array_equal(big[::k, ::k], np.asarray(a.convert("RGB"))), name  # nearest neighbour: kxk blocks
            assert np.array_equal(big, np.repeat(np.repeat(big[::k, ::k], k, 0), k, 1)), name
        assert imgs[src]["w"] >= MIN_SHOWN, (src, imgs[src]["w"])  # the pixels are upscaled, not just the CSS box
        assert imgs[src]["shown"] >= MIN_SHOWN, (src, imgs[src]["shown"])  # and displayed that wide
        assert imgs[src]["link"] == orig.relative_to(reports).as_posix()  # one click to the 1:1 file
    grid, real = imgs["render/large/grid.png"], imgs["render/large/real.png"]
    assert grid["w"] == real["w"] and abs(grid["shown"] - real["shown"]) < 1  # the same scale ...
    assert abs(grid["top"] - real["top"]) < 1  # ... side by side


def test_the_report_survives_moving_the_reports_folder(tmp_path, browser):
    cfg = build(tmp_path / "run")
    moved = tmp_path / "elsewhere" / "zipped"
    shutil.make_archive(str(tmp_path / "report"), "zip", cfg.reports_dir)
    shutil.rmtree(tmp_path / "run")  # the original folder and the manifest are gone
    shutil.unpack_archive(tmp_path / "report.zip", moved)
    view = open_report(browser, moved / "index.html")
    assert_all_loaded(view, ALL_IMAGES)
    assert_not_blank(view["png"])


def test_missing_inputs_read_not_available_and_leave_no_broken_image(tmp_path, browser):
    missing = (
        "render/grid.png",
        "render/interp.gif",
        "render/fid_curve.png",
        "memorisation.png",
        "metrics.json",
        "validation.json",
        "manifest",
        "class_grids",
    )
    cfg = build(tmp_path, missing=missing)
    reports = Path(cfg.reports_dir)
    html = (reports / "index.html").read_text()
    srcs = re.findall(r'<img[^>]*\bsrc="([^"]*)"', html)
    assert sorted(srcs) == [
        "render/interp.png",
        "render/large/grid_raw.png",
        "render/large/progress.png",
        "render/large/real.png",
        "render/loss_curves.png",
    ]
    assert all((reports / s).is_file() for s in srcs)

    view = open_report(browser, reports / "index.html")
    assert_all_loaded(view, 5)
    text = view["text"]
    for what in (
        "EMA generator, fixed seeds: not available",
        "latent interpolation (animated): not available",
        "FID over training: not available",
        "closest generated / training pairs: not available",
        "metrics (metrics.json): not available",
        "copy rate: not available",
        "validation result (validation.json): not available",
        "manifest (manifest.parquet): not available",
        "per-class grids: not available",
    ):
        assert what in text, what


def test_an_empty_reports_folder_still_gives_a_page(tmp_path, browser):
    cfg = Config.model_validate(tiny_cfg(tmp_path))
    index = write_report(cfg)
    assert index == Path(cfg.reports_dir) / "index.html"
    view = open_report(browser, index)
    assert view["imgs"] == []
    assert view["text"].count("not available") >= 10
    assert "per-class grids (unconditional model): not available" in view["text"]


def test_text_from_params_metrics_and_data_is_escaped(tmp_path, browser):
    labels = [XSS if i % 2 else "a & b" for i in range(40)]
    metrics = {
        "fid": 99.5,
        "fid_n_fake": 64,
        "fid_n_real": 64,
        "note": "<b>bold</b>",
        "copy_rate": 0.0,
        "warnings": ['<img src="x" onerror="alert(1)">'],
    }
    cfg = build(tmp_path, labels=labels, metrics=metrics, data={"label": "category", "source": XSS})
    html = (Path(cfg.reports_dir) / "index.html").read_text()
    assert "<script" not in html and "<b>bold" not in html and '<img src="x"' not in html
    assert "&lt;script&gt;" in html

    view = open_report(browser, Path(cfg.reports_dir) / "index.html")
    assert view["scripts"] == 0
    assert_all_loaded(view, ALL_IMAGES)  # the injected <img> is text, not an element
    text = view["text"]
    assert XSS in text and "<b>bold</b>" in text and '<img src="x" onerror="alert(1)">' in text
    assert re.search(r"a & b\s+20", text)


def test_a_failed_validation_is_shown_as_failed(tmp_path, browser):
    cfg = build(tmp_path, valid=False)
    html = (Path(cfg.reports_dir) / "index.html").read_text()
    assert '<span class="fail">Validation FAILED</span>' in html and '<span class="fail">FAIL</span>' in html
    view = open_report(browser, Path(cfg.reports_dir) / "index.html")
    text = view["text"]
    assert "Validation FAILED: 40 images fetched, 0 quarantined; 2 of 3 checks passed." in text
    assert "every mode is one of RGB, RGBA (3 unexpected)" in text  # the failed check, in words, not hidden
    opened = view["opened"]
    assert re.search(r"expect_column_values_to_be_in_set.*3 unexpected\s+FAIL", opened)
    assert re.search(r"expect_table_row_count_to_be_between.*40\s+pass", opened)


def test_a_capped_set_of_class_grids_says_so(tmp_path):
    cfg = build(tmp_path)
    grids = Path(cfg.reports_dir) / "render" / "class_grids"
    assert "The first 64 classes." not in (Path(cfg.reports_dir) / "index.html").read_text()
    for k in range(64):  # render stops at MAX_CLASS_GRIDS however many classes there are
        noise_grid(grids / f"class_{k:03d}.png", k, tiles=1)
    assert "The first 64 classes." in write_report(cfg).read_text()
