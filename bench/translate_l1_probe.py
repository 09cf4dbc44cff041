"""How low can the translate default's U-Net take the held-out L1 in the default's budget, trained on L1 alone?

pix2pix's L1 target (≤ ½ of identity's on the held-out pairs) asks for a better function of the line art, so this
probe drops the adversarial term and trains the pix2pix U-Net (`pipeline.models.translators.UNet`, the translate
default's 32 channels) on the L1 distance itself, the metric, for the default's steps and batch, under a few
variants of what could limit it:

- `instance`: the model as it is (instance norm, the papers' batch of one);
- `batch`: batch norm in its place (instance norm over a 2×2 or 4×4 map throws away each channel's mean, which
  could carry a glyph's colour);
- `lr2`: twice the learning rate;
- `flip`: each pair mirrored left-right with probability ½ (more pairs to generalise from);
- `multiply`: `translate.blend: multiply`, the U-Net paints a colour layer that is multiplied with the line art, so
  that its ink and white paper need no drawing.

It prints one table: the held-out L1 of the live and of the EMA weights (decay 0.999) every `--every` steps, the
live weights' held-out L1 split into its part on the pixels the input already has right (within 16 of 255 in every
channel: ink and paper) and its part on the rest (the colours), and the EMA weights' L1 on every 8th training pair, with identity (the input unchanged) measured in the same run as
the reference. One process, one thread by default; the variants run one after another.

    python bench/translate_l1_probe.py --processed data/processed --variants instance batch lr2 flip
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

VARIANTS = ("instance", "batch", "lr2", "flip", "multiply")


def probe(variant: str, pairs: dict, steps: int, lr: float, every: int, size: int, channels: int):
    """Yield (step, live held-out L1, EMA held-out L1, EMA training L1) every `every` steps."""
    import torch
    from torch import nn

    import pipeline.models.translators as T

    torch.manual_seed(0)
    norm = T._norm
    if variant == "batch":
        T._norm = lambda c: nn.BatchNorm2d(c)
    try:
        G = T.init_weights(T.UNet(size, channels, "multiply" if variant == "multiply" else "none"))
    finally:
        T._norm = norm

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() / 127.5 - 1

    x_tr, y_tr = (tensor(a) for a in pairs["train"])
    x_ho, y_ho = (tensor(a) for a in pairs["holdout"])
    opt = torch.optim.Adam(G.parameters(), lr * (2 if variant == "lr2" else 1), betas=(0.5, 0.999))
    ema = [p.detach().clone() for p in G.parameters()]
    rng = np.random.default_rng(0)

    same = torch.from_numpy((np.abs(pairs["holdout"][0].astype(np.int16) - pairs["holdout"][1]) <= 16).all(-1))

    def pixel_errors(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """|G(x) - y| per pixel (N×H×W, the mean over channels, in [0, 1] units), from one eval pass."""
        G.eval()
        with torch.no_grad():
            err = torch.cat([(G(x[i : i + 64]) - y[i : i + 64]).abs().mean(1) / 2 for i in range(0, len(x), 64)])
        G.train()
        return err

    def score(x: torch.Tensor, y: torch.Tensor) -> float:
        return pixel_errors(x, y).mean().item()

    def swap(weights: list[torch.Tensor]) -> list[torch.Tensor]:
        before = [p.detach().clone() for p in G.parameters()]
        with torch.no_grad():
            for p, w in zip(G.parameters(), weights):
                p.copy_(w)
        return before

    for step in range(1, steps + 1):
        r = rng.choice(len(x_tr), 16, replace=False)
        x, y = x_tr[r], y_tr[r]
        if variant == "flip":
            f = torch.from_numpy(rng.random(16) < 0.5)[:, None, None, None]
            x, y = torch.where(f, x.flip(3), x), torch.where(f, y.flip(3), y)
        loss = (G(x) - y).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema, G.parameters()):
                e.lerp_(p, 1 - 0.999)
        if step % every == 0:
            err = pixel_errors(x_ho, y_ho)  # the live L1 and its parts on the pixels in `same` and on the rest
            live, parts = (
                err.mean().item(),
                ((err * same).sum().item() / err.numel(), (err * ~same).sum().item() / err.numel()),
            )
            saved = swap(ema)
            yield step, live, score(x_ho, y_ho), score(x_tr[::8], y_tr[::8]), parts
            swap(saved)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--processed", type=Path, default=Path("data/processed"), help="a translate run's preprocess output"
    )
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--steps", type=int, default=1800, help="the translate default's steps (batch 16)")
    ap.add_argument("--lr", type=float, default=8e-4, help="the translate default's lr_g")
    ap.add_argument("--every", type=int, default=600)
    ap.add_argument("--channels", type=int, default=32, help="the translate default's model.g_channels")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch

    from bench.translate_gap import l1, load_pairs

    torch.set_num_threads(args.threads)
    pairs = load_pairs(args.processed)
    size = pairs["train"][0].shape[1]
    ident = l1(*pairs["holdout"])
    print(
        f"{len(pairs['train'][0])} training pairs, {len(pairs['holdout'][0])} held out, {size} px, "
        f"{args.steps} steps of 16, lr {args.lr:g}, {args.channels} channels, {args.threads} thread(s)\n"
    )
    x, y = (a.astype(np.int16) for a in pairs["holdout"])
    err, same = np.abs(x - y).mean(-1) / 255, (np.abs(x - y) <= 16).all(-1)
    ident_parts = ((err * same).sum() / err.size, (err * ~same).sum() / err.size)
    print(
        "| variant | step | held-out L1, live (÷ identity) | of which: pixels the input has right + the rest | "
        "held-out L1, EMA (÷ identity) | training L1, EMA | s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(
        f"| identity (the input unchanged) | – | {ident:.4f} (1.00×) | {ident_parts[0]:.4f} + {ident_parts[1]:.4f} | "
        f"{ident:.4f} (1.00×) | {l1(pairs['train'][0][::8], pairs['train'][1][::8]):.4f} | – |"
    )
    for variant in args.variants:
        t0 = time.perf_counter()
        rows = probe(variant, pairs, args.steps, args.lr, args.every, size, args.channels)
        for step, live, ema, train, (right, rest) in rows:
            print(
                f"| {variant} | {step} | {live:.4f} ({live / ident:.2f}×) | {right:.4f} + {rest:.4f} | "
                f"{ema:.4f} ({ema / ident:.2f}×) | {train:.4f} | {time.perf_counter() - t0:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
