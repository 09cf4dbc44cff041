"""Where a paired translator's L1 goes: its training pairs against the held-out ones, snapshot by snapshot.

Reads a translate run's preprocess output (inputs.npy, images.npy, inputs.csv with the split and each input's
target row) and its checkpoint (and snapshots, when given), and prints one table: the mean L1 to the targets on
every `--train-every`-th training pair and on every held-out pair, each also as a fraction of the identity's L1
(the input unchanged) on the same pairs. Two references are measured in the same run: identity, and retrieval
(each input's k nearest inputs among all training pairs by L2, the per-pixel median of their targets; a
training pair never retrieves itself). If the training pairs' L1 is far below the held-out pairs', the
translator is learning what does not carry over; if both are high, it has not fitted yet.

A third reference is a floor, not a method: the lowest L1 any translator (a function of its input) can reach on
the scored pairs, from the pairs whose inputs are pixel-identical (one outline, several colourings: skin tones,
flags). Each such group's targets are best met by their per-pixel median (the L1-optimal constant); an input of
its own could in principle be met exactly, so it adds 0. Another such reference says what `translate.blend:
multiply` can draw: each input times its best colour layer (target ÷ input per pixel, clipped to [0, 1]), which
misses only where a target is brighter than its input; and a count line gives the share of pixels the input
already has right (within 16 of 255 in every channel). `--no-model` prints the references alone.

A second table splits the final translator's L1 on each split by the kind of emoji, read from the file names when they
are Unicode code points (OpenMoji's and Noto's naming; other names count as "others"): skin-tone variants (a
modifier U+1F3FB-1F3FF: one outline, several colourings), flags, the artist's own (private use, U+E000-F8FF), and
the others. It says where the error is: in colours that follow from the kind of drawing, or in ones a novel
outline does not say.

    python bench/translate_gap.py --processed data/processed --checkpoint models/checkpoint.pt \
        --snapshots models/snapshots.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


SKIN_TONES = range(0x1F3FB, 0x1F400)  # the Fitzpatrick modifiers
KINDS = ("skin-tone variants", "flags", "the artist's own (private use)", "others")


def emoji_kind(name: str) -> str:
    """One of KINDS for a file named by its code points in hex, joined by '-' (e.g. 1F44B-1F3FD); others for any
    other name."""
    try:
        points = [int(part, 16) for part in name.split("-")]
    except ValueError:
        return KINDS[3]
    if any(p in SKIN_TONES for p in points):
        return KINDS[0]
    if any(0x1F1E6 <= p <= 0x1F1FF or 0xE0020 <= p <= 0xE007F for p in points):  # regional indicators, tags
        return KINDS[1]
    if 0xE000 <= points[0] <= 0xF8FF:
        return KINDS[2]
    return KINDS[3]


def split_names(processed: Path) -> dict[str, list[str]]:
    """Each split's input names (the `name` column, else the file's stem), in load_pairs' order."""
    import pandas as pd

    from pipeline.data.pairing import TRAIN
    from pipeline.translation.pairs import holdout_rows

    rows = pd.read_csv(processed / "inputs.csv")
    names = (rows["name"] if "name" in rows else rows["path"].map(lambda p: Path(p).stem)).astype(str).to_numpy()
    train = np.flatnonzero(rows["split"].astype(str).to_numpy() == TRAIN)
    return {"train": list(names[train]), "holdout": list(names[holdout_rows(rows)])}


def by_kind(names: list[str], x: np.ndarray, y: np.ndarray, pred: np.ndarray) -> list[tuple]:
    """(kind, pairs, identity's L1, the floor's, the translator's, its share of the translator's summed L1) for each
    kind in KINDS that the pairs hold."""
    kinds = np.array([emoji_kind(n) for n in names])
    floor = ambiguity_floor(x, y)

    def each(a: np.ndarray) -> np.ndarray:
        return np.abs(a.astype(np.float32) - y.astype(np.float32)).mean(axis=(1, 2, 3)) / 255

    ident, low, got = each(x), each(floor), each(pred)
    out = []
    for kind in KINDS:
        rows = kinds == kind
        if rows.any():
            share = float(got[rows].sum() / got.sum()) if got.sum() else 0.0
            means = (float(a[rows].mean()) for a in (ident, low, got))
            out.append((kind, int(rows.sum()), *means, share))
    return out


