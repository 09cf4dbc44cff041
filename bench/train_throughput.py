"""Training throughput: img/s of a full G+D step, artgan's trainer beside the classic DCGAN loop.

The reference is pytorch/examples' dcgan/main.py loop as written: an ImageFolder of the PNGs with
Resize/CenterCrop/ToTensor/Normalize, a DataLoader (2 workers, shuffled), BCE on sigmoid outputs, three
D passes per iteration with D's weight gradients computed in G's step too. Both train the same DCGAN
(64 px, 64 channels, z 100, batch 64) with the same losses (non-saturating), measured in the same run.
The ceiling is the step's FLOPs (torch's FLOP counter) at this machine's measured fp32 matmul rate.
artgan also runs with `train.amp` the other way from its default: on a CPU with bf16 autocast (oneDNN runs
it on AMX or AVX512-BF16 where the CPU has them; a second ceiling row at the bf16 matmul rate; on a CPU without
them only with --bf16, as there it is emulated and slow), on CUDA in fp32; on CUDA also with `train.cuda_graphs`
(each step one replayed CUDA graph).
The loops take turns round by round (in a rotating order), so a shared machine's changes of speed reach
every row alike.

    python bench/train_throughput.py [--steps 15] [--repeats 3] [--size 64] [--channels 64] [--compile] [--bf16]
Needs data/raw (`dvc repro fetch`).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

RAW = Path("data/raw")


def peak_gflops(n: int = 2048, reps: int = 10, dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def reference_loop(size: int, ch: int, batch: int, steps: int, device: torch.device):
    """The classic loop, set up; returns a function that runs `steps` iterations of it."""
    import torchvision.datasets as dset
    import torchvision.transforms as transforms

    from pipeline.models import dcgan

    dataset = dset.ImageFolder(
        root=str(RAW),
        transform=transforms.Compose(
            [
                transforms.Resize(size),
                transforms.CenterCrop(size),
                transforms.ToTensor(),
                transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
            ]
        ),
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, shuffle=True, num_workers=2, drop_last=True, persistent_workers=True
    )
    torch.manual_seed(0)
    netG, netD = dcgan.build(size, 100, ch, ch)
    netG, netD = netG.to(device), netD.to(device)
    criterion = nn.BCEWithLogitsLoss()  # D returns logits; the example's Sigmoid+BCELoss is the same work
    optD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    it = iter(loader)

    def batches():
        nonlocal it
        while True:
            try:
                yield next(it)
            except StopIteration:
                it = iter(loader)

    source = batches()

    def round_() -> None:
        for _ in range(steps):
            real = next(source)[0].to(device)
            b = real.size(0)
            netD.zero_grad()
            label = torch.full((b,), 1.0, device=device)
            errD_real = criterion(netD(real), label)
            errD_real.backward()
            noise = torch.randn(b, 100, 1, 1, device=device)
            fake = netG(noise)
            label.fill_(0.0)
            errD_fake = criterion(netD(fake.detach()), label)
            errD_fake.backward()
            optD.step()
            netG.zero_grad()
            label.fill_(1.0)
            errG = criterion(netD(fake), label)
            errG.backward()
            optG.step()

    return round_


def load_uint8(size: int, n: int) -> np.ndarray:
    from pipeline.data.decode import to_rgb_square

    paths = sorted((RAW / "images").glob("*.png"))[:n]
    return np.stack([to_rgb_square(p, size, (255, 255, 255)) for p in paths])


def artgan_trainer(
    size: int,
    ch: int,
    batch: int,
    device: torch.device,
    compile_: bool,
    images: np.ndarray,
    amp: str = "auto",
    graphs: bool = False,
):
    from pipeline.config import parse
    from pipeline.training.dist import World
    from pipeline.training.loop import Data, Trainer

    cfg = parse(
        {
            "data": {"image_size": size},
            "model": {"arch": "dcgan", "g_channels": ch, "d_channels": ch},
            "train": {
                "batch_size": batch,
                "loss": "ns",
                "ema_decay": 0.0,
                "augment": [],
                "compile": compile_,
                "amp": amp,
                "cuda_graphs": graphs,
            },
        }
    )
    data = Data(images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device), labels=None, n_classes=0)
    return Trainer(cfg, data, World(), device)


def artgan_loop(trainer, steps: int, start: int = 0):
    """Returns a function that runs `steps` more of the trainer's G+D steps (numbered on from `start`)."""
    done = start

    def round_() -> None:
        nonlocal done
        for _ in range(steps):
            done += 1
            trainer.gan_step(done)

    return round_


def timed_rounds(loops: dict, steps: int, repeats: int, batch: int, device: torch.device) -> dict[str, list[float]]:
    """img/s of each loop over `repeats` rounds, the loops taking turns round by round, so that a shared
    machine's drift in speed (this VM's moves by tens of % within minutes) reaches every row alike. The order
    rotates each round, so that no row always follows the reference (whose DataLoader workers go on
    prefetching a few batches after its round). A first round of each warms up (DataLoader workers,
    allocator, oneDNN primitives) untimed."""
    rates: dict[str, list[float]] = {name: [] for name in loops}
    names = list(loops)
    for rep in range(repeats + 1):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            t0 = time.perf_counter()
            loops[name]()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if rep:
                rates[name].append(steps * batch / (time.perf_counter() - t0))
        if rep:
            print(f"  round {rep}: " + ", ".join(f"{r[-1]:.1f}" for r in rates.values()) + " img/s", flush=True)
    return rates


