"""render: pictures of the trained generator, from fixed seeds so they compare across runs, and the report.

Under reports/render/ (one DVC output; each file also goes to the MLflow run):
- grid.png (EMA generator) and grid_raw.png (the raw generator): nrow×nrow samples from `render.seed`;
  conditional models draw class r in row r, and class_grids/class_NNN.png holds one grid per class;
- interp.png, a spherical interpolation between two latents, and interp.gif, a 4×4 grid of samples each
  slerping round a loop of latents;
- real.png: nrow×nrow training images (seeded by `render.seed`; conditional: row r holds class r), drawn as the
  generated grids are, to compare them at the same scale;
- progress.png: the same latents drawn by every training snapshot (columns, labelled with the step);
- loss_curves.png and fid_curve.png from reports/train_curves.csv and reports/fid_curve.csv.
- large/: nearest-neighbour upscaled copies of the small pictures (grids, real.png, progress.png and
  reports/memorisation.png), at least 256 px across, which the report shows (pipeline/report.py).
Then reports/index.html, the self-contained report (pipeline/report.py).
Under DVC it also tags the run with the hash of every earlier stage from dvc.lock and logs the lock file
(`dvclock.log_dvc_lock`): render is the last stage, so dvc.lock then holds the run's fetch ... evaluate.
Task translate draws the translator's pictures instead: pipeline/translation/render.py.
"""

from __future__ import annotations

from pathlib import Path

from pipeline import tracking
from pipeline.artifacts import load_generator, load_images, load_labels, load_snapshots
from pipeline.config import Config
from pipeline.imaging import grid, grid_image
from pipeline.layout import CURVES, FID_CURVE, REAL, RENDER, run_file
from pipeline.rendering import fid_figure, read_csv, render_dir
from pipeline.report import MAX_CLASS_GRIDS  # one cap: render draws that many, the report says so

INTERP_STEPS = 10
GIF_SIDE, GIF_KEYS, GIF_STEPS, GIF_MS = 4, 4, 8, 80
SCALE = 4  # small samples are upscaled (nearest) in strips and GIFs


def slerp(a, b, t):
    """Spherical interpolation of latent rows a -> b at fractions t (a column); linear when parallel."""
    import torch

    an, bn = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((an * bn).sum(-1, keepdim=True).clamp(-1, 1))
    so = torch.sin(omega)
    lin = (1 - t) * a + t * b
    sph = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / so.clamp_min(1e-8)
    return torch.where(so > 1e-6, sph, lin)


def _labels(n: int, nrow: int, n_classes: int):
    import torch

    return (torch.arange(n) // nrow) % n_classes if n_classes else None


def _upscale(img, scale: int = SCALE):
    from PIL import Image

    return img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)


def interpolation(G, z_dim: int, n_classes: int, seed: int):
    """(strip, gif frames): a slerp strip between two latents, and a looping 4×4 grid of slerps."""
    import torch

    gen = torch.Generator().manual_seed(seed + 1)
    ends = torch.randn(2, z_dim, generator=gen)
    t = torch.linspace(0, 1, INTERP_STEPS)[:, None]
    y = torch.zeros(INTERP_STEPS, dtype=torch.long) if n_classes else None
    with torch.no_grad():
        strip = _upscale(grid_image(G(slerp(ends[:1], ends[1:], t), y), nrow=INTERP_STEPS))
    cells = GIF_SIDE**2
    keys = torch.randn(GIF_KEYS, cells, z_dim, generator=gen)
    y = _labels(cells, GIF_SIDE, n_classes)
    frames = []
    with torch.no_grad():
        for k in range(GIF_KEYS):
            a, b = keys[k], keys[(k + 1) % GIF_KEYS]  # a closed loop: the GIF repeats seamlessly
            for s in range(GIF_STEPS):
                z = slerp(a, b, torch.full((cells, 1), s / GIF_STEPS))
                frames.append(_upscale(grid_image(G(z, y), nrow=GIF_SIDE)))
    return strip, frames


def real_grid(cfg: Config, nrow: int, n_classes: int):
    """nrow×nrow training images as a grid like the generated ones: a seeded sample, or for a conditional model
    row r from class r (as the generated grid's rows), so real and generated compare cell for cell."""
    import numpy as np

    images = load_images(cfg)
    rng = np.random.default_rng(cfg.render.seed)
    n = nrow * nrow
    labels = load_labels(cfg, len(images))[0] if n_classes else None
    if labels is None:
        idx = rng.choice(len(images), size=n, replace=len(images) < n)
    else:
        idx = []
        for r in range(nrow):
            pool = np.flatnonzero(labels == r % n_classes)
            idx.extend(
                rng.choice(pool, size=nrow, replace=len(pool) < nrow)
                if len(pool)
                else rng.choice(len(images), size=nrow)
            )
        idx = np.asarray(idx)
    return grid(np.ascontiguousarray(images[np.sort(idx) if labels is None else idx]), nrow)


