"""The train stage's cost in FLOPs: params.yaml's recipe against a reference recipe, counted in the same run.

    python bench/train_flops.py                                   # the defaults against the 2026-12-04 defaults
    python bench/train_flops.py --ref train.r1_gamma=0 train.steps=12000
    python bench/train_flops.py --set model.g_channels=24 model.d_channels=24 train.steps=20000   # a candidate

torch's FlopCounterMode cannot follow the double backward of the R1 penalty, so this counts with its FLOP formulas
(torch.utils.flop_counter.flop_registry: convolutions and matmuls, forward and backward) under a plain dispatch mode.
Lazy regularisers (R1, bCR) run every N-th step, so a recipe's cost is the mean over one period of steps (the
least common multiple of their intervals), times train.steps.
No timing: FLOPs do not depend on how busy the machine is.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

REFERENCE = ["train.r1_gamma=0", "train.steps=12000"]  # the defaults of 2026-12-04 (the "today")


def _set(raw: dict, assignment: str) -> None:
    import yaml

    key, value = assignment.split("=", 1)
    section, name = key.split(".")
    raw[section][name] = yaml.safe_load(value)


def flops_per_step(cfg) -> float:
    """Mean FLOPs of one training step over a period of the lazy regulariser (one step when there is none)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_map
    from torch.utils.flop_counter import flop_registry

    from pipeline.training import dist
    from pipeline.training.loop import Data, Trainer

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:

                def shape(x):
                    return x.shape if isinstance(x, torch.Tensor) else x

                self.total += formula(*tree_map(shape, args), **tree_map(shape, kwargs), out_val=tree_map(shape, out))
            return out

    size, t = cfg.data.image_size, cfg.train
    images = torch.randint(0, 256, (4 * t.batch_size, 3, size, size), dtype=torch.uint8)
    trainer = Trainer(cfg, Data(images=images, labels=None, n_classes=0), dist.World(), torch.device("cpu"))
    period = math.lcm(t.r1_every if t.r1_gamma > 0 else 1, t.cr_every if t.cr > 0 else 1)  # R1 and bCR both due
    total = 0
    for step in range(1, period + 1):
        counter = Count()
        with counter:
            trainer.gan_step(step)
        total += counter.total
    return total / period


def main() -> None:
    import torch

    from pipeline.config import load, parse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", nargs="*", default=REFERENCE, help="key=value overrides of params.yaml: the reference")
    ap.add_argument("--set", nargs="*", default=[], help="key=value overrides of params.yaml: the recipe measured")
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = load(REPO / "params.yaml").model_dump(by_alias=True)

    def recipe(overrides: list[str]):
        raw = copy.deepcopy(base)
        for a in overrides:
            _set(raw, a)
        return parse(raw)

    ref, new = recipe(args.ref), recipe(args.set)
    rows = []
    new_name = "params.yaml" + (" with " + ", ".join(args.set) if args.set else "")
    for name, cfg in (("reference (" + ", ".join(args.ref) + ")", ref), (new_name, new)):
        per = flops_per_step(cfg)
        rows.append(
            (name, cfg.train.steps, cfg.train.batch_size, per / cfg.train.batch_size / 1e6, per * cfg.train.steps)
        )
    print("| recipe | steps | batch | MFLOP per image per step | train TFLOP | ÷ reference |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, steps, batch, per_img, total in rows:
        print(f"| {name} | {steps} | {batch} | {per_img:.1f} | {total / 1e12:.1f} | {total / rows[0][4]:.4f} |")


if __name__ == "__main__":
    main()
