"""Where every artifact lives: the one home of the pipeline's file names and paths.

The folders come from params (`data.raw_dir`, `data.validated_dir`, `data.processed_dir`, `train.out_dir`,
`reports_dir`); dvc.yaml interpolates the same params (`${data.processed_dir}/images.npy`), so a changed folder
moves both what a stage writes and what DVC tracks. The file names inside them are fixed here, and only here.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Iterator

from pipeline.errors import ArtganError

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
# task translate, preprocess -> data.processed_dir, reports_dir: the input domain beside the style (images.npy),
# written (empty) for task generate too, so that dvc.yaml declares one set of files
INPUTS = "inputs.npy"  # N_in×S×S×3 uint8, row i = row i of inputs.parquet
INPUTS_MANIFEST = "inputs.parquet"  # the input rows: split (train | holdout) and target (row in images.npy or -1)
UNMATCHED = "unmatched.csv"  # paired data: names found in one domain only (skipped)
# train -> train.out_dir, reports_dir
CHECKPOINT = "checkpoint.pt"
SNAPSHOTS = "snapshots.pt"
RUN_FILE = "mlflow_run.json"
CURVES = "train_curves.csv"
# evaluate -> reports_dir
METRICS = "metrics.json"
FID_CURVE = "fid_curve.csv"
MEMORISATION = "memorisation.png"
# task translate, render -> reports_dir/render
TRIPLETS = "triplets.png"  # held-out input | translated | target, upscaled
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


FOLDER_PARAMS = ("data.raw_dir", "data.validated_dir", "data.processed_dir", "train.out_dir", "reports_dir")


def folder(cfg, param: str) -> Path:
    section, _, key = param.rpartition(".")
    return Path(getattr(getattr(cfg, section) if section else cfg, key))


def check_inside_dvc_project(cfg, environ=os.environ) -> None:
    """Under `dvc repro` / `dvc exp run` (DVC_ROOT set), a one-line error for a folder param outside the DVC
    project: DVC tracks outputs inside it only, and would refuse the stage after it had written there."""
    root = environ.get("DVC_ROOT")
    if not root:
        return
    root = Path(root).resolve()
    for param in FOLDER_PARAMS:
        path = folder(cfg, param)
        if not (root / path).resolve().is_relative_to(root):
            raise ArtganError(
                f"{param}: {path} is outside the DVC project {root}, and DVC tracks outputs inside it "
                f"only; set {param} to a path inside the project (e.g. the default in params.yaml), "
                "or run the `artgan` command itself rather than `dvc repro`"
            )


_REMEDY = {
    errno.ENOSPC: "free space on the disk that holds it (`df -h {dir}`), or point {param} at another disk",
    errno.EDQUOT: "free space within your disk quota, or point {param} at another disk",
    errno.EROFS: "that file system is read-only: mount it read-write, or point {param} at a writable folder",
    errno.EPERM: "make it writable (`chmod u+w {dir}`, or `chattr -i {dir}` if it is immutable), or point {param} "
    "at a writable folder",
    errno.EACCES: "make it writable (`chmod u+w {dir}`), or point {param} at a writable folder",
}


@contextlib.contextmanager
def write_errors(cfg, stage: str) -> Iterator[None]:
    """A stage's write that the file system refuses (full, read-only, immutable, not permitted) becomes one line
    naming the path, the folder param it lies in and what to free or fix. The outputs of an earlier run are
    intact: every output is written to a temp path first and renamed into place."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _REMEDY:
            raise
        path = Path(exc.filename or exc.filename2 or ".")
        param = next((p for p in FOLDER_PARAMS if path.resolve().is_relative_to(folder(cfg, p).resolve())), None)
        if param is None:  # a temp sibling: the folder param whose folder it sits beside
            param = next(
                (p for p in FOLDER_PARAMS if folder(cfg, p).resolve().parent == path.resolve().parent),
                "the output folder",
            )
        remedy = _REMEDY[exc.errno].format(dir=path.parent, param=param)
        raise ArtganError(
            f"{stage}: cannot write {path} ({os.strerror(exc.errno)}); {remedy}. Outputs of an earlier "
            f"run are unchanged"
        ) from None