def progress_strip(cfg: Config, z, y):
    """One column per training snapshot (same latents), labelled with its step."""
    import torch
    from PIL import Image, ImageDraw

    cols = []
    for step, G in load_snapshots(cfg):
        with torch.no_grad():
            col = _upscale(grid_image(G(z, y), nrow=1), 2)
        cols.append((step, col))
    if not cols:
        return None
    w, h, top = cols[0][1].width, cols[0][1].height, 14
    canvas = Image.new("RGB", (w * len(cols), h + top), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (step, col) in enumerate(cols):
        canvas.paste(col, (i * w, top))
        draw.text((i * w + 4, 1), f"step {step}", fill="black")
    return canvas


def curves_figures(reports: Path):
    """(loss curves, FID curve) as matplotlib figures, or None where there is no data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_csv(reports / CURVES)
    loss_fig = None
    if rows:
        loss_fig, axes = plt.subplots(1, 3, figsize=(14, 3.5))
        steps = [r["step"] for r in rows]
        panels = (
            (
                "losses",
                (
                    ("loss_d", "loss_d"),
                    ("loss_g", "loss_g"),
                    ("loss", "loss"),
                    ("rec", "rec"),
                    ("kl", "kl"),
                    ("recon", "D recon"),
                    ("lecam", "LeCam"),
                ),
            ),
            ("discriminator outputs", (("d_real", "D(x)"), ("d_fake", "D(G(z))"))),
            ("gradient norms", (("grad_norm_d", "|grad D|"), ("grad_norm_g", "|grad G|"))),
        )
        for ax, (title, keys) in zip(axes, panels):
            for key, label in keys:
                if key in rows[0]:
                    ax.plot(steps, [r[key] for r in rows], label=label, lw=0.8)
            ax.set(xlabel="step", title=title)
            if ax.lines:
                ax.legend()
        if axes[2].lines:
            axes[2].set_yscale("log")
        loss_fig.tight_layout()
    return loss_fig, fid_figure(reports / FID_CURVE, "samples")


def run(cfg: Config) -> dict:
    if cfg.task == "translate":  # input | translated | target triplets and the report: pipeline/translation/render.py
        from pipeline.translation.render import run as run_translate

        return run_translate(cfg)
    import torch

    from pipeline.translation.translator import check_task

    check_task(cfg)  # a translator in models/ is one line, not a state-dict mismatch

    G, z_dim, n_classes, _ = load_generator(cfg)
    G_raw, *_ = load_generator(cfg, ema=False)
    nrow = cfg.render.nrow
    n = nrow**2
    z = torch.randn(n, z_dim, generator=torch.Generator().manual_seed(cfg.render.seed))
    y = _labels(n, nrow, n_classes)
    with tracking.resume_run("render", run_file(cfg)) as mlrun:
        with render_dir(cfg, mlrun, "grid.png", curves_figures) as out:
            save = out.save
            if n_classes > MAX_CLASS_GRIDS:
                print(f"render: per-class grids for the first {MAX_CLASS_GRIDS} of {n_classes} classes", flush=True)
            with torch.no_grad():
                save(grid_image(G(z, y), nrow=nrow), "grid.png")
                save(grid_image(G_raw(z, y), nrow=nrow), "grid_raw.png")
                for k in range(min(n_classes, MAX_CLASS_GRIDS)):
                    save(
                        grid_image(G(z, torch.full((n,), k, dtype=torch.long)), nrow=nrow),
                        f"class_grids/class_{k:03d}.png",
                    )
            save(real_grid(cfg, nrow, n_classes), REAL)
            strip, frames = interpolation(G, z_dim, n_classes, cfg.render.seed)
            save(strip, "interp.png")
            save(frames[0], "interp.gif", save_all=True, append_images=frames[1:], duration=GIF_MS, loop=0)
            k = min(nrow, 8)
            prog = progress_strip(cfg, z[:k], y[:k] if y is not None else None)
            if prog is not None:
                save(prog, "progress.png")
    return {
        "render": str(Path(cfg.reports_dir) / RENDER),
        "files": sorted(out.written),
        "report": str(out.report),
        "classes": n_classes,
    }
