"""train: a GAN (or the VAE baseline) on data/processed/images.npy -> models/checkpoint.pt, one MLflow run.
Task translate trains an image-to-image GAN from inputs.npy to images.npy instead (pipeline/translation/trainer.py),
in the same loop.

Resumes automatically: the state is checkpointed every `train.checkpoint_every` steps under
`train.checkpoint_dir/<key>/`, where the key hashes the configuration and the data; a killed run picks
up from there and ends bitwise where an uninterrupted run would (on the CPU and on CUDA). Multi-process:
`artgan train --nproc N` (torchrun); rank 0 alone logs and writes.
"""

from __future__ import annotations

import contextlib
import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline import tracking
from pipeline.artifacts import load_images, load_labels, processed_manifest
from pipeline.config import Config, set_threads
from pipeline.data.digest import dataset_digest, images_digest
from pipeline.errors import ArtganError
from pipeline.imaging import grid_image
from pipeline.io import atomic_path, write_json
from pipeline.layout import CHECKPOINT, CURVES, MANIFEST, SNAPSHOTS, processed, report_file, run_file

N_FIXED = 64
N_SHOWN = 8  # task translate: held-out inputs above their translations in the progress grid


def log_dataset(cfg: Config, mlrun, df=None) -> None:
    """The processed manifest (`df`, read when not given) as the run's MLflow dataset input (context "training"),
    under its digest."""
    path = processed(cfg, MANIFEST)
    df = processed_manifest(cfg) if df is None else df
    if df is None:  # images.npy without a manifest (made by hand): nothing to describe
        return
    mlrun.log_dataset(
        df, name=f"{cfg.data.source}@{cfg.data.image_size}px", source=str(path.resolve()), digest=dataset_digest(df)
    )


def _open_run(cfg: Config, run_id: str | None):
    if run_id and tracking.run_exists(run_id):
        return tracking.continue_run("train", run_id)
    return tracking.new_run("train", cfg.flat(), system_metrics=True)


@dataclass
class Job:
    """What one task trains on, found before any MLflow run: the data digest (the resume key's data part and the
    run's tag), the `images_sha256` the checkpoint records, the manifest logged as the run's dataset, and how to
    build the trainer and the progress grid on the training device."""

    digest: str
    trained_on: str
    described: object
    classes: list[str]
    make: Callable  # (world, device) -> (trainer, grid: () -> PIL image)


def generation_job(cfg: Config) -> Job:
    import torch

    from pipeline.training.loop import Data, Trainer, fixed_inputs

    t = cfg.train
    images = load_images(cfg)
    if len(images) < t.batch_size:
        raise ArtganError(f"train.batch_size {t.batch_size} exceeds the {len(images)} training images; lower it")
    labels, classes = load_labels(cfg, len(images))
    described = processed_manifest(cfg)  # read now: a truncated one fails before any training or MLflow run

    def make(world, device):
        data = Data(
            images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device),
            labels=torch.from_numpy(labels).to(device) if labels is not None else None,
            n_classes=len(classes),
        )
        trainer = Trainer(cfg, data, world, device)
        fixed_z, fixed_y = fixed_inputs(trainer, N_FIXED, t.seed + 1)
        return trainer, lambda G: grid_image(G(fixed_z, fixed_y))

    return Job(images_digest(images, labels), images_digest(images), described, classes, make)


def translation_job(cfg: Config) -> Job:
    import torch

    from pipeline.translation.pairs import data_digest, holdout_rows, load_translation_data
    from pipeline.translation.trainer import Domains, TranslationTrainer, resolve_model

    t = cfg.train
    data = load_translation_data(cfg)
    model = resolve_model(cfg.translate.model, data.paired)
    train_in, train_style = data.train_rows()
    if len(train_in) < t.batch_size or (model == "cyclegan" and len(train_style) < t.batch_size):
        raise ArtganError(
            f"train.batch_size {t.batch_size} exceeds the {min(len(train_in), len(train_style))} training images of "
            "a domain; lower it"
        )
    shown = holdout_rows(data.inputs_df)[:N_SHOWN]  # never trained on: the progress grid shows generalisation
    digest = data_digest(data)

    def tensor(arr, device):
        return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).contiguous().to(device)

    def make(world, device):
        paired = model == "pix2pix"
        domains = Domains(
            inputs=tensor(data.inputs[train_in], device),
            styles=tensor(data.styles if paired else data.styles[train_style], device),
            targets=torch.from_numpy(data.inputs_df["target"].to_numpy(np.int64)[train_in]).to(device)
            if paired
            else None,
        )
        trainer = TranslationTrainer(cfg, domains, model, world, device)
        x = tensor(data.inputs[shown], device).float().div(127.5).sub(1)
        return trainer, lambda G: grid_image(torch.cat([x, G(x)]), nrow=max(1, len(shown)))

    return Job(digest, digest, processed_manifest(cfg), [], make)


