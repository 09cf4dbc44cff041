"""render, task translate: pictures of the trained translator on fixed held-out inputs, and the report.

Under reports/render/ (one DVC output; each file also goes to the MLflow run):
- triplets.png: the first `translate.triplets` held-out inputs by path (the same rows on every run), one row each:
  input | translated (EMA weights when trained with them) | target (grey for unpaired data), each tile upscaled
  (nearest) to at least TILE_MIN px so that small images are readable;
- progress.png: the first held-out inputs (left column) translated by every training snapshot (a column each,
  labelled with its step);
- loss_curves.png and fid_curve.png from reports/train_curves.csv and reports/fid_curve.csv;
- large/: upscaled copies of progress.png and reports/memorisation.png, which the report shows.
Then reports/index.html with its Translation section (pipeline/report.py), and under DVC the stage hashes of the run.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pipeline import tracking
from pipeline.config import Config
from pipeline.io import require, torch_load
from pipeline.layout import (
    CHECKPOINT,
    CURVES,
    FID_CURVE,
    RENDER,
    RERUN_TRAIN,
    SNAPSHOTS,
    TRIPLETS,
    model_file,
    run_file,
)
from pipeline.rendering import fid_figure, read_csv, render_dir
from pipeline.translation.pairs import holdout_rows
from pipeline.translation.translator import Translator, new_generator, read_translator, translate_uint8

TILE_MIN = 256  # px: the smallest a triplet tile is drawn (an integer factor, nearest neighbour)
PROGRESS_ROWS = 8  # held-out inputs in the progress strip
COLUMNS = ("input", "translated", "target")
GREY = 128  # the target tile of unpaired data, which has none


def tile_scale(size: int) -> int:
    return max(1, math.ceil(TILE_MIN / size))


def triplets_image(inputs: np.ndarray, translated: np.ndarray, targets: np.ndarray | None):
    """Rows of input | translated | target tiles (grey where there is no target), upscaled by tile_scale, under a
    header naming the columns."""
    from PIL import Image, ImageDraw

    n, size = len(inputs), inputs.shape[1]
    s, pad, top = size * tile_scale(size), 4, 16
    canvas = Image.new("RGB", (3 * (s + pad) + pad, top + n * (s + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(COLUMNS):
        draw.text((pad + c * (s + pad) + 2, 2), name, fill="black")
    grey = np.full_like(inputs[0], GREY)
    for r in range(n):
        row = (inputs[r], translated[r], targets[r] if targets is not None else grey)
        for c, img in enumerate(row):
            tile = Image.fromarray(img).resize((s, s), Image.Resampling.NEAREST)
            canvas.paste(tile, (pad + c * (s + pad), top + pad + r * (s + pad)))
    return canvas


def progress_image(ckpt: dict, cfg: Config, inputs: np.ndarray):
    """The inputs (first column), then each snapshot's translations of them, labelled with the step; None without
    snapshots."""
    from PIL import Image, ImageDraw

    from pipeline.imaging import grid

    snaps = torch_load(require(model_file(cfg, SNAPSHOTS), "train"), RERUN_TRAIN)
    cols = [("input", grid(inputs, 1))]
    for step, state in zip(snaps["steps"], snaps["generators"]):
        cols.append((f"step {step}", grid(translate_uint8(new_generator(ckpt, state), inputs), 1)))
    if len(cols) == 1:
        return None
    w, h, top = cols[0][1].width * 2, cols[0][1].height * 2, 14
    canvas = Image.new("RGB", (w * len(cols), h + top), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (label, col) in enumerate(cols):
        canvas.paste(col.resize((w, h), Image.Resampling.NEAREST), (i * w, top))
        draw.text((i * w + 4, 1), label, fill="black")
    return canvas


# the curves drawn: D's loss and G's adversarial term (G's total adds lambda times the L1 terms, which would flatten
# the panel), D's outputs; then the L1 terms. Gradient norms, learning rates and img/s stay in train_curves.csv.
ADVERSARIAL = ("loss_d", "loss_g_adv", "d_real", "d_fake")
RECONSTRUCTION = ("l1", "cycle", "identity")


def curves_figures(reports: Path):
    """(the training losses, the FID curve) as matplotlib figures, or None where there is no data: the adversarial
    losses in one panel, the reconstruction terms (L1, cycle, identity, ...) in the other."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_csv(reports / CURVES)
    loss_fig = None
    keys = [k for k in (rows[0] if rows else {}) if k != "step"]
    if keys:
        loss_fig, axes = plt.subplots(1, 2, figsize=(12, 3.5))
        steps = [r.get("step", i) for i, r in enumerate(rows)]
        for ax, title, panel in (
            (axes[0], "adversarial", [k for k in ADVERSARIAL if k in keys]),
            (axes[1], "reconstruction (L1)", [k for k in RECONSTRUCTION if k in keys]),
        ):
            for key in panel:
                ax.plot(steps, [r.get(key, np.nan) for r in rows], label=key, lw=0.8)
            ax.set(xlabel="step", title=title)
            if ax.lines:
                ax.legend(fontsize="small")
        loss_fig.tight_layout()
    return loss_fig, fid_figure(reports / FID_CURVE, "held-out inputs")


def run(cfg: Config) -> dict:
    from pipeline.translation.pairs import load_translation_data

    path = model_file(cfg, CHECKPOINT)
    ckpt = read_translator(require(path, "train"), f"task is translate: {RERUN_TRAIN}")
    G = Translator.from_checkpoint(ckpt, path)
    data = load_translation_data(cfg)
    held = holdout_rows(data.inputs_df)[: cfg.translate.triplets]
    inputs = np.ascontiguousarray(data.inputs[held])
    targets = np.ascontiguousarray(data.styles[data.inputs_df["target"].to_numpy()[held]]) if data.paired else None
    with tracking.resume_run("render", run_file(cfg)) as mlrun:
        with render_dir(cfg, mlrun, TRIPLETS, curves_figures) as out:
            if len(held):
                out.save(triplets_image(inputs, G(inputs), targets), TRIPLETS)
                prog = progress_image(ckpt, cfg, inputs[:PROGRESS_ROWS])
                if prog is not None:
                    out.save(prog, "progress.png")
    return {
        "render": str(Path(cfg.reports_dir) / RENDER),
        "files": sorted(out.written),
        "report": str(out.report),
        "triplets": int(len(held)),
        "weights": G.weights,
    }
