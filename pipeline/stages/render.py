"""render: an nrow×nrow grid of samples from fixed seeds, comparable across runs (reports/grid.png).

The EMA generator draws it when training kept one. Conditional models: row r shows class r (cycling
when there are fewer classes than rows), and one grid per class goes to MLflow under class_grids/.
"""
from __future__ import annotations

from pathlib import Path

from pipeline import tracking
from pipeline.config import Config
from pipeline.io import atomic_path
from pipeline.stages.train import grid_image, load_generator, run_file

GRID = "grid.png"
MAX_CLASS_GRIDS = 64


def run(cfg: Config) -> dict:
    import torch

    G, z_dim, n_classes, _ = load_generator(cfg)
    nrow = cfg.render.nrow
    n = nrow**2
    z = torch.randn(n, z_dim, generator=torch.Generator().manual_seed(cfg.render.seed))
    y = (torch.arange(n) // nrow) % n_classes if n_classes else None
    with torch.no_grad():
        img = grid_image(G(z, y), nrow=nrow)
    out = Path(cfg.reports_dir) / GRID
    with tracking.resume_run("render", run_file(cfg)) as mlrun:
        with atomic_path(out) as tmp:
            img.save(tmp, format="PNG")
        mlrun.log_image(img, key="grid", artifact_file=GRID)
        for k in range(min(n_classes, MAX_CLASS_GRIDS)):
            with torch.no_grad():
                grid = grid_image(G(z, torch.full((n,), k, dtype=torch.long)), nrow=nrow)
            mlrun.log_image(grid, key=f"class_{k}", artifact_file=f"class_grids/class_{k:03d}.png")
    return {"grid": str(out), "images": n, "classes": n_classes}
