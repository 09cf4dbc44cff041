"""train: a GAN on data/processed/images.npy; writes models/checkpoint.pt and opens the MLflow run.

Deterministic on CPU for a given seed: one torch.Generator drives the data order and every latent.
"""
from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import numpy as np

from pipeline import tracking
from pipeline.config import Config, set_threads
from pipeline.errors import ArtganError
from pipeline.io import atomic_path, require, write_json
from pipeline.stages.preprocess import IMAGES

CHECKPOINT = "checkpoint.pt"
RUN_FILE = "mlflow_run.json"
CURVES = "train_curves.csv"
N_FIXED = 64


def run_file(cfg: Config) -> Path:
    return Path(cfg.train.out_dir) / RUN_FILE


def load_images(cfg: Config):
    """uint8 N×S×S×3 on disk -> float N×3×S×S in [-1, 1]."""
    import torch

    arr = np.load(require(Path(cfg.data.processed_dir) / IMAGES, "preprocess"))
    if arr.shape[1] != cfg.data.image_size:
        raise ArtganError(
            f"{cfg.data.processed_dir}/{IMAGES}: images are {arr.shape[1]} px but data.image_size is "
            f"{cfg.data.image_size}; run `artgan preprocess` again"
        )
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    return x.contiguous()


def to_uint8(x):
    """[-1, 1] float NCHW -> uint8 NHWC, as a PNG of the sample would store it."""
    import torch

    return x.add(1).mul(127.5).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def grid_image(x, nrow: int = 8):
    """A PIL grid of [-1, 1] images."""
    from PIL import Image
    from torchvision.utils import make_grid

    g = make_grid(x.detach().cpu(), nrow=nrow, padding=2, normalize=True, value_range=(-1, 1))
    return Image.fromarray(g.mul(255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy())


def run(cfg: Config) -> dict:
    import torch
    from tqdm import tqdm

    from pipeline.losses import LOSSES
    from pipeline.models import build

    t = cfg.train
    set_threads(cfg)
    torch.use_deterministic_algorithms(True)
    data = load_images(cfg)
    if len(data) < t.batch_size:
        raise ArtganError(f"train.batch_size {t.batch_size} exceeds the {len(data)} training images; lower it")

    torch.manual_seed(t.seed)
    gen = torch.Generator().manual_seed(t.seed)
    G, D = build(cfg.model.arch, cfg.data.image_size, cfg.model.z_dim, cfg.model.g_channels, cfg.model.d_channels)
    opt_g = torch.optim.Adam(G.parameters(), lr=t.lr_g, betas=(t.beta1, t.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=t.lr_d, betas=(t.beta1, t.beta2))
    d_loss_fn, g_loss_fn = LOSSES[t.loss]
    fixed_z = torch.randn(N_FIXED, cfg.model.z_dim, generator=torch.Generator().manual_seed(t.seed + 1))

    out_dir = Path(t.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    curves: list[dict] = []
    pending: list[tuple[int, dict[str, float]]] = []
    order = torch.randperm(len(data), generator=gen)
    cursor = 0
    t0 = time.perf_counter()

    with tracking.new_run("train", cfg.flat()) as mlrun:
        bar = tqdm(range(1, t.steps + 1), desc="train", unit="step", mininterval=1.0)
        for step in bar:
            if cursor + t.batch_size > len(data):
                order, cursor = torch.randperm(len(data), generator=gen), 0
            real = data[order[cursor : cursor + t.batch_size]]
            cursor += t.batch_size
            z = torch.randn(t.batch_size, cfg.model.z_dim, generator=gen)

            fake = G(z)
            d_real, d_fake = D(real), D(fake.detach())
            loss_d = d_loss_fn(d_real, d_fake)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()

            loss_g = g_loss_fn(D(fake))
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()

            ld, lg = loss_d.item(), loss_g.item()
            if not (math.isfinite(ld) and math.isfinite(lg)):
                raise ArtganError(
                    f"train: non-finite loss at step {step} (loss_d={ld}, loss_g={lg}); "
                    "lower train.lr_g / train.lr_d or try train.loss=hinge"
                )
            if step % t.log_every == 0 or step == t.steps:
                ips = step * t.batch_size / (time.perf_counter() - t0)
                row = {"loss_d": ld, "loss_g": lg, "d_real": d_real.mean().item(), "d_fake": d_fake.mean().item(),
                       "img_per_s": ips}
                curves.append({"step": step, **row})
                pending.append((step, row))
                bar.set_postfix(loss_d=f"{ld:.3f}", loss_g=f"{lg:.3f}", img_s=f"{ips:.0f}")
            if step % t.sample_every == 0 or step == t.steps:
                mlrun.log_metric_history(pending)
                pending = []
                G.eval()
                with torch.no_grad():
                    mlrun.log_image(grid_image(G(fixed_z)), key="samples", step=step)
                G.train()
        bar.close()
        seconds = time.perf_counter() - t0

        with atomic_path(Path(cfg.reports_dir) / CURVES) as tmp:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(curves[0]))
                w.writeheader()
                w.writerows(curves)
        with atomic_path(out_dir / CHECKPOINT) as tmp:
            torch.save(
                {"generator": G.state_dict(), "discriminator": D.state_dict(),
                 "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                 "step": t.steps, "config": cfg.model_dump(by_alias=True), "mlflow_run_id": mlrun.run_id},
                tmp,
            )
        write_json(run_file(cfg), {"run_id": mlrun.run_id, "tracking_uri": tracking.tracking_uri()})
        figures = {"steps": t.steps, "seconds": round(seconds, 1), "img_per_s": round(t.steps * t.batch_size / seconds, 1),
                   "loss_d": ld, "loss_g": lg}
        mlrun.log_metrics({"train_seconds": seconds, "train_img_per_s": figures["img_per_s"]})
    return {**figures, "run_id": mlrun.run_id}


def load_generator(cfg: Config):
    """The trained generator from models/checkpoint.pt, in eval mode."""
    import torch

    from pipeline.models import build

    path = require(Path(cfg.train.out_dir) / CHECKPOINT, "train")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    m = ckpt["config"]["model"]
    size = ckpt["config"]["data"]["image_size"]
    G, _ = build(m["arch"], size, m["z_dim"], m["g_channels"], m["d_channels"])
    G.load_state_dict(ckpt["generator"])
    return G.eval(), m["z_dim"]
