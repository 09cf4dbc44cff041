"""Where every artifact lives: the one home of the pipeline's file names and paths.

The folders come from params (`data.raw_dir`, `data.validated_dir`, `data.processed_dir`, `train.out_dir`,
`reports_dir`); dvc.yaml interpolates the same params (`${data.processed_dir}/images.npy`), so a changed folder
moves both what a stage writes and what DVC tracks. The file names inside them are fixed here, and only here.
"""
from __future__ import annotations

from pathlib import Path

# fetch -> data.raw_dir; validate -> data.validated_dir; preprocess -> data.processed_dir (all three hold one)
MANIFEST = "manifest.parquet"
# validate -> reports_dir
VALIDATION = "validation.json"
VALIDATION_SUMMARY = "validation_summary.json"
VALIDATION_DOCS = "validation"  # the great-expectations Data Docs site
# preprocess -> data.processed_dir, reports_dir
IMAGES = "images.npy"
STATS = "fid_stats.npz"
DUPLICATES = "duplicates.csv"
# train -> train.out_dir, reports_dir
CHECKPOINT = "checkpoint.pt"
SNAPSHOTS = "snapshots.pt"
RUN_FILE = "mlflow_run.json"
CURVES = "train_curves.csv"
# evaluate -> reports_dir
METRICS = "metrics.json"
FID_CURVE = "fid_curve.csv"
MEMORISATION = "memorisation.png"
# render -> reports_dir
RENDER = "render"
REAL = "real.png"  # training images, drawn as the generated grids are
LARGE = "large"  # render/large/: the upscaled copies the report shows
INDEX = "index.html"
# inside a logged MLflow model: the generator-only checkpoint
CHECKPOINT_ARTIFACT = "checkpoint"

# what to run when an input is missing or broken
RERUN_PREPROCESS = "re-run `artgan preprocess` (or `dvc repro`)"
RERUN_TRAIN = "re-run `artgan train` (or `dvc repro`)"


def raw_manifest(cfg) -> Path:
    return Path(cfg.data.raw_dir) / MANIFEST


def validated_manifest(cfg) -> Path:
    """validate's manifest, which preprocess reads: every raw row with status, reason and note."""
    return Path(cfg.data.validated_dir) / MANIFEST


def processed(cfg, name: str) -> Path:
    return Path(cfg.data.processed_dir) / name


def model_file(cfg, name: str) -> Path:
    return Path(cfg.train.out_dir) / name


def report_file(cfg, name: str) -> Path:
    return Path(cfg.reports_dir) / name


def run_file(cfg) -> Path:
    """The train stage's MLflow run id, which evaluate and render log into."""
    return model_file(cfg, RUN_FILE)