def load_pairs(processed: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'train': (inputs, targets), 'holdout': (...)}: every pair of each split, uint8 N×S×S×3, the held-out ones
    in the order evaluate and render use (pipeline.translation.pairs.holdout_rows)."""
    import pandas as pd

    from pipeline.data.pairing import TRAIN
    from pipeline.translation.pairs import holdout_rows

    rows = pd.read_csv(processed / "inputs.csv")
    inputs = np.load(processed / "inputs.npy", mmap_mode="r")
    targets = np.load(processed / "images.npy", mmap_mode="r")
    train = np.flatnonzero(rows["split"].astype(str).to_numpy() == TRAIN)
    out = {}
    for split, idx in (("train", train), ("holdout", holdout_rows(rows))):
        out[split] = (np.asarray(inputs[idx]), np.asarray(targets[rows["target"].to_numpy()[idx]]))
    return out


def l1(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean() / 255)


def retrieval(train_x: np.ndarray, train_y: np.ndarray, x: np.ndarray, k: int, own: np.ndarray | None) -> np.ndarray:
    """The per-pixel median of the targets of each input's k nearest training inputs (L2); `own[i]`, when given,
    is query i's own row in the training pairs, which it may not retrieve."""
    ref = train_x.reshape(len(train_x), -1).astype(np.float32)
    q = x.reshape(len(x), -1).astype(np.float32)
    d = (q**2).sum(1)[:, None] + (ref**2).sum(1)[None, :] - 2 * q @ ref.T
    if own is not None:
        d[np.arange(len(q)), own] = np.inf
    nearest = np.argsort(d, axis=1)[:, :k]
    return np.median(train_y[nearest], axis=1).round().astype(np.uint8)


