"""Shared helpers for the unit tests (plain functions; the fixtures live in each test module)."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def tiny_cfg(tmp_path: Path, **overrides) -> dict:
    """A params mapping for a tiny, fast pipeline with every path under `tmp_path`.

    Keyword arguments are sections (or `reports_dir`) merged on top, e.g.
    `tiny_cfg(tmp_path, train={"seed": 1}, data={"max_images": 40})`.
    """
    base = {
        "data": {
            "image_size": 16,
            "max_images": 40,
            "raw_dir": str(tmp_path / "data" / "raw"),
            "validated_dir": str(tmp_path / "data" / "validated"),
            "processed_dir": str(tmp_path / "data" / "processed"),
        },
        "validate": {"min_images": 10},
        "model": {"z_dim": 16, "g_channels": 8, "d_channels": 8},
        "train": {
            "seed": 0,
            "steps": 6,
            "batch_size": 8,
            "log_every": 2,
            "sample_every": 3,
            "out_dir": str(tmp_path / "models"),
            "checkpoint_dir": str(tmp_path / "checkpoints"),
        },
        "reports_dir": str(tmp_path / "reports"),
    }
    return _merge(base, overrides)


def isolate_mlflow(monkeypatch, tmp_path: Path, db_dir: Path | None = None) -> str:
    """Point MLflow at a SQLite file in `db_dir` (default `tmp_path`) and run from that directory.

    The working directory moves too: with a SQLite tracking store MLflow puts artifacts under
    `./mlruns`, which must not land in the repository. Creating a store costs seconds (schema
    migrations), so a test module may share one `db_dir` between its tests.
    """
    where = db_dir or tmp_path
    uri = f"sqlite:///{where / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("GX_ANALYTICS_ENABLED", "False")
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.chdir(where)
    return uri


def write_params(path: Path, raw: dict | str) -> Path:
    """A params file: a mapping dumped as YAML, or literal text."""
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw, sort_keys=False))
    return path


def copy_project(dst: Path, overrides: dict, skip: tuple[str, ...] = ("tests/", "dvc.lock")) -> None:
    """The project's files (tracked or not ignored; not its data, models or MLflow store) copied to `dst`,
    with params.yaml's sections updated by `overrides` (a tiny pipeline for end-to-end tests)."""
    import shutil
    import subprocess

    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for rel in files:
        if rel.startswith(skip) or not (REPO / rel).is_file():
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dst / rel)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in overrides.items():
        params[section].update(values)
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def make_trainer(tmp_path: Path, case: dict, device=None, n_images: int = 20, **train):
    """A Trainer over `n_images` random 16 px images (batch 8: an epoch every 2 batches, so the data order is
    redrawn within a few steps), from tiny_cfg with `case`'s sections (and `labels: True` for 3 classes) and
    `train` keys on top."""
    import torch

    from pipeline.config import parse
    from pipeline.training.dist import World
    from pipeline.training.loop import Data, Trainer

    device = device or torch.device("cpu")
    case = copy.deepcopy(case)
    labels = case.pop("labels", False)
    case.setdefault("train", {}).update(train)
    cfg = parse(tiny_cfg(tmp_path, **case))
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n_images, 3, 16, 16), generator=g, dtype=torch.uint8).to(device)
    y = torch.randint(0, 3, (n_images,), generator=g).to(device) if labels else None
    return Trainer(cfg, Data(images=images, labels=y, n_classes=3 if labels else 0), World(), device)


def run_steps(tr, steps: int, start: int = 0) -> list[dict[str, float]]:
    """`steps` training steps (with the EMA update) after step `start`; each step's values as floats."""
    step_fn = tr.vae_step if tr.kind == "vae" else tr.gan_step
    rows = []
    for step in range(start + 1, start + steps + 1):
        out = step_fn(step)
        tr.update_ema(step)
        tr.state.step = step
        rows.append({k: v.item() for k, v in out.items()})
    return rows


def load_script(path: Path):
    """A script that is not part of the package (bench/, scripts/) imported as a module, to test its functions."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
