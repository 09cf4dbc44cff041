"""The `artgan` command: one sub-command per DVC stage. Parsing only; the work is in pipeline.stages.

Heavy libraries (torch, mlflow, great_expectations) are imported inside the commands so that
`artgan --help` answers at once.
"""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def _user_errors(interrupted: str):
    """An ArtganError becomes its `error: ...` line(s) and exit 1; Ctrl-C says what was (not) written, exit 130."""
    from pipeline.errors import ArtganError

    try:
        yield
    except ArtganError as exc:
        for line in str(exc).splitlines():
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo(f"error: {interrupted}", err=True)
        raise typer.Exit(130) from None


def _run_stage(stage: str, params: Path) -> None:
    from pipeline.config import load
    from pipeline.layout import check_inside_dvc_project, write_errors

    with _user_errors(f"{stage} interrupted; its outputs were not updated"):
        cfg = load(params)
        check_inside_dvc_project(cfg)
        module = importlib.import_module(f"pipeline.stages.{stage}")
        with write_errors(cfg, stage):
            figures = module.run(cfg)
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

        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            "-m",
            "pipeline",
            "train",
            "--params",
            str(params),
        ]
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
    remote: str = typer.Option(
        None, "--remote", "-r", help="DVC remote to pull from and push to (default: the default remote)."
    ),
    push: bool = typer.Option(True, "--push/--no-push", help="Push the new outputs to the DVC remote."),
    pull: bool = typer.Option(
        True, "--pull/--no-pull", help="Pull the cached outputs first (missing ones are rebuilt)."
    ),
    summary: Path = typer.Option(None, "--summary", help="Write the `dvc metrics diff --md` markdown here too."),
    baseline: str = typer.Option(
        "HEAD", "--baseline", help="Git revision whose committed metrics the diff compares to."
    ),
    overrides: list[str] = typer.Option(
        None, "--set", "-S", help="Change a param first, e.g. -S train.steps=3000 (repeatable)."
    ),
    params: Path = PARAMS,
) -> None:
    """The scheduled retraining job: dvc pull -> dvc repro -> dvc push, then the metrics diff against HEAD."""
    from pipeline import retrain as job

    with _user_errors("retrain interrupted"):
        figures = job.run(
            remote=remote,
            push=push,
            pull=pull,
            summary=summary,
            baseline=baseline,
            overrides=overrides or [],
            params=params,
            echo=typer.echo,
        )
    typer.echo(f"retrain: {json.dumps(figures, sort_keys=True)}")


@app.command()
def generate(
    model: str = typer.Option(
        "models/checkpoint.pt",
        "--model",
        "-m",
        help="models:/<name>@<alias>, models:/<name>/<version>, runs:/<run id>/generator, or a checkpoint path.",
    ),
    n: int = typer.Option(64, "--n", min=1, max=4096, help="Images to draw: seeds SEED .. SEED+N-1, one image each."),
    seed: int = typer.Option(0, "--seed", min=0, help="The first seed (the image of a seed is the same everywhere)."),
    out: str = typer.Option(
        "grid.png", "--out", "-o", help="A PNG grid, or a folder (ends in /) for one PNG per seed."
    ),
    nrow: int = typer.Option(8, "--nrow", min=1, help="Images per row of the grid."),
    label: str = typer.Option(
        None, "--label", help="Conditional models: a class name or index for every image (default: seed mod classes)."
    ),
    raw: bool = typer.Option(False, "--raw", help="The raw generator instead of the EMA one."),
) -> None:
    """Draw images from a trained generator: a local checkpoint or a model from the MLflow registry."""
    import os

    from pipeline.errors import ArtganError
    from pipeline.generate import Sampler
    from pipeline.imaging import grid
    from pipeline.io import atomic_path
    from pipeline.registry import local_checkpoint

    with _user_errors(f"generate interrupted; {out} was not (fully) written"):
        to_folder = out.endswith(("/", os.sep)) or Path(out).is_dir()
        if not to_folder and Path(out).suffix.lower() != ".png":  # before any model is fetched or image drawn
            raise ArtganError(f"--out {out}: write a .png file (or a folder ending in /)")
        with local_checkpoint(model) as checkpoint:
            _refuse_translator(checkpoint, model)
            sampler = Sampler.from_file(checkpoint, ema=not raw)
        seeds = list(range(seed, seed + n))
        images = sampler.images(seeds, [label] * n if label is not None else None)
        if to_folder:
            for s, img in zip(seeds, images):
                with atomic_path(Path(out) / f"seed{s:06d}.png") as tmp:
                    grid(img[None], 1, padding=0).save(tmp, format="PNG")
        else:
            with atomic_path(out) as tmp:
                grid(images, nrow).save(tmp, format="PNG")
    typer.echo(
        f"generate: {json.dumps({'model': model, 'n': n, 'seeds': [seed, seed + n - 1], 'out': str(out), 'step': sampler.step})}"
    )


