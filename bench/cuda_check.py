"""The train stage on a GPU: bf16 autocast, channels_last, uint8 data on the device, torch.compile, CUDA
graphs (`train.cuda_graphs`), and a SIGKILL-and-resume eagerly and with CUDA graphs, each through
`pipeline.stages.train.run` (the code `artgan train` runs).

Prints one line per check and a table of img/s. Meant for a lent GPU machine (the CPU works too, for a
dry run with few steps). Needs data/processed/images.npy (`dvc repro preprocess`).

    python bench/cuda_check.py [--device auto] [--steps 600] [--no-tracking] [--skip-compile]
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


def config(root: Path, device: str, steps: int, compile_: bool, every: int, graphs: bool = False):
    from pipeline.config import load, parse

    raw = load().model_dump(by_alias=True)
    raw["train"].update(
        device=device,
        steps=steps,
        compile=compile_,
        cuda_graphs=graphs,
        checkpoint_every=every,
        snapshot_every=0,
        sample_every=10**9,
        log_every=max(1, steps // 10),
        checkpoint_dir=str(root / "checkpoints"),
        out_dir=str(root / "models"),
    )
    raw["reports_dir"] = str(root / "reports")
    return parse(raw)


def disable_tracking() -> None:
    from pipeline import tracking
    from pipeline.training.loop import NullRun

    tracking.new_run = lambda *a, **k: contextlib.nullcontext(NullRun())
    tracking.run_exists = lambda run_id: False
    tracking.tracking_uri = lambda: "none"


def train(root: Path, args, compile_: bool = False, graphs: bool = False) -> dict:
    from pipeline.stages import train as stage

    t0 = time.perf_counter()
    out = stage.run(config(root, args.device, args.steps, compile_, args.steps // 4, graphs))
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
    print(
        f"check: {n} samples of an untrained {m.arch} G on {dev} vs the CPU: {differ.mean():.2e} of the pixels differ, "
        f"max |diff| {np.abs(on_cpu.astype(int) - on_dev.astype(int)).max()} levels ({t1 - t0:.2f} s vs {t2 - t1:.2f} s)",
        flush=True,
    )
    half = n // 2
    fids = []
    for model in (FastInception(), FastInception().to(dev)):
        t0 = time.perf_counter()
        feats = extract_features(model, on_cpu, cfg.eval.batch_size, precision=cfg.eval.fid_precision)
        dt = time.perf_counter() - t0
        (m1, s1), (m2, s2) = statistics(feats[:half]), statistics(feats[half:])
        fids.append((frechet_distance(m1, s1, m2, s2), feats, n / dt))
    (fc, fcpu, rc), (fd, fdev, rd) = fids
    print(
        f"check: features ({cfg.eval.fid_precision}) of the same {n} samples on {dev} vs the CPU: max rel diff "
        f"{np.abs(fdev - fcpu).max() / np.abs(fcpu).max():.1e}; FID (first half vs second half) {fd:.6f} vs "
        f"{fc:.6f}, relative difference {abs(fd - fc) / fc:.1e}; extract_features {rd:.0f} vs {rc:.1f} img/s",
        flush=True,
    )


def kill_and_resume(root: Path, args, reference: Path, graphs: bool) -> tuple[dict, bool, float, int]:
    """The run killed with SIGKILL after its first checkpoint (a child process), then resumed here; returns the
    resumed run's figures, whether its final G equals `reference`'s bitwise, the max |diff| and the step it
    resumed from."""
    from pipeline.training import checkpoint

    child = subprocess.Popen(
        [sys.executable, __file__, "--child", str(root), "--device", args.device, "--steps", str(args.steps)]
        + (["--no-tracking"] if args.no_tracking else [])
        + (["--child-graphs"] if graphs else []),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 600
    while not list((root / "checkpoints").glob("*/latest.pt")) and child.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    if child.poll() is None:
        os.kill(child.pid, signal.SIGKILL)
    child.wait()
    killed = child.returncode == -signal.SIGKILL
    latest = next((root / "checkpoints").glob("*/latest.pt"), None)
    at = checkpoint.load(latest)["step"] if latest else 0
    print(
        f"check: child {'killed by SIGKILL' if killed else f'exited {child.returncode} before the kill'}; "
        f"latest checkpoint at step {at} of {args.steps}",
        flush=True,
    )
    resumed = train(root, args, graphs=graphs)
    equal, diff = compare(weights(reference), weights(root))
    return resumed, equal, diff, at


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--no-tracking", action="store_true")
    ap.add_argument(
        "--eval-only",
        type=int,
        default=0,
        metavar="N",
        help="only compare evaluate's sampling and FID features on the device and the CPU, N samples",
    )
    ap.add_argument("--skip-compile", action="store_true", help="leave out the torch.compile run")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)  # the run that gets killed
    ap.add_argument("--child-graphs", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.eval_only:
        eval_check(args.eval_only)
        return
    if args.no_tracking:
        disable_tracking()
    if args.child:
        train(Path(args.child), args, graphs=args.child_graphs)
        return

    import torch

    from pipeline.training.loop import pick_device

    dev = pick_device(args.device)
    print(
        f"torch {torch.__version__}, device {dev}"
        + (
            f" ({torch.cuda.get_device_name()}, capability {torch.cuda.get_device_capability()})"
            if dev.type == "cuda"
            else ""
        ),
        flush=True,
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # 1. eager (bf16 autocast + channels_last on CUDA), uninterrupted
        a = train(tmp / "a", args)
        rows.append(("eager", a))
        print(f"check: device {a['device']}, losses {a.get('loss_d'):.4f} / {a.get('loss_g'):.4f} finite", flush=True)

        # 2. the same run killed with SIGKILL after its first checkpoint, then resumed in this process
        resumed, equal, diff, at = kill_and_resume(tmp / "b", args, tmp / "a", graphs=False)
        print(
            f"check: resumed from step {at}: final G weights {'bitwise equal' if equal else 'differ'} "
            f"(max |diff| {diff:.3g}) to the uninterrupted run",
            flush=True,
        )
        rows.append(("eager, resumed after SIGKILL (part after the kill)", resumed))

        # 3. torch.compile
        if not args.skip_compile:
            c = train(tmp / "c", args, compile_=True)
            rows.append(("torch.compile (compile time included in wall)", c))
            equal, diff = compare(weights(tmp / "a"), weights(tmp / "c"))
            print(f"check: compiled run's final G weights vs eager: max |diff| {diff:.3g}", flush=True)

        # 4. CUDA graphs, uninterrupted, then killed and resumed
        g = train(tmp / "g", args, graphs=True)
        rows.append(("train.cuda_graphs (3 eager warm-up steps and the capture included)", g))
        equal, diff = compare(weights(tmp / "a"), weights(tmp / "g"))
        print(
            f"check: CUDA-graph run's final G weights vs eager: max |diff| {diff:.3g} (capturable Adam rounds "
            f"its bias correction on the device, so a few ulps apart at first)",
            flush=True,
        )
        resumed, equal, diff, at = kill_and_resume(tmp / "h", args, tmp / "g", graphs=True)
        print(
            f"check: CUDA graphs, resumed from step {at}: final G weights "
            f"{'bitwise equal' if equal else 'differ'} (max |diff| {diff:.3g}) to the uninterrupted graph run",
            flush=True,
        )
        rows.append(("train.cuda_graphs, resumed after SIGKILL (part after the kill)", resumed))

    print(f"\n| run ({args.steps} steps, params.yaml model and batch) | img/s | wall s |\n|---|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['img_per_s']:.0f} | {r['wall_s']} |")


if __name__ == "__main__":
    main()