def _open_run(cfg: Config, run_id: str | None):
    if run_id and tracking.run_exists(run_id):
        return tracking.continue_run("train", run_id)
    return tracking.new_run("train", cfg.flat(), system_metrics=True)


def run(cfg: Config) -> dict:
    import torch

    from pipeline.training import checkpoint, dist
    from pipeline.training.loop import NullRun, latest_path, pick_device, train_loop

    t = cfg.train
    set_threads(cfg)
    torch.use_deterministic_algorithms(True, warn_only=True)
    job = translation_job(cfg) if cfg.task == "translate" else generation_job(cfg)
    key = checkpoint.config_key(cfg, job.digest)

    device = pick_device(t.device)  # CUBLAS_WORKSPACE_CONFIG is set on import of the package (pipeline/__init__.py)
    world = dist.init(device.type)
    try:
        if device.type == "cuda":
            device = torch.device("cuda", world.local_rank)
            torch.cuda.set_device(device)
        trainer, grid_of = job.make(world, device)
        source = latest_path(cfg, key)
        resumed = checkpoint.load(source)
        if resumed is not None and resumed["step"] > t.steps:
            if world.main:  # the other ranks read it before rank 0's first save (which waits on their steps)
                kept = checkpoint.set_aside(source, resumed["step"])
                print(
                    f"train: the checkpoint in {source} is at step {resumed['step']}, past train.steps={t.steps}; "
                    f"kept as {kept} (train.steps >= {resumed['step']} resumes from it); starting afresh",
                    flush=True,
                )
            resumed = None
        kept = checkpoint.best_kept(checkpoint.folder(cfg, key), t.steps, resumed["step"] if resumed else 0)
        if kept is not None and (state := checkpoint.load(kept)) is not None:
            source, resumed = kept, state
        if resumed is not None:
            trainer.load_state_dict(resumed)
            if world.main:
                print(f"train: resuming from step {resumed['step']} of {source}", flush=True)

        ctx = _open_run(cfg, trainer.state.run_id) if world.main else contextlib.nullcontext(NullRun())
        with ctx as mlrun:
            trainer.state.run_id = mlrun.run_id
            if world.main:
                mlrun.set_tags(
                    {
                        "data_digest": job.digest,
                        "checkpoint_key": key,
                        "device": str(device),
                        "world_size": str(world.size),
                    }
                )
                log_dataset(cfg, mlrun, job.described)

            def on_sample(step: int) -> None:
                G = trainer.sampler()
                was = G.training
                G.eval()
                with torch.no_grad():
                    mlrun.log_image(grid_of(G), key="samples", step=step)
                G.train(was)

            train_loop(trainer, key, mlrun, on_sample)
            if world.main:
                _write_outputs(cfg, trainer, job, mlrun, checkpoint.folder(cfg, key))
        s = trainer.state
        return {
            "steps": s.step,
            "seconds": round(s.seconds, 1),
            "device": str(device),
            "world_size": world.size,
            "img_per_s": round(s.step * trainer.images_per_step / max(s.seconds, 1e-9), 1),
            "run_id": s.run_id,
            "checkpoint_key": key,
            **{k: v for k, v in s.curves[-1].items() if k.startswith("loss")},
        }
    finally:
        dist.shutdown(world)


def generator_fields(trainer, job: Job) -> dict:
    return {
        "generator": trainer.G.state_dict(),
        "discriminator": trainer.D.state_dict(),
        "generator_ema": trainer.G_ema.state_dict() if trainer.G_ema is not None else None,
        "classes": job.classes,
        "class_counts": trainer.data.class_counts,
        "kind": trainer.kind,
    }


def _write_outputs(cfg: Config, trainer, job: Job, mlrun, folder: Path) -> None:
    import torch

    from pipeline.training import checkpoint

    s = trainer.state
    with atomic_path(report_file(cfg, CURVES)) as tmp:
        fields = list(dict.fromkeys(k for row in s.curves for k in row))
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(s.curves)
    out_dir = Path(cfg.train.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / CHECKPOINT) as tmp:
        torch.save(
            {
                **(trainer.checkpoint_fields() if cfg.task == "translate" else generator_fields(trainer, job)),
                "step": s.step,
                "config": cfg.model_dump(by_alias=True),
                "mlflow_run_id": s.run_id,
                "images_sha256": job.trained_on,
            },
            tmp,
        )
    steps = checkpoint.snapshot_steps(folder, cfg.train.snapshot_every, s.step)
    with atomic_path(out_dir / SNAPSHOTS) as tmp:
        torch.save({"steps": steps, "generators": [checkpoint.load_snapshot(folder, k) for k in steps]}, tmp)
    write_json(run_file(cfg), {"run_id": s.run_id, "tracking_uri": tracking.tracking_uri()})
    mlrun.log_metrics(
        {"train_seconds": s.seconds, "train_img_per_s": s.step * trainer.images_per_step / max(s.seconds, 1e-9)}
    )