def _refuse_translator(checkpoint: Path, model: str) -> None:
    from pipeline.artifacts import read_checkpoint
    from pipeline.errors import ArtganError
    from pipeline.translation.translator import made_by

    if made_by(read_checkpoint(checkpoint)) == "translate":
        raise ArtganError(
            f"{model}: a translator (made by task translate), not a generator; `artgan translate PATH... "
            f"--model {model} --out DIR` translates images with it"
        )


@app.command()
def translate(
    paths: list[Path] = typer.Argument(
        ..., metavar="PATH...", help="Image files and folders (folders searched recursively, sorted)."
    ),
    model: str = typer.Option(
        "models/checkpoint.pt",
        "--model",
        "-m",
        help="models:/<name>@<alias>, models:/<name>/<version>, runs:/<run id>/translator, or a checkpoint path.",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="The folder to write <relative name>.png into."),
    raw: bool = typer.Option(False, "--raw", help="The raw translator instead of the EMA one."),
) -> None:
    """Turn image files into the style a translator learnt (task translate): any size or mode, converted as
    preprocess converts, written atomically as OUT/<relative name>.png; a file that is not an image is one line."""
    from pipeline.registry import local_checkpoint
    from pipeline.translation import apply

    with _user_errors(f"translate interrupted; the images already under {out} are complete, the rest not written"):
        todo = apply.plan(paths, out)  # refusals before a model is fetched
        with local_checkpoint(model) as checkpoint:
            figures = apply.run(todo, checkpoint, ema=not raw, err=lambda line: typer.echo(line, err=True))
    figures = {"model": model, "out": str(out), **figures}
    typer.echo(f"translate: {json.dumps(figures, sort_keys=True)}")
    if figures["failed"]:
        raise typer.Exit(1)


@app.command()
def promote(
    version: str = typer.Argument(..., help="The registered version to promote, e.g. 3."),
    name: str = typer.Option(None, "--name", help="Registered model (default: registry.name in the params)."),
    alias: str = typer.Option("champion", "--alias", help="The alias to move."),
    params: Path = PARAMS,
) -> None:
    """Point <name>@champion (or --alias) at a registered version by hand."""
    from pipeline import registry

    with _user_errors("promote interrupted"):
        if name is None:  # the params' registry.name; outside a project (no params.yaml) the default one
            from pipeline.config import RegistryCfg, load

            name = load(params).registry.name if params.exists() else RegistryCfg().name
        figures = registry.promote(name, version, alias)
    typer.echo(f"promote: {json.dumps(figures)}")


@app.command()
def export(
    onnx: bool = typer.Option(
        False,
        "--onnx",
        help="Export to ONNX (z[, y] -> images; a translator: image -> translated; all in [-1, 1]), checked with "
        "onnxruntime.",
    ),
    model: str = typer.Option(
        "models/checkpoint.pt",
        "--model",
        "-m",
        help="A checkpoint path, or an MLflow model URI (models:/<name>@<alias>, models:/<name>/<version>, runs:/...).",
    ),
    out: Path = typer.Option(Path("models/generator.onnx"), "--out", "-o", help="Where to write the model."),
    raw: bool = typer.Option(False, "--raw", help="The raw generator weights instead of the EMA ones."),
    opset: int = typer.Option(
        None, "--opset", help="ONNX opset (default: the exporter's; below 18 uses torch's TorchScript exporter)."
    ),
) -> None:
    """Export the trained generator or translator (default: EMA weights of models/checkpoint.pt) for use outside
    torch."""
    if not onnx:
        typer.echo("error: choose an export format: --onnx (the only one so far)", err=True)
        raise typer.Exit(1)
    with _user_errors(f"export interrupted; {out} was not written"):
        from pipeline.export import export_onnx
        from pipeline.registry import local_checkpoint

        with local_checkpoint(model) as checkpoint:
            figures = export_onnx(checkpoint, out, ema=not raw, opset=opset)
    typer.echo(f"export: {json.dumps(figures, sort_keys=True, default=str)}")


def main() -> None:  # pragma: no cover
    sys.exit(app())
