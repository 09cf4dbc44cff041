"""Resumable checkpoints: one folder per training configuration, the latest state written atomically.
A run with fewer steps than the folder's checkpoint sets that checkpoint aside (kept_step_N.pt) instead of
overwriting it, and a run with at least N steps resumes from it.

A checkpoint holds everything the next step depends on: G, D, the EMA generator, both optimisers,
the step, every RNG state (python, numpy, torch, CUDA, and the trainer's own generator, which also
drives augmentation), the data order and cursor, the curves so far and the MLflow run id. Restoring it
and running on gives bitwise the same weights as never stopping (on CPU, same thread count).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np
import torch

from pipeline.config import Config
from pipeline.errors import ArtganError
from pipeline.io import atomic_path, torch_load

LATEST = "latest.pt"
SNAPSHOTS = "snapshots"
FORMAT = 1
# train.* keys that do not change the trajectory of the weights: a run that differs only in these
# resumes from the other's checkpoint (raise `steps` to train longer; change the device or world size).
NOT_IN_KEY = {
    "steps",
    "log_every",
    "sample_every",
    "checkpoint_every",
    "checkpoint_dir",
    "threads",
    "out_dir",
    "device",
    "compile",
    "cuda_graphs",
    "snapshot_every",
    "divergence_factor",
    "saturation_steps",
}  # the divergence watch stops a run; it never changes a step


def config_key(cfg: Config, data_digest: str) -> str:
    # a decaying learning rate follows train.steps: a run to another step count is another trajectory
    skip = NOT_IN_KEY - {"steps"} if cfg.train.lr_decay_start < 1 else NOT_IN_KEY
    train = {k: v for k, v in cfg.train.model_dump().items() if k not in skip}
    ident = {
        "model": cfg.model.model_dump(),
        "image_size": cfg.data.image_size,
        "label": cfg.data.label,
        "train": train,
        "data": data_digest,
    }
    if cfg.task == "translate":  # the translator's own terms change the trajectory too
        ident["translate"] = cfg.translate.model_dump(
            include={"model", "lambda_l1", "lambda_cycle", "lambda_identity", "pool_size"}
        )
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=list).encode()).hexdigest()[:16]


def folder(cfg: Config, key: str) -> Path:
    return Path(cfg.train.checkpoint_dir) / key


def rng_states() -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class NonFiniteState(ArtganError):
    """A state with a NaN or an infinity in some tensor: never written over the last good checkpoint."""


def non_finite(state: object, name: str = "") -> list[str]:
    """The dotted names of the floating-point tensors in `state` (nested dicts, lists and tuples: parameters,
    buffers such as batch norm's running_var, optimiser moments) that hold a NaN or an infinity; [] when none.
    One check per device (a single host sync on a GPU)."""
    found: list[tuple[str, torch.Tensor]] = []

    def walk(prefix: str, obj: object) -> None:
        if isinstance(obj, torch.Tensor):
            if obj.is_floating_point() or obj.is_complex():
                found.append((prefix, obj))
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(f"{prefix}.{i}" if prefix else str(i), v)

    walk(name, state)
    by_device: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
    for key, t in found:
        by_device.setdefault(t.device, []).append((key, t))
    bad = []
    for items in by_device.values():
        flags = torch.stack([torch.isfinite(t).all() for _, t in items]).cpu().tolist()
        bad += [key for (key, _), ok in zip(items, flags) if not ok]
    return bad


def save(path: Path, state: dict) -> None:
    """Write `state` over the checkpoint at `path` (atomically), only when every tensor in it is finite."""
    bad = non_finite(state)
    if bad:
        raise NonFiniteState(
            f"{path}: not written, non-finite values in {describe(bad)}; the previous checkpoint is kept"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state, "rng": rng_states()}, tmp)


def describe(names: list[str], shown: int = 3) -> str:
    """`a, b, c and 4 more` of a list of tensor names."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def load(path: Path) -> dict | None:
    """The checkpoint at `path`, or None when there is none. Python/numpy RNG states are pickled
    tuples, so this file is loaded with weights_only=False: only ever our own checkpoint folder."""
    if not path.is_file():
        return None
    state = torch_load(path, f"delete {path.parent} to train this configuration from the start", weights_only=False)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        return None
    return state


def kept_path(folder_: Path, step: int) -> Path:
    return folder_ / f"kept_step_{step:07d}.pt"


def set_aside(path: Path, step: int) -> Path:
    """Keep a checkpoint that is past this run's train.steps under its step's name, so the shorter run's own
    checkpoints never overwrite a longer run's work (a later run with more steps resumes from it)."""
    kept = kept_path(path.parent, step)
    os.replace(path, kept)
    return kept


def best_kept(folder_: Path, steps: int, above: int) -> Path | None:
    """The set-aside checkpoint with the most steps that are <= `steps` and > `above`, if any."""
    found = []
    for p in folder_.glob("kept_step_*.pt"):
        n = p.stem.rsplit("_", 1)[1]
        if n.isdigit() and above < int(n) <= steps:
            found.append((int(n), p))
    return max(found)[1] if found else None


def save_snapshot(folder_: Path, step: int, generator_state: dict) -> None:
    """The sampling generator's weights at `step` (FID curve and progress strip), beside the checkpoint,
    so an interrupted run keeps the snapshots it already took."""
    path = folder_ / SNAPSHOTS / f"step_{step:07d}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(generator_state, tmp)


def snapshot_steps(folder_: Path, every: int, last: int) -> list[int]:
    """Steps with a snapshot that belong to this run: multiples of `every` up to `last`, and `last`."""
    want = set(range(every, last + 1, every)) if every else set()
    want.add(last)
    have = {int(p.stem.split("_")[1]) for p in (folder_ / SNAPSHOTS).glob("step_*.pt")}
    return sorted(want & have)


def load_snapshot(folder_: Path, step: int) -> dict:
    path = folder_ / SNAPSHOTS / f"step_{step:07d}.pt"
    return torch_load(path, f"delete it to go on without that snapshot, or {folder_} to train from the start")
