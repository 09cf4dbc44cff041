"""FID / KID of several training configurations at equal steps on the default data (a benchmark, not a test).

Each row trains with params.yaml plus the row's overrides, then evaluates with the same protocol as
`artgan evaluate` (eval.* params, the preprocess FID reference). Needs `dvc repro preprocess` first.

    python bench/quality_table.py                      # every loss, then every architecture
    python bench/quality_table.py --rows losses -S train.steps=300
    python bench/quality_table.py --rows tuning --only 3000_32        # one row of a table, by folder name
    python bench/quality_table.py --row '{train.augment: [translation, cutout], train.ema_decay: 0.995}'
    python bench/quality_table.py --rows tuning --time 40            # per-step cost only (no evaluation)

Outputs go under bench/out/quality/<row>/ (grid.png, progress.png, metrics.json per row), every finished row
is appended to bench/out/quality/results.jsonl, and a Markdown table is printed. Everything runs inside the
output folder: the MLflow store (MLFLOW_TRACKING_URI, default <out>/mlflow.db) and its ./mlruns artifacts
land there, never in the repository's own mlflow.db. For a quick evaluation add e.g.
`-S registry.enabled=false -S eval.n_samples=1024 -S eval.curve_samples=0` (FID below 2,048 samples is biased
upwards: compare such rows only with each other). On a shared CPU add `-S train.threads=1`: two torch threads
competing with other processes for two cores can run 10-25× slower per step; one thread does not.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent

ROWS = {
    "losses": [{"train.loss": loss} for loss in ("bce", "ns", "wgan", "wgan-gp", "lsgan", "hinge")],
    "archs": [
        {"model.arch": "mlp"},
        {"model.arch": "dcgan"},
        {"model.arch": "resnet", "model.spectral_norm": True, "train.loss": "hinge"},
        {"model.arch": "vae", "train.ema_decay": 0.0, "train.lr_g": 1e-3, "train.lr_d": 1e-3, "train.augment": []},
    ],
    # CPU-budget tuning of the DCGAN default on OpenMoji (32 px, 32 channels). Steps, batch size and DiffAugment ([]
    # unless a row names it) are pinned so the rows do not move with params.yaml. Cost per step (torch FLOP counter): 6.4 GFLOP at batch 64, 3.2 at batch 32,
    # 14.0 with 48 channels; DiffAugment, spectral norm and hinge add no FLOPs. train.ema_decay is left out: the EMA
    # warm-up min(decay, (1 + step) / (10 + step)) stays below 0.995 until step 1791 and below 0.999 until step 8991,
    # so 0.995 and 0.999 give the same weights at these lengths (checked: identical FID at 1,500 steps).
    "tuning": [
        {**row, "train.augment": row.get("train.augment", [])}
        for row in [
            {"train.steps": 1500, "train.batch_size": 64},  # the old default (FLOP budget 1×)
            {"train.steps": 1500, "train.batch_size": 64, "train.augment": ["translation", "cutout"]},
            {"train.steps": 1500, "train.batch_size": 64, "train.augment": ["translation", "color", "cutout"]},
            {"train.steps": 1500, "train.batch_size": 64, "model.g_channels": 48, "model.d_channels": 48},  # 2.2×
            {"train.steps": 1500, "train.batch_size": 64, "model.spectral_norm": True, "train.loss": "hinge"},
            {
                "train.steps": 1500,
                "train.batch_size": 64,
                "model.spectral_norm": True,
                "train.loss": "hinge",
                "train.augment": ["translation", "cutout"],
            },
            {"train.steps": 3000, "train.batch_size": 64},  # 2×
            {"train.steps": 3000, "train.batch_size": 32},  # 1×
            {"train.steps": 3500, "train.batch_size": 64, "train.augment": ["translation", "cutout"]},  # 2.33×
            {"train.steps": 3500, "train.batch_size": 64},  # 2.33×
            {"train.steps": 6000, "train.batch_size": 32, "train.augment": ["translation", "cutout"]},  # 2×
            {"train.steps": 7000, "train.batch_size": 32, "train.augment": ["translation", "cutout"]},  # 2.33×
        ]
    ],
}
ALL = ("losses", "archs")  # --rows all (the default); the tuning table only on request
# per-loss settings the literature pairs with each objective (otherwise the defaults)
LOSS_SETTINGS = {
    "wgan": {"train.n_critic": 5, "train.lr_g": 5e-5, "train.lr_d": 5e-5, "train.beta1": 0.0},
    "wgan-gp": {"train.n_critic": 5, "train.lr_g": 1e-4, "train.lr_d": 1e-4, "train.beta1": 0.0, "train.beta2": 0.9},
}
# params holding paths: resolved against the repository, since rows run inside the output folder
PATH_KEYS = ("data.raw_dir", "data.processed_dir", "data.download_dir")


def _set(raw: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


def _get(raw: dict, dotted: str):
    node = raw
    for p in dotted.split("."):
        node = node[p]
    return node


def _fmt(v) -> str:
    return ("+".join(map(str, v)) or "[]") if isinstance(v, (list, tuple)) else str(v)


def label_of(overrides: dict) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in overrides.items()) or "defaults"


def name_of(overrides: dict) -> str:
    """Folder name of a row: its override values (empty lists left out), 'baseline' for no overrides."""
    name = "_".join(_fmt(v) for v in overrides.values() if v != []) or "baseline"
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "-", name)


def config_of(base: dict, overrides: dict, out: Path | None = None):
    from pipeline.config import parse

    raw = json.loads(json.dumps(base))
    for k in PATH_KEYS:
        try:
            _set(raw, k, str((REPO / _get(raw, k)).resolve()))
        except KeyError:
            pass
    for k, v in overrides.items():
        _set(raw, k, v)
    if out is not None:
        _set(raw, "train.out_dir", str(out / "models"))
        _set(raw, "train.checkpoint_dir", str(out / "ckpt"))
        _set(raw, "reports_dir", str(out))
    return parse(raw)


def run_row(base: dict, overrides: dict, out: Path) -> dict:
    from pipeline.stages import evaluate, render, train

    cfg = config_of(base, overrides, out)
    t0 = time.perf_counter()
    figures = train.run(cfg)
    wall = time.perf_counter() - t0
    metrics = evaluate.run(cfg)
    render.run(cfg)
    return {
        "seconds": figures["seconds"],
        "wall_seconds": round(wall, 1),
        "steps": figures["steps"],
        "s_per_step": figures["seconds"] / max(figures["steps"], 1),
        "img_per_s": figures["img_per_s"],
        **{k: v for k, v in metrics.items() if k != "fid_curve"},
    }


def time_rows(base: dict, rows: list[dict], steps: int, rounds: int) -> list[tuple[float, float]]:
    """(median seconds, GFLOP) per training step (G + D step and the EMA update) of each row: `rounds` rounds,
    the rows interleaved within a round so that a busy machine slows them alike; no tracking, no checkpoints.
    The FLOP count (torch's FlopCounterMode: convolutions and matmuls, forward and backward) does not depend on
    how busy the machine is, so it is the fairer measure of cost on a shared one."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.artifacts import load_images
    from pipeline.config import set_threads
    from pipeline.training import dist
    from pipeline.training.loop import Data, Trainer

    trainers = []
    for overrides in rows:
        cfg = config_of(base, overrides)
        set_threads(cfg)
        images = torch.from_numpy(load_images(cfg)).permute(0, 3, 1, 2).contiguous()
        world = dist.World()
        tr = Trainer(cfg, Data(images=images, labels=None, n_classes=0), world, torch.device("cpu"))
        step_fn = tr.vae_step if tr.kind == "vae" else tr.gan_step
        for s in range(1, 4):  # warm-up
            step_fn(s)
            tr.update_ema(s)
        counter = FlopCounterMode(display=False)
        with counter:
            step_fn(4)
        trainers.append((tr, step_fn, counter.get_total_flops() / 1e9))
    samples: list[list[float]] = [[] for _ in rows]
    for _ in range(rounds):
        for i, (tr, step_fn, _) in enumerate(trainers):
            t0 = time.perf_counter()
            for s in range(steps):
                step_fn(10 + s)
                tr.update_ema(10 + s)
            samples[i].append((time.perf_counter() - t0) / steps)
    return [(statistics.median(s), gflop) for s, (_, _, gflop) in zip(samples, trainers)]


def machine_info() -> dict:
    """When and where a row ran: rows of other days or CPUs are not comparable in seconds."""
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            "unknown CPU",
        )
        if Path("/proc/cpuinfo").exists()
        else "unknown CPU"
    )
    return {"date": time.strftime("%Y-%m-%d"), "machine": f"{cpu}, {os.cpu_count()} cores"}


