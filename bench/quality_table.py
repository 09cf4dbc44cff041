"""FID / KID of several training configurations at equal steps on the default data (a benchmark, not a test).

Each row trains with params.yaml plus the row's overrides, then evaluates with the same protocol as
`artgan evaluate` (eval.* params, the preprocess FID reference). Needs `dvc repro preprocess` first.

    python bench/quality_table.py                      # every loss, then every architecture
    python bench/quality_table.py --rows losses -S train.steps=300
Outputs go under bench/out/quality/<row>/ (grid.png per row) and a Markdown table is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import yaml

ROWS = {
    "losses": [{"train.loss": loss} for loss in ("bce", "ns", "wgan", "wgan-gp", "lsgan", "hinge")],
    "archs": [{"model.arch": "mlp"}, {"model.arch": "dcgan"},
              {"model.arch": "resnet", "model.spectral_norm": True, "train.loss": "hinge"},
              {"model.arch": "vae", "train.ema_decay": 0.0, "train.lr_g": 1e-3, "train.lr_d": 1e-3, "train.augment": []}],
}
# per-loss settings the literature pairs with each objective (otherwise the defaults)
LOSS_SETTINGS = {
    "wgan": {"train.n_critic": 5, "train.lr_g": 5e-5, "train.lr_d": 5e-5, "train.beta1": 0.0},
    "wgan-gp": {"train.n_critic": 5, "train.lr_g": 1e-4, "train.lr_d": 1e-4, "train.beta1": 0.0, "train.beta2": 0.9},
}


def _set(raw: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


def run_row(base: dict, overrides: dict, out: Path) -> dict:
    from pipeline.config import parse
    from pipeline.stages import evaluate, render, train

    raw = json.loads(json.dumps(base))
    for k, v in overrides.items():
        _set(raw, k, v)
    _set(raw, "train.out_dir", str(out / "models"))
    _set(raw, "train.checkpoint_dir", str(out / "ckpt"))
    _set(raw, "reports_dir", str(out))
    cfg = parse(raw)
    t0 = time.perf_counter()
    figures = train.run(cfg)
    seconds = time.perf_counter() - t0
    metrics = evaluate.run(cfg)
    render.run(cfg)
    return {"seconds": seconds, "img_per_s": figures["img_per_s"], **metrics}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", choices=[*ROWS, "all"], default="all")
    ap.add_argument("-S", dest="sets", action="append", default=[], help="extra override for every row, KEY=VALUE")
    ap.add_argument("--out", default="bench/out/quality")
    ap.add_argument("--only", action="append", default=[], help="keep rows with this value (e.g. wgan-gp)")
    args = ap.parse_args()
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{Path(tempfile.gettempdir()) / 'artgan-quality.db'}")
    base = yaml.safe_load(Path("params.yaml").read_text())
    extra = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.sets)}
    rows = [r for name, rs in ROWS.items() if args.rows in (name, "all") for r in rs]
    if args.only:
        rows = [r for r in rows if set(map(str, r.values())) & set(args.only)]
    results = []
    for overrides in rows:
        o = {**LOSS_SETTINGS.get(overrides.get("train.loss", ""), {}), **overrides, **extra}
        label = ", ".join(f"{k}={v}" for k, v in overrides.items())
        name = "_".join(str(v) for v in overrides.values()).replace("/", "-")
        res = run_row(base, o, Path(args.out) / name)
        results.append((label, res))
        print(f"{label}: FID {res['fid']:.2f} KID {res['kid_mean']:.4f} ({res['seconds']:.0f} s train)", flush=True)
    print("\n| configuration | FID | KID × 1000 (± std) | train s | img/s |\n|---|---:|---:|---:|---:|")
    for label, r in results:
        print(f"| {label} | {r['fid']:.2f} | {1000 * r['kid_mean']:.1f} ± {1000 * r['kid_std']:.1f} | "
              f"{r['seconds']:.0f} | {r['img_per_s']:.0f} |")


if __name__ == "__main__":
    main()
