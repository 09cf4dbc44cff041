"""The GPU recipes at 64 px and 128 px (docs/training.md), in one place: the `dvc exp run` a user types, and a run of
each on a lent GPU machine through the train stage's own code (bench/gpu_kit.sh calls `run`).

    python bench/gpu_recipes.py show                      # the dvc exp run command of every recipe
    python bench/gpu_recipes.py run [NAME ...] [--steps N] [--device auto]

`run` needs data/raw (the fetched images) and data/processed/manifest.csv (the images preprocess kept): it
converts those images at the recipe's size with preprocess's own conversion (pipeline/data/npy.py) into a scratch
folder, trains the recipe there with MLflow replaced by a null run (the GPU machine has no mlflow), and prints
a table: steps run, img/s, the minutes the recipe's full `train.steps` would take at that speed, the last losses,
and where the 8×8 grid of the EMA generator went ($OUT or /tmp/gpu_recipes). `--steps` caps each recipe's steps
to fit a lent machine's minutes (0 = the recipe's own). No FID here: the GPU machine has no TF-Inception weights;
a user's `dvc exp run` scores the full recipe as every run is scored.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# name -> the params overrides (what `dvc exp run -S` sets); the comments are docs/training.md's
RECIPES: dict[str, list[str]] = {
    # 64 px: DCGAN, 64 channels (~4x the 32 px model's FLOPs per image), batch 64
    "dcgan-64": [
        "data.image_size=64",
        "model.g_channels=64",
        "model.d_channels=64",
        "train.batch_size=64",
        "train.steps=30000",
        "train.lr_g=0.0004",
        "train.lr_d=0.0002",
        "train.snapshot_every=5000",
        "train.sample_every=1000",
    ],
    # 128 px: the SN-GAN ResNet (spectral norm, hinge), TTUR as in its paper
    "resnet-128": [
        "data.image_size=128",
        "fetch.render_size=128",
        "model.arch=resnet",
        "model.spectral_norm=true",
        "model.g_channels=32",
        "model.d_channels=32",
        "train.loss=hinge",
        "train.batch_size=64",
        "train.steps=50000",
        "train.lr_g=0.0002",
        "train.lr_d=0.0002",
        "train.beta1=0.0",
        "train.beta2=0.9",
        "train.snapshot_every=5000",
        "train.sample_every=1000",
    ],
    # 128 px: FastGAN (its paper's few-shot recipe: hinge loss, lr 2e-4, batch 8; g_channels 128 is its ngf 32)
    "fastgan-128": [
        "data.image_size=128",
        "fetch.render_size=128",
        "model.arch=fastgan",
        "model.g_channels=128",
        "model.d_channels=32",
        "train.loss=hinge",
        "train.batch_size=8",
        "train.steps=50000",
        "train.lr_g=0.0002",
        "train.lr_d=0.0002",
        "train.snapshot_every=5000",
        "train.sample_every=1000",
    ],
}


def command(name: str) -> str:
    """The `dvc exp run` of a recipe, as docs/training.md shows it."""
    return "dvc exp run -n " + name + "".join(f" -S {o}" for o in RECIPES[name])


def apply(raw: dict, overrides: list[str]) -> dict:
    import yaml

    for o in overrides:
        key, value = o.split("=", 1)
        section, name = key.split(".")
        raw[section][name] = yaml.safe_load(value)
    return raw


def images_at(size: int, scratch: Path) -> Path:
    """data/processed's kept images converted again at `size` (preprocess's conversion and its params)."""
    from pipeline.config import load
    from pipeline.data.npy import convert

    manifest = REPO / "data" / "processed" / "manifest.csv"
    if not manifest.is_file() or not (REPO / "data" / "raw").is_dir():
        sys.exit(f"gpu_recipes: {manifest} or data/raw is missing: run `dvc repro preprocess` first")
    with open(manifest, newline="") as f:
        paths = [row["path"] for row in csv.DictReader(f)]
    p = load(REPO / "params.yaml").preprocess
    out = scratch / f"processed-{size}"
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "images.npy").is_file():
        convert(REPO / "data" / "raw", paths, out / "images.npy", size, p.resize, p.background, workers=0)
    return out


def run_recipe(name: str, steps_cap: int, device: str, scratch: Path, out_dir: Path) -> dict:
    import torch

    from pipeline.artifacts import load_generator
    from pipeline.config import load, parse
    from pipeline.imaging import grid_image
    from pipeline.stages import train as stage

    raw = apply(load(REPO / "params.yaml").model_dump(by_alias=True), RECIPES[name])
    full_steps = raw["train"]["steps"]
    steps = min(full_steps, steps_cap) if steps_cap else full_steps
    root = scratch / name
    raw["data"]["processed_dir"] = str(images_at(raw["data"]["image_size"], scratch))
    raw["train"].update(
        steps=steps,
        device=device,
        snapshot_every=0,
        sample_every=10**9,
        checkpoint_every=max(1, steps // 4),
        log_every=max(1, steps // 20),
        checkpoint_dir=str(root / "checkpoints"),
        out_dir=str(root / "models"),
    )
    raw["reports_dir"] = str(root / "reports")
    cfg = parse(raw)
    figures = stage.run(cfg)
    G, z_dim, _, _ = load_generator(cfg)
    with torch.no_grad():
        z = torch.randn(64, z_dim, generator=torch.Generator().manual_seed(0))
        x = G(z)
    grid = out_dir / f"{name}.png"
    grid_image(x).save(grid)
    img_s = figures["img_per_s"]  # the train stage's own: images over its training seconds
    return {
        "recipe": name,
        "device": figures["device"],
        "steps": figures["steps"],
        "img/s": img_s,
        "full recipe, min": full_steps * cfg.train.batch_size / img_s / 60,
        "loss_d": float(figures["loss_d"]),
        "loss_g": float(figures["loss_g"]),
        "grid": str(grid),
    }


def disable_tracking() -> None:
    sys.path.insert(0, str(REPO / "bench"))
    from cuda_check import disable_tracking as off

    off()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("show", help="the dvc exp run command of every recipe")
    r = sub.add_parser("run", help="train each recipe here (MLflow off) and print a table")
    r.add_argument("names", nargs="*", default=list(RECIPES), help=f"recipes ({', '.join(RECIPES)}; default all)")
    r.add_argument("--steps", type=int, default=0, help="cap each recipe's steps (0 = the recipe's own)")
    r.add_argument("--device", default="auto")
    args = ap.parse_args()
    if args.cmd == "show":
        for name in RECIPES:
            print(command(name))
        return
    unknown = [n for n in args.names if n not in RECIPES]
    if unknown:
        sys.exit(f"gpu_recipes: unknown recipe {', '.join(unknown)}; known: {', '.join(RECIPES)}")
    disable_tracking()
    out_dir = Path(os.environ.get("OUT") or "/tmp/gpu_recipes")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu_recipes-") as tmp:
        for name in args.names:
            rows.append(run_recipe(name, args.steps, args.device, Path(tmp), out_dir))
            print(rows[-1], flush=True)
    print("| recipe | device | steps run | img/s | full recipe, min | loss_d | loss_g | grid |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for w in rows:
        print(
            f"| {w['recipe']} | {w['device']} | {w['steps']} | {w['img/s']:.1f} | {w['full recipe, min']:.1f} | "
            f"{w['loss_d']:.3f} | {w['loss_g']:.3f} | {w['grid']} |"
        )


if __name__ == "__main__":
    main()
