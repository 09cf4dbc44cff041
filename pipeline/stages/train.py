"""train: a GAN (or the VAE baseline) on data/processed/images.npy -> models/checkpoint.pt, one MLflow run.

Resumes automatically: the state is checkpointed every `train.checkpoint_every` steps under
`train.checkpoint_dir/<key>/`, where the key hashes the configuration and the data; a killed run picks
up from there and ends bitwise where an uninterrupted run would (CPU; on CUDA too, checked on an H200). Multi-process: `artgan train
--nproc N` (torchrun); rank 0 alone logs and writes.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
from pathlib import Path

import numpy as np

from pipeline import tracking
from pipeline.config import Config, set_threads
from pipeline.errors import ArtganError
from pipeline.io import atomic_path, read_input, require, torch_load, write_json
from pipeline.stages.fetch import MANIFEST
from pipeline.stages.preprocess import IMAGES

CHECKPOINT = "checkpoint.pt"
SNAPSHOTS = "snapshots.pt"
RUN_FILE = "mlflow_run.json"
CURVES = "train_curves.csv"
N_FIXED = 64
RERUN_TRAIN = "re-run `artgan train` (or `dvc repro`)"


def run_file(cfg: Config) -> Path:
    return Path(cfg.train.out_dir) / RUN_FILE


RERUN_PREPROCESS = "re-run `artgan preprocess` (or `dvc repro`)"


def check_images(arr: np.ndarray, path: Path) -> np.ndarray:
    """`arr` if it is what preprocess writes, uint8 N×S×S×3 (0..255 by its type), else a one-line error naming
    the file: a float array in [0, 1] made by hand would train on near-black images without a word."""
    shape = "×".join(map(str, arr.shape))
    if arr.dtype != np.uint8:
        raise ArtganError(f"{path}: {arr.dtype} images of shape {shape}, not uint8 0..255 as preprocess writes "
                          f"them; {RERUN_PREPROCESS}")
    if arr.ndim != 4 or arr.shape[3] != 3 or arr.shape[1] != arr.shape[2] or not len(arr):
        raise ArtganError(f"{path}: shape {shape}, not N×S×S×3 (N square RGB images) as preprocess writes them; "
                          f"{RERUN_PREPROCESS}")
    return arr


def load_images(cfg: Config) -> np.ndarray:
    """uint8 N×S×S×3 as preprocess wrote it."""
    path = Path(cfg.data.processed_dir) / IMAGES
    arr = check_images(read_input(path, "preprocess", np.load), path)
    if arr.shape[1] != cfg.data.image_size:
        raise ArtganError(
            f"{cfg.data.processed_dir}/{IMAGES}: images are {arr.shape[1]} px but data.image_size is "
            f"{cfg.data.image_size}; run `artgan preprocess` again"
        )
    return arr


def load_labels(cfg: Config, n: int) -> tuple[np.ndarray | None, list[str]]:
    """Class indices from the processed manifest's `data.label` column (sorted class names), or None."""
    if not cfg.data.label:
        return None, []
    from pipeline.data import manifest

    path = Path(cfg.data.processed_dir) / MANIFEST
    df = read_input(path, "preprocess", manifest.read)
    col = cfg.data.label
    if col not in df.columns:
        raise ArtganError(f"data.label: column {col!r} is not in {path} (columns: {', '.join(df.columns)}); "
                          "set data.label to one of them or to '' for unconditional training")
    values = df[col]
    if values.isna().any():
        raise ArtganError(f"data.label: {int(values.isna().sum())} images in {path} have no {col!r}; "
                          "label every image or set data.label to ''")
    if len(values) != n:
        raise ArtganError(f"{path}: {len(values)} rows but {n} images; run `artgan preprocess` again")
    classes = sorted(values.astype(str).unique())
    if len(classes) < 2:
        raise ArtganError(f"data.label: column {col!r} has a single class; conditional training needs two or more")
    index = {c: i for i, c in enumerate(classes)}
    return values.astype(str).map(index).to_numpy(np.int64, copy=True), classes


def images_sha256(images: np.ndarray) -> str:
    """sha256 of the training images' bytes (images.npy's array): which images a checkpoint was trained on."""
    return hashlib.sha256(np.ascontiguousarray(images).data).hexdigest()


def check_trained_on(cfg: Config, images: np.ndarray) -> None:
    """A one-line error when models/checkpoint.pt was trained on other images than data/processed holds (a
    preprocess of another dataset since): its scores would be those of the wrong data. Checkpoints from before
    the record pass."""
    from pipeline.generate import read_checkpoint

    path = Path(cfg.train.out_dir) / CHECKPOINT
    trained = read_checkpoint(require(path, "train"), RERUN_TRAIN).get("images_sha256")
    if trained is not None and trained != images_sha256(images):
        raise ArtganError(f"{path} was trained on other images than {Path(cfg.data.processed_dir) / IMAGES} holds "
                          f"(preprocessed again since); {RERUN_TRAIN}")


