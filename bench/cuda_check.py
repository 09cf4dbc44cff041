"""The train stage on a GPU: bf16 autocast, channels_last, uint8 data on the device, torch.compile, and a
SIGKILL-and-resume, each through `pipeline.stages.train.run` (the code `artgan train` runs).

Prints one line per check and a table of img/s. Meant for a lent GPU machine (the CPU works too, for a
dry run with few steps). Needs data/processed/images.npy (`dvc repro preprocess`).

    python bench/cuda_check.py [--device auto] [--steps 600] [--no-tracking]
    python bench/cuda_check.py --eval-only 512     # evaluate's samples and FID features, device vs CPU

--no-tracking replaces the MLflow run by a null one (for a machine without mlflow installed); the
training code is otherwise the stage's own.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def config(root: Path, device: str, steps: int, compile_: bool, every: int):
    from pipeline.config import load, parse

    raw = load().model_dump(by_alias=True)
    raw["train"].update(device=device, steps=steps, compile=compile_, checkpoint_every=every, snapshot_every=0,
                        sample_every=10**9, log_every=max(1, steps // 10), checkpoint_dir=str(root / "checkpoints"),
                        out_dir=str(root / "models"))
    raw["reports_dir"] = str(root / "reports")
    return parse(raw)


def disable_tracking() -> None:
    from pipeline import tracking
    from pipeline.training.loop import NullRun

    tracking.new_run = lambda *a, **k: contextlib.nullcontext(NullRun())
    tracking.run_exists = lambda run_id: False
    tracking.tracking_uri = lambda: "none"


def train(root: Path, args, compile_: bool = False) -> dict:
    from pipeline.stages import train as stage

    t0 = time.perf_counter()
    out = stage.run(config(root, args.device, args.steps, compile_, args.steps // 4))
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out


def weights(root: Path) -> dict:
    import torch

    return torch.load(root / "models" / "checkpoint.pt", map_location="cpu", weights_only=True)["generator"]


def compare(a: dict, b: dict) -> tuple[bool, float]:
    equal = all(bool((a[k] == b[k]).all()) for k in a)
    diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())
    return equal, diff


def eval_check(n: int) -> None:
    """evaluate's two device-dependent steps, on the GPU and on the CPU: samples of one generator (same
    latents), then the FID features of the same samples on each device and, per device, the FID of the
    first half of the samples against the second half."""
    import numpy as np
    import torch

    from pipeline.config import load
    from pipeline.metrics.fid import frechet_distance, statistics
    from pipeline.metrics.inception import FastInception, extract_features, feature_device
    from pipeline.models import build
    from pipeline.stages.evaluate import generate_uint8

    cfg = load()
    m, dev = cfg.model, feature_device(cfg.eval.device)
    torch.manual_seed(cfg.train.seed)
    G, _ = build(m.arch, cfg.data.image_size, m.z_dim, m.g_channels, m.d_channels)
    G.eval()
    t0 = time.perf_counter()
    on_cpu = generate_uint8(G, m.z_dim, n, cfg.eval.seed, cfg.eval.batch_size)
    t1 = time.perf_counter()
    on_dev = generate_uint8(G.to(dev), m.z_dim, n, cfg.eval.seed, cfg.eval.batch_size)
    t2 = time.perf_counter()
    differ = on_cpu != on_dev
    print(f"check: {n} samples of an untrained {m.arch} G on {dev} vs the CPU: {differ.mean():.2e} of the pixels differ, "
          f"max |diff| {np.abs(on_cpu.astype(int) - on_dev.astype(int)).max()} levels ({t1 - t0:.2f} s vs {t2 - t1:.2f} s)",
          flush=True)
    half = n // 2
    fids = []
    for model in (FastInception(), FastInception().to(dev)):
        t0 = time.perf_counter()
        feats = extract_features(model, on_cpu, cfg.eval.batch_size, precision=cfg.eval.fid_precision)
        dt = time.perf_counter() - t0
        (m1, s1), (m2, s2) = statistics(feats[:half]), statistics(feats[half:])
        fids.append((frechet_distance(m1, s1, m2, s2), feats, n / dt))
    (fc, fcpu, rc), (fd, fdev, rd) = fids
    print(f"check: features ({cfg.eval.fid_precision}) of the same {n} samples on {dev} vs the CPU: max rel diff "
          f"{np.abs(fdev - fcpu).max() / np.abs(fcpu).max():.1e}; FID (first half vs second half) {fd:.6f} vs "
          f"{fc:.6f}, relative difference {abs(fd - fc) / fc:.1e}; extract_features {rd:.0f} vs {rc:.1f} img/s",
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--no-tracking", action="store_true")
    ap.add_argument("--eval-only", type=int, default=0, metavar="N",
                    help="only compare evaluate's sampling and FID features on the device and the CPU, N samples")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)  # the run that gets killed
    args = ap.parse_args()
    if args.eval_only:
        eval_check(args.eval_only)
        return
    if args.no_tracking:
        disable_tracking()
    if args.child:
        train(Path(args.child), args)
        return

    import torch

    from pipeline.training.loop import pick_device

    dev = pick_device(args.device)
    print(f"torch {torch.__version__}, device {dev}"
          + (f" ({torch.cuda.get_device_name()}, capability {torch.cuda.get_device_capability()})"
             if dev.type == "cuda" else ""), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # 1. eager (bf16 autocast + channels_last on CUDA), uninterrupted
        a = train(tmp / "a", args)
        rows.append(("eager", a))
        print(f"check: device {a['device']}, losses {a.get('loss_d'):.4f} / {a.get('loss_g'):.4f} finite", flush=True)

        # 2. the same run killed with SIGKILL after its first checkpoint, then resumed in this process
        b = tmp / "b"
        child = subprocess.Popen([sys.executable, __file__, "--child", str(b), "--device", args.device,
                                  "--steps", str(args.steps)] + (["--no-tracking"] if args.no_tracking else []),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 600
        while not list((b / "checkpoints").glob("*/latest.pt")) and child.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.wait()
        killed = child.returncode == -signal.SIGKILL
        from pipeline.training import checkpoint

        latest = next((b / "checkpoints").glob("*/latest.pt"), None)
        at = checkpoint.load(latest)["step"] if latest else 0
        print(f"check: child {'killed by SIGKILL' if killed else f'exited {child.returncode} before the kill'}; "
              f"latest checkpoint at step {at} of {args.steps}", flush=True)
        resumed = train(b, args)
        equal, diff = compare(weights(tmp / "a"), weights(b))
        print(f"check: resumed from step {at}: final G weights {'bitwise equal' if equal else 'differ'} "
              f"(max |diff| {diff:.3g}) to the uninterrupted run", flush=True)
        rows.append(("eager, resumed after SIGKILL (part after the kill)", resumed))

        # 3. torch.compile
        c = train(tmp / "c", args, compile_=True)
        rows.append(("torch.compile (compile time included in wall)", c))
        equal, diff = compare(weights(tmp / "a"), weights(tmp / "c"))
        print(f"check: compiled run's final G weights vs eager: max |diff| {diff:.3g}", flush=True)

    print(f"\n| run ({args.steps} steps, params.yaml model and batch) | img/s | wall s |\n|---|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['img_per_s']:.0f} | {r['wall_s']} |")


if __name__ == "__main__":
    main()
