"""The `artgan` command: one sub-command per DVC stage. Parsing only; the work is in pipeline.stages.

Heavy libraries (torch, mlflow, great_expectations) are imported inside the commands so that
`artgan --help` answers at once.
"""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import typer

app = typer.Typer(
    name="artgan",
    help="Train GANs on art, reproducibly: fetch -> validate -> preprocess -> train -> evaluate -> render.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

PARAMS = typer.Option(Path("params.yaml"), "--params", "-p", help="The params file (one section per stage).")


def _run_stage(stage: str, params: Path) -> None:
    from pipeline.config import load
    from pipeline.errors import ArtganError

    try:
        cfg = load(params)
        module = importlib.import_module(f"pipeline.stages.{stage}")
        figures = module.run(cfg)
    except ArtganError as exc:
        for line in str(exc).splitlines():
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo(f"error: {stage} interrupted; its outputs were not updated", err=True)
        raise typer.Exit(130) from None
    typer.echo(f"{stage}: {json.dumps(figures, sort_keys=True, default=str)}")


@app.command()
def fetch(params: Path = PARAMS) -> None:
    """Materialise data.source as images under data/raw/ plus a manifest."""
    _run_stage("fetch", params)


@app.command()
def validate(params: Path = PARAMS) -> None:
    """Quarantine bad files with a reason, then a great-expectations suite over the manifest (data/validated/)."""
    _run_stage("validate", params)


@app.command()
def preprocess(params: Path = PARAMS) -> None:
    """Every ok image to RGB at data.image_size, duplicates removed, and the real FID statistics."""
    _run_stage("preprocess", params)


@app.command()
def train(
    params: Path = PARAMS,
    nproc: int = typer.Option(1, "--nproc", min=1, help="Processes (GPUs) to train on, through torchrun."),
) -> None:
    """Train the GAN (resuming from the latest checkpoint); write models/checkpoint.pt, open the MLflow run."""
    import os

    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        import subprocess

        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "pipeline", "train", "--params", str(params)]
        raise typer.Exit(subprocess.call(cmd))
    _run_stage("train", params)


@app.command()
def evaluate(params: Path = PARAMS) -> None:
    """FID, KID, precision/recall and memorisation of the generator; FID over the training snapshots."""
    _run_stage("evaluate", params)


@app.command()
def render(params: Path = PARAMS) -> None:
    """Sample grids, interpolation, progress strip and curves under reports/render/, then reports/index.html."""
    _run_stage("render", params)


@app.command()
def retrain(
    remote: str = typer.Option(None, "--remote", "-r", help="DVC remote to pull from and push to (default: the default remote)."),
    push: bool = typer.Option(True, "--push/--no-push", help="Push the new outputs to the DVC remote."),
    pull: bool = typer.Option(True, "--pull/--no-pull", help="Pull the cached outputs first (missing ones are rebuilt)."),
    summary: Path = typer.Option(None, "--summary", help="Write the `dvc metrics diff --md` markdown here too."),
    baseline: str = typer.Option("HEAD", "--baseline", help="Git revision whose committed metrics the diff compares to."),
    overrides: list[str] = typer.Option(None, "--set", "-S", help="Change a param first, e.g. -S train.steps=3000 (repeatable)."),
    params: Path = PARAMS,
) -> None:
    """The scheduled retraining job: dvc pull -> dvc repro -> dvc push, then the metrics diff against HEAD."""
    from pipeline import retrain as job
    from pipeline.errors import ArtganError

    try:
        figures = job.run(remote=remote, push=push, pull=pull, summary=summary, baseline=baseline,
                         overrides=overrides or [], params=params, echo=typer.echo)
    except ArtganError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"retrain: {json.dumps(figures, sort_keys=True)}")


def main() -> None:  # pragma: no cover
    sys.exit(app())