def data_digest(images: np.ndarray, labels: np.ndarray | None) -> str:
    h = hashlib.sha256(np.ascontiguousarray(images).data)
    if labels is not None:
        h.update(labels.tobytes())
    return h.hexdigest()


def processed_manifest(cfg: Config):
    """data/processed/manifest.parquet, or None when there is none (images.npy made by hand); a truncated or
    corrupt one is a one-line error naming it and preprocess."""
    from pipeline.data import manifest

    path = Path(cfg.data.processed_dir) / MANIFEST
    if not path.exists():
        return None
    return read_input(path, "preprocess", manifest.read)


def log_dataset(cfg: Config, mlrun, df=None) -> None:
    """The processed manifest (`df`, read when not given) as the run's MLflow dataset input (context "training"),
    under its digest."""
    from pipeline.stages.preprocess import dataset_digest

    path = Path(cfg.data.processed_dir) / MANIFEST
    df = processed_manifest(cfg) if df is None else df
    if df is None:  # images.npy without a manifest (made by hand): nothing to describe
        return
    mlrun.log_dataset(df, name=f"{cfg.data.source}@{cfg.data.image_size}px", source=str(path.resolve()),
                      digest=dataset_digest(df))


def to_uint8(x):
    """[-1, 1] float NCHW -> uint8 NHWC, as a PNG of the sample would store it."""
    import torch

    return x.float().add(1).mul(127.5).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def grid_image(x, nrow: int = 8):
    """A PIL grid of [-1, 1] images."""
    from PIL import Image
    from torchvision.utils import make_grid

    g = make_grid(x.detach().float().cpu(), nrow=nrow, padding=2, normalize=True, value_range=(-1, 1))
    return Image.fromarray(g.mul(255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy())


def _open_run(cfg: Config, run_id: str | None):
    if run_id and tracking.run_exists(run_id):
        return tracking.continue_run("train", run_id)
    return tracking.new_run("train", cfg.flat(), system_metrics=True)


def run(cfg: Config) -> dict:
    import torch

    from pipeline.training import checkpoint, dist
    from pipeline.training.loop import Data, NullRun, Trainer, fixed_inputs, latest_path, pick_device, train_loop

    t = cfg.train
    set_threads(cfg)
    torch.use_deterministic_algorithms(True, warn_only=True)
    images = load_images(cfg)
    if len(images) < t.batch_size:
        raise ArtganError(f"train.batch_size {t.batch_size} exceeds the {len(images)} training images; lower it")
    labels, classes = load_labels(cfg, len(images))
    described = processed_manifest(cfg)  # read now: a truncated one fails before any training or MLflow run
    digest = data_digest(images, labels)
    key = checkpoint.config_key(cfg, digest)

    device = pick_device(t.device)  # CUBLAS_WORKSPACE_CONFIG is set on import of the package (pipeline/__init__.py)
    world = dist.init(device.type)
    try:
        if device.type == "cuda":
            device = torch.device("cuda", world.local_rank)
            torch.cuda.set_device(device)
        data = Data(
            images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device),
            labels=torch.from_numpy(labels).to(device) if labels is not None else None,
            n_classes=len(classes),
            class_counts=np.bincount(labels, minlength=len(classes)).tolist() if labels is not None else [],
        )
        trainer = Trainer(cfg, data, world, device)
        source = latest_path(cfg, key)
        resumed = checkpoint.load(source)
        if resumed is not None and resumed["step"] > t.steps:
            if world.main:  # the other ranks read it before rank 0's first save (which waits on their steps)
                kept = checkpoint.set_aside(source, resumed["step"])
                print(f"train: the checkpoint in {source} is at step {resumed['step']}, past train.steps={t.steps}; "
                      f"kept as {kept} (train.steps >= {resumed['step']} resumes from it); starting afresh", flush=True)
            resumed = None
        kept = checkpoint.best_kept(checkpoint.folder(cfg, key), t.steps, resumed["step"] if resumed else 0)
        if kept is not None and (state := checkpoint.load(kept)) is not None:
            source, resumed = kept, state
        if resumed is not None:
            trainer.load_state_dict(resumed)
            if world.main:
                print(f"train: resuming from step {resumed['step']} of {source}", flush=True)
        fixed_z, fixed_y = fixed_inputs(trainer, N_FIXED, t.seed + 1)

        ctx = _open_run(cfg, trainer.state.run_id) if world.main else contextlib.nullcontext(NullRun())
        with ctx as mlrun:
            trainer.state.run_id = mlrun.run_id
            if world.main:
                mlrun.set_tags({"data_digest": digest, "checkpoint_key": key,
                                "device": str(device), "world_size": str(world.size)})
                log_dataset(cfg, mlrun, described)

            def on_sample(step: int) -> None:
                G = trainer.sampler()
                was = G.training
                G.eval()
                with torch.no_grad():
                    mlrun.log_image(grid_image(G(fixed_z, fixed_y)), key="samples", step=step)
                G.train(was)

            train_loop(trainer, key, mlrun, on_sample)
            if world.main:
                _write_outputs(cfg, trainer, classes, mlrun, checkpoint.folder(cfg, key), images_sha256(images))
        s = trainer.state
        return {"steps": s.step, "seconds": round(s.seconds, 1), "device": str(device), "world_size": world.size,
                "img_per_s": round(s.step * trainer.images_per_step / max(s.seconds, 1e-9), 1),
                "run_id": s.run_id, "checkpoint_key": key,
                **{k: v for k, v in s.curves[-1].items() if k.startswith("loss")}}
    finally:
        dist.shutdown(world)