def _get_steps(base: dict, overrides: dict) -> int:
    return int(overrides.get("train.steps", base["train"]["steps"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--rows",
        choices=[*ROWS, "all"],
        default=None,
        help="a table of rows (default: all = losses and archs, unless --row is given)",
    )
    ap.add_argument(
        "--row",
        action="append",
        default=[],
        metavar="YAML",
        help="an ad-hoc row, a YAML mapping of overrides, e.g. '{train.loss: hinge, train.steps: 3000}'",
    )
    ap.add_argument("-S", dest="sets", action="append", default=[], help="extra override for every row, KEY=VALUE")
    ap.add_argument("--out", default="bench/out/quality")
    ap.add_argument(
        "--only",
        action="append",
        default=[],
        help="keep rows with this value (e.g. wgan-gp) or this folder name (e.g. baseline)",
    )
    ap.add_argument(
        "--time",
        type=int,
        default=0,
        metavar="STEPS",
        help="only measure seconds per training step (STEPS steps per round, rows interleaved)",
    )
    ap.add_argument("--rounds", type=int, default=3, help="rounds of --time")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{out / 'mlflow.db'}")
    os.environ.pop("DVC_ROOT", None)  # dvclock.project_root() is then the working directory: the output folder
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    os.chdir(out)  # MLflow's default artifact root ./mlruns resolves here, not in the repository
    extra = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.sets)}
    table = args.rows or ("all" if not args.row else None)
    rows = [r for name, rs in ROWS.items() if table == name or (table == "all" and name in ALL) for r in rs]
    if args.only:  # filters the tables' rows; --row rows are always kept
        keep = set(args.only)
        rows = [r for r in rows if {_fmt(v) for v in r.values()} & keep or name_of(r) in keep]
    rows += [yaml.safe_load(r) or {} for r in args.row]
    full = [{**LOSS_SETTINGS.get(r.get("train.loss", ""), {}), **r, **extra} for r in rows]

    if args.time:
        per_step = time_rows(base, full, args.time, args.rounds)
        (s0, f0), n0 = per_step[0], _get_steps(base, full[0])
        print(
            f"\n| configuration | s/step (median of {args.rounds}×{args.time} steps) | GFLOP/step | "
            f"× first row (s/step; GFLOP) | × first row's run (steps × s/step; × GFLOP) |\n|---|---:|---:|---:|---:|"
        )
        for r, o, (s, f) in zip(rows, full, per_step):
            n = _get_steps(base, o)
            print(
                f"| {label_of(r)} | {s:.3f} | {f:.1f} | {s / s0:.2f}; {f / f0:.2f} | "
                f"{n * s / (n0 * s0):.2f}; {n * f / (n0 * f0):.2f} |"
            )
        return

    results = []
    for overrides, o in zip(rows, full):
        label, name = label_of(overrides), name_of(overrides)
        res = run_row(base, o, out / name)
        results.append((label, res))
        with open(out / "results.jsonl", "a") as f:
            f.write(json.dumps({"name": name, "overrides": o, **machine_info(), **res}) + "\n")
        print(
            f"{label}: FID {res['fid']:.2f} KID {res['kid_mean']:.4f} P {res['precision']:.3f} "
            f"R {res['recall']:.3f} ({res['seconds']:.0f} s train, {res['s_per_step']:.3f} s/step)",
            flush=True,
        )
    print(
        "\n| configuration | FID | KID × 1000 (± std) | precision | recall | train s | s/step | img/s |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    for label, r in results:
        print(
            f"| {label} | {r['fid']:.2f} | {1000 * r['kid_mean']:.1f} ± {1000 * r['kid_std']:.1f} | "
            f"{r['precision']:.3f} | {r['recall']:.3f} | {r['seconds']:.0f} | {r['s_per_step']:.3f} | "
            f"{r['img_per_s']:.0f} |"
        )


if __name__ == "__main__":
    main()
