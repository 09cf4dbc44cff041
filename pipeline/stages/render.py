"""render: an nrow×nrow grid of samples from fixed seeds, comparable across runs (reports/grid.png)."""
from __future__ import annotations

from pathlib import Path

from pipeline import tracking
from pipeline.config import Config
from pipeline.io import atomic_path
from pipeline.stages.train import grid_image, load_generator, run_file

GRID = "grid.png"


def run(cfg: Config) -> dict:
    import torch

    G, z_dim = load_generator(cfg)
    n = cfg.render.nrow**2
    z = torch.randn(n, z_dim, generator=torch.Generator().manual_seed(cfg.render.seed))
    with torch.no_grad():
        img = grid_image(G(z), nrow=cfg.render.nrow)
    out = Path(cfg.reports_dir) / GRID
    with tracking.resume_run("render", run_file(cfg)) as mlrun:
        with atomic_path(out) as tmp:
            img.save(tmp, format="PNG")
        mlrun.log_image(img, key="grid", artifact_file=GRID)
    return {"grid": str(out), "images": n}