def _write_outputs(cfg: Config, trainer, classes: list[str], mlrun, folder: Path, trained_on: str) -> None:
    import torch

    from pipeline.training import checkpoint

    s = trainer.state
    with atomic_path(Path(cfg.reports_dir) / CURVES) as tmp:
        fields = list(dict.fromkeys(k for row in s.curves for k in row))
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(s.curves)
    out_dir = Path(cfg.train.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / CHECKPOINT) as tmp:
        torch.save(
            {"generator": trainer.G.state_dict(), "discriminator": trainer.D.state_dict(),
             "generator_ema": trainer.G_ema.state_dict() if trainer.G_ema is not None else None,
             "classes": classes, "class_counts": trainer.data.class_counts, "kind": trainer.kind,
             "step": s.step, "config": cfg.model_dump(by_alias=True), "mlflow_run_id": s.run_id,
             "images_sha256": trained_on},
            tmp,
        )
    steps = checkpoint.snapshot_steps(folder, cfg.train.snapshot_every, s.step)
    with atomic_path(out_dir / SNAPSHOTS) as tmp:
        torch.save({"steps": steps, "generators": [checkpoint.load_snapshot(folder, k) for k in steps]}, tmp)
    write_json(run_file(cfg), {"run_id": s.run_id, "tracking_uri": tracking.tracking_uri()})
    mlrun.log_metrics({"train_seconds": s.seconds,
                       "train_img_per_s": s.step * trainer.images_per_step / max(s.seconds, 1e-9)})


def load_generator(cfg: Config, ema: bool = True):
    """The trained generator from models/checkpoint.pt (EMA weights when trained with them), in eval mode.

    Returns (G, z_dim, n_classes, class_counts)."""
    from pipeline.generate import read_checkpoint

    ckpt = read_checkpoint(require(Path(cfg.train.out_dir) / CHECKPOINT, "train"), RERUN_TRAIN)
    G = generator_from(ckpt, ema)
    return G, ckpt["config"]["model"]["z_dim"], len(ckpt.get("classes") or []), list(ckpt.get("class_counts") or [])


def generator_from(ckpt: dict, ema: bool = True):
    """The generator a checkpoint dict holds (EMA weights when asked for and present), in eval mode."""
    G = new_generator(ckpt)
    weights = ckpt["generator_ema"] if ema and ckpt.get("generator_ema") is not None else ckpt["generator"]
    G.load_state_dict(weights)
    return G.eval()


def new_generator(ckpt: dict):
    """An untrained generator of the architecture a checkpoint records."""
    from pipeline.models import build

    m = ckpt["config"]["model"]
    G, _ = build(m["arch"], ckpt["config"]["data"]["image_size"], m["z_dim"], m["g_channels"], m["d_channels"],
                 n_classes=len(ckpt.get("classes") or []), spectral_norm=m.get("spectral_norm", False))
    return G


def load_snapshots(cfg: Config) -> list:
    """(step, generator in eval mode) for every snapshot training kept (models/snapshots.pt)."""
    from pipeline.generate import read_checkpoint

    ckpt = read_checkpoint(require(Path(cfg.train.out_dir) / CHECKPOINT, "train"), RERUN_TRAIN)
    snaps = torch_load(require(Path(cfg.train.out_dir) / SNAPSHOTS, "train"), RERUN_TRAIN)
    out = []
    for step, weights in zip(snaps["steps"], snaps["generators"]):
        G = new_generator(ckpt)
        G.load_state_dict(weights)
        out.append((step, G.eval()))
    return out