def step_flops(trainer) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        trainer.gan_step(10**6)
    return float(fc.get_total_flops())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--compile", action="store_true", help="also time artgan with torch.compile")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--bf16", action="store_true", help="time bf16 on a CPU without native bf16 too (slow)")
    args = ap.parse_args()
    from pipeline.device import cpu_bf16_native
    from pipeline.training.loop import pick_device

    device = pick_device(args.device)
    torch.use_deterministic_algorithms(False)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    print(
        f"device {device}, {torch.get_num_threads()} threads, dcgan {args.size} px, {args.channels} channels, "
        f"batch {args.batch}, {args.steps} steps × {args.repeats} repeats",
        flush=True,
    )
    images = load_uint8(args.size, 2048)

    loops = {
        "classic DCGAN loop (DataLoader, 2 workers)": reference_loop(
            args.size, args.channels, args.batch, args.steps, device
        )
    }
    trainer = artgan_trainer(args.size, args.channels, args.batch, device, False, images)
    loops["artgan Trainer.gan_step"] = artgan_loop(trainer, args.steps)
    other = "off" if device.type == "cuda" else "bf16"  # the default's opposite: fp32 on CUDA, bf16 autocast on a CPU
    emulated = device.type == "cpu" and not cpu_bf16_native()
    if emulated and not args.bf16:  # emulated bf16 runs at about 1/13 of fp32 (AVX2): rounds would take many minutes
        print(
            f"  no train.amp: bf16 row: this CPU has no native bf16 (torch sees "
            f"{torch.backends.cpu.get_cpu_capability()}); --bf16 times it all the same",
            flush=True,
        )
    else:
        loops[f"artgan Trainer.gan_step, train.amp: {other}"] = artgan_loop(
            artgan_trainer(args.size, args.channels, args.batch, device, False, images, other), args.steps
        )
    graphed = None
    if device.type == "cuda":  # the first (untimed) round holds the warm-up steps and the capture
        graphed = artgan_trainer(args.size, args.channels, args.batch, device, False, images, graphs=True)
        loops["artgan Trainer.gan_step + train.cuda_graphs"] = artgan_loop(graphed, args.steps)
    if args.compile:
        try:
            ct = artgan_trainer(args.size, args.channels, args.batch, device, True, images)
            t0 = time.perf_counter()
            artgan_loop(ct, 2)()  # compile outside the timing
            print(f"  torch.compile: first two steps {time.perf_counter() - t0:.1f} s", flush=True)
            loops["artgan Trainer.gan_step + torch.compile"] = artgan_loop(ct, args.steps, start=2)
        except Exception as exc:  # report and go on: the table of the other rows still stands
            print(f"  torch.compile failed: {type(exc).__name__}: {str(exc).splitlines()[0]}", flush=True)
    print("  rows in turn: " + " | ".join(loops), flush=True)
    rows = list(timed_rounds(loops, args.steps, args.repeats, args.batch, device).items())
    if graphed is not None:
        print(
            f"  train.cuda_graphs: steps replayed from captured graphs: {graphed.runner.captured_kinds()}", flush=True
        )
    flops = step_flops(trainer)

    if device.type == "cuda":
        a, b = torch.randn(8192, 8192, device=device), torch.randn(8192, 8192, device=device)
        a @ b
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(10):
            a @ b
        torch.cuda.synchronize()
        peak = 2 * 8192**3 * 10 / (time.perf_counter() - t0) / 1e9
    else:
        peak = peak_gflops()
    # the ceiling of bf16 autocast (the amp row on a CPU): the step's FLOPs at the measured bf16 matmul rate
    peak16 = None if device.type == "cuda" or (emulated and not args.bf16) else peak_gflops(dtype=torch.bfloat16)
    ceiling = peak * 1e9 / (flops / args.batch)
    ref_med = statistics.median(rows[0][1])
    print(
        f"\nstep: {flops / 1e9:.1f} GFLOP per batch of {args.batch} ({flops / args.batch / 1e9:.2f} GFLOP/img); "
        f"fp32 matmul peak measured {peak:.0f} GFLOP/s -> ceiling {ceiling:.0f} img/s\n"
    )
    print(
        "| loop | img/s median (min–max) | × reference (per round: min–max) | % of fp32 ceiling |\n|---|---:|---:|---:|"
    )
    for name, rates in rows:
        med = statistics.median(rates)
        per_round = [r / q for r, q in zip(rates, rows[0][1])]
        print(
            f"| {name} | {med:.1f} ({min(rates):.1f}–{max(rates):.1f}) | {med / ref_med:.2f} "
            f"({min(per_round):.2f}–{max(per_round):.2f}) | {100 * med / ceiling:.0f}% |"
        )
    print(f"| FLOP ceiling (fp32) | {ceiling:.0f} | {ceiling / ref_med:.2f} | 100% |")
    if peak16:
        c16 = peak16 * 1e9 / (flops / args.batch)
        print(
            f"| FLOP ceiling (bf16, {peak16:.0f} GFLOP/s; oneDNN bf16 support: "
            f"{torch.ops.mkldnn._is_mkldnn_bf16_supported()}) | {c16:.0f} | {c16 / ref_med:.2f} | |"
        )


if __name__ == "__main__":
    main()