def ambiguity_floor(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """What the best translator of pairs (x, y) outputs for each pair: the per-pixel median of the targets of
    every pair whose input is pixel-identical to its own (its own target when it is alone). No function of the
    input does better in L1 on these pairs: for a group of equal inputs it must give one image, and the median
    minimises the summed absolute differences pixel by pixel."""
    out = y.astype(np.float32)
    for rows in shared_groups(x):
        out[rows] = np.median(y[rows].astype(np.float32), axis=0)
    return out


def multiply_best(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The closest to targets `y` that the multiply blend can draw over inputs `x` (uint8): x × c with c, the colour
    layer in [0, 1], set per pixel to y ÷ x where that is at most 1 (exact there) and to 1 where the target is
    brighter than the input (an ink pixel the target paints over). Values in 0..255, float32."""
    xf, yf = x.astype(np.float32), y.astype(np.float32)
    layer = np.clip(yf / np.maximum(xf, 1.0), 0.0, 1.0)
    return xf * layer


def same_pixels(x: np.ndarray, y: np.ndarray, tol: int = 16) -> float:
    """The share of pixels whose input already is its target, within `tol` (of 255) in every channel."""
    return float((np.abs(x.astype(np.int16) - y.astype(np.int16)) <= tol).all(-1).mean())


def shared_groups(x: np.ndarray) -> list[list[int]]:
    """The row indices of each group of two or more pixel-identical inputs in `x`."""
    groups: dict[bytes, list[int]] = {}
    for i, row in enumerate(x):
        groups.setdefault(row.tobytes(), []).append(i)
    return [rows for rows in groups.values() if len(rows) > 1]


def identical_inputs(x: np.ndarray) -> tuple[int, int]:
    """(groups of pixel-identical inputs, pairs in them) among the inputs `x`."""
    groups = shared_groups(x)
    return len(groups), sum(len(rows) for rows in groups)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processed", type=Path, default=Path("data/processed"))
    ap.add_argument("--checkpoint", type=Path, default=Path("models/checkpoint.pt"))
    ap.add_argument("--snapshots", type=Path, default=None, help="models/snapshots.pt: a row per snapshot")
    ap.add_argument("--train-every", type=int, default=4, help="score every N-th training pair")
    ap.add_argument("--knn", type=int, nargs="*", default=[1, 5], help="retrieval reference(s): k nearest")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-model", action="store_true", help="the references alone (no checkpoint needed)")
    args = ap.parse_args()

    import torch

    from pipeline.io import torch_load
    from pipeline.translation.translator import new_generator, read_translator, translate_uint8

    torch.set_num_threads(args.threads)
    everything = load_pairs(args.processed)
    tx, ty = everything["train"]
    own = {"train": np.arange(0, len(tx), args.train_every), "holdout": None}
    pairs = {"train": (tx[own["train"]], ty[own["train"]]), "holdout": everything["holdout"]}
    ident = {s: l1(x, y) for s, (x, y) in pairs.items()}

    def cells(preds: dict[str, np.ndarray]) -> str:
        dist = {s: l1(preds[s], pairs[s][1]) for s in pairs}
        return " | ".join(f"{dist[s]:.4f} ({dist[s] / ident[s]:.2f}×)" for s in pairs)

    n = {s: len(x) for s, (x, _) in pairs.items()}
    print(f"| what | training pairs (n={n['train']}): L1 (÷ identity) | held-out pairs (n={n['holdout']}) |")
    print("|---|---:|---:|")
    print(f"| identity (the input unchanged) | {cells({s: x for s, (x, _) in pairs.items()})} |")
    for k in args.knn:
        preds = {s: retrieval(tx, ty, x, k, own[s]) for s, (x, _) in pairs.items()}
        print(f"| retrieval: median target of the {k} nearest training inputs | {cells(preds)} |")
    floor = {s: ambiguity_floor(x, y) for s, (x, y) in pairs.items()}
    shared = " | ".join(f"{g} groups, {n} pairs" for g, n in (identical_inputs(x) for x, _ in pairs.values()))
    print(f"| floor: per-pixel median target of each group of identical inputs | {cells(floor)} |")
    print(f"| (identical inputs among the scored pairs) | {shared} |")
    best = {s: multiply_best(x, y) for s, (x, y) in pairs.items()}
    print(f"| translate.blend multiply: the input × its best colour layer | {cells(best)} |")
    same = " | ".join(f"{same_pixels(x, y):.1%}" for x, y in pairs.values())
    print(f"| (pixels the input already has right, within 16 of 255) | {same} |")
    if args.no_model:
        return
    ckpt = read_translator(args.checkpoint)
    states = []
    if args.snapshots is not None:
        snaps = torch_load(args.snapshots, "pass a translate run's models/snapshots.pt", what="not a snapshot file")
        states = [(f"snapshot at step {s}", w) for s, w in zip(snaps["steps"], snaps["generators"])]
    ema = ckpt.get("generator_ema")
    states.append(("final, EMA" if ema is not None else "final", ema if ema is not None else ckpt["generator"]))
    for name, state in states:
        G = new_generator(ckpt, state)
        preds = {s: translate_uint8(G, x) for s, (x, _) in pairs.items()}
        print(f"| {name} | {cells(preds)} |", flush=True)
    names = split_names(args.processed)
    names["train"] = [names["train"][i] for i in own["train"]]
    print(f"\nThe L1 by kind ({states[-1][0]}; the floor as above, within each kind):\n")
    print("| pairs | kind | n | identity's L1 | floor | translator's L1 (÷ identity) | share of the translator's L1 |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for split, (x, y) in pairs.items():
        for kind, n_k, ident_k, low_k, got_k, share in by_kind(names[split], x, y, preds[split]):
            ratio = f"{got_k / ident_k:.2f}×" if ident_k else "–"
            row = f"{ident_k:.4f} | {low_k:.4f} | {got_k:.4f} ({ratio}) | {share:.0%}"
            print(f"| {split} | {kind} | {n_k} | {row} |")


if __name__ == "__main__":
    main()
