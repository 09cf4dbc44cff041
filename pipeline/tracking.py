"""MLflow tracking: the only module that imports mlflow.

train opens the run; evaluate and render log into the same run, whose id train writes to an output
file (`models/mlflow_run.json`) that DVC hands to the later stages. fetch, validate and preprocess each
log a small run in the `<experiment>-data` experiment, so the main experiment lists one run per model.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Iterator

from pipeline.dvclock import project_root
from pipeline.errors import ArtganError

EXPERIMENT = "artgan"
DATA_EXPERIMENT = "artgan-data"
# MLflow 3's experiment type (its UI's ExperimentKind): a training experiment opens on its runs, not on the GenAI
# overview (traces, evaluations) that MLflow 3 shows an experiment of no or an inferred kind
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
MLFLOW_DIGEST_CHARS = 32  # MLflow's dataset digest column holds 36 characters; a sha256 is 64 hex digits


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


_REACHABLE: set[str] = set()


def check_reachable(timeout: float = 5.0) -> None:
    """With a tracking server (an http/https URI), one quick request before any work: an unreachable or
    stalled server is a one-line error within `timeout` seconds, not after minutes of MLflow's retries."""
    uri = tracking_uri()
    if not uri.startswith(("http://", "https://")) or uri in _REACHABLE:
        return
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        pass  # it answered (an auth proxy's 401, an old server's 404): reachable
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ArtganError(
            f"MLflow tracking server {uri} is unreachable ({reason}); start it, fix "
            "MLFLOW_TRACKING_URI, or unset it to track in ./mlflow.db"
        ) from None
    _REACHABLE.add(uri)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///relative` or `sqlite:////absolute` URI; None for another store or an
    in-memory database."""
    if not uri.startswith("sqlite://"):
        return None
    rest = uri[len("sqlite://") :].split("?", 1)[0]
    path = rest[1:] if rest.startswith("/") else rest
    return None if path in ("", ":memory:") else Path(path)


def check_store_folder() -> None:
    """A SQLite tracking store in a folder that does not exist is a one-line error: MLflow would create the
    folder, wherever MLFLOW_TRACKING_URI points (outside the repository too), without a word. The user makes
    it, if that is where the store belongs."""
    db = sqlite_path(tracking_uri())
    if db is not None and not db.parent.is_dir():
        raise ArtganError(
            f"MLFLOW_TRACKING_URI={tracking_uri()}: the folder {db.parent} does not exist; create it "
            f"(`mkdir -p {db.parent}`) if the store belongs there, or fix MLFLOW_TRACKING_URI "
            "(unset it to track in ./mlflow.db)"
        )


def _mlflow():
    import logging

    check_reachable()
    check_store_folder()
    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in stage logs
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri())
    _init_sqlite_store(mlflow)
    return mlflow


_INITIALISED: set[str] = set()


def _init_sqlite_store(mlflow) -> None:
    """Create (or migrate) a SQLite store under a lock beside it, once per process. MLflow creates the tables
    of a new store on first use, and processes that first use it at the same time (queue workers of
    `dvc queue start -j 3` on a fresh repository) race in its migrations: all but one failed with
    "duplicate column name" or "table ... already exists". The lock makes them wait for the first."""
    uri = tracking_uri()
    db = sqlite_path(uri)
    if db is None or uri in _INITIALISED:
        return
    from filelock import FileLock

    try:
        with FileLock(f"{db}.lock"):
            mlflow.MlflowClient().search_experiments(max_results=1)  # MLflow builds the store here
    except Exception as exc:
        raise ArtganError(f"MLflow tracking at {uri!r} failed: {str(exc).splitlines()[0]}") from None
    _INITIALISED.add(uri)


class Run:
    """A thin handle over one active MLflow run."""

    def __init__(self, mlflow, run_id: str):
        self._mlflow = mlflow
        self.run_id = run_id

    def log_params(self, params: dict[str, object]) -> None:
        self._mlflow.log_params({k: str(v) for k, v in params.items()})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_metric_history(self, rows: list[tuple[int, dict[str, float]]]) -> None:
        """Many steps in one batched call (per-step losses)."""
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        metrics = [Metric(k, float(v), ts, step) for step, values in rows for k, v in values.items()]
        client = self._mlflow.MlflowClient()
        for i in range(0, len(metrics), 1000):
            client.log_batch(self.run_id, metrics=metrics[i : i + 1000])

    def log_image(self, image, key: str, step: int | None = None, artifact_file: str | None = None) -> None:
        if artifact_file is not None:
            self._mlflow.log_image(image, artifact_file=artifact_file)
        else:
            self._mlflow.log_image(image, key=key, step=step)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self._mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_artifacts(self, folder: str | os.PathLike, artifact_path: str | None = None) -> None:
        self._mlflow.log_artifacts(str(folder), artifact_path=artifact_path)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._mlflow.set_tags(tags)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._mlflow.log_text(text, artifact_file)

    def log_dataset(self, df, name: str, source: str, digest: str, context: str = "training") -> None:
        """The dataset behind this run as an MLflow dataset input (its schema and row count, not the data).

        MLflow stores at most 36 characters of digest, so the dataset carries the first 32 hex digits and
        the input's tag `sha256` (and the run tag `dataset_digest`) the whole one."""
        import warnings

        from mlflow.data.pandas_dataset import from_pandas

        with warnings.catch_warnings():
            # two of MLflow's own notes that say nothing about this dataset: a local path matches both of its
            # local-file source classes (the same class registered for "" and "file:"), and a schema inferred
            # from integer columns (the manifest's sizes) would not take missing values, which it never holds
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple")
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
            dataset = from_pandas(df, source=source, name=name, digest=digest[:MLFLOW_DIGEST_CHARS])
            self._mlflow.log_input(dataset, context=context, tags={"sha256": digest})
        self._mlflow.set_tags({"dataset_digest": digest})


@contextlib.contextmanager
def _activate(mlflow, run_kwargs: dict, stage: str) -> Iterator[Run]:
    try:
        active = mlflow.start_run(**run_kwargs)
    except Exception as exc:  # an unreachable server, a bad URI: say so before any work starts
        raise ArtganError(f"MLflow tracking at {tracking_uri()!r} failed: {str(exc).splitlines()[0]}") from None
    with active as run:
        handle = Run(mlflow, run.info.run_id)
        existing = run.data.tags.get("stages", "")
        stages = ",".join(dict.fromkeys(filter(None, [*existing.split(","), stage])))  # a resumed train adds nothing
        mlflow.set_tags({"stage": stage, "stages": stages, "git_commit": git_commit()})
        try:
            yield handle
        except BaseException:
            mlflow.end_run(status="FAILED")
            raise


@contextlib.contextmanager
def new_run(
    stage: str, params: dict[str, object], experiment: str = EXPERIMENT, system_metrics: bool = False
) -> Iterator[Run]:
    """A fresh run named after the DVC experiment (DVC_EXP_NAME) when there is one; `system_metrics`
    turns on MLflow's CPU/memory/GPU sampling for the run's lifetime."""
    mlflow = _mlflow()
    try:
        _set_experiment(mlflow, experiment)
    except Exception as exc:
        raise ArtganError(f"MLflow tracking at {tracking_uri()!r} failed: {str(exc).splitlines()[0]}") from None
    dvc_name = os.environ.get("DVC_EXP_NAME") or None
    name = dvc_name or run_name(stage, params)
    with _activate(mlflow, {"run_name": name, "log_system_metrics": system_metrics}, stage) as run:
        run.log_params(params)
        if dvc_name:
            run.set_tags({"dvc_exp_name": dvc_name})
        yield run


def dataset_slug(source: object) -> str:
    """A short name for `data.source`: openmoji, folder:/art/impressionists -> impressionists,
    url:https://x.org/wikiart.zip -> wikiart, hf:huggan/wikiart -> wikiart, torchvision:CIFAR10 -> cifar10."""
    import re

    text = str(source or "data")
    scheme, _, rest = text.partition(":") if ":" in text else ("", "", text)
    rest = rest.split("?", 1)[0].rstrip("/\\") or scheme
    last = re.split(r"[/\\]", rest)[-1] or scheme
    for ext in (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".zip", ".tar"):
        if last.lower().endswith(ext):
            last = last[: -len(ext)]
            break
    slug = re.sub(r"[^a-z0-9]+", "-", last.lower()).strip("-")
    return slug[:40] or scheme or "data"


def run_name(stage: str, params: dict[str, object]) -> str:
    """A name a person can tell apart when there is no DVC experiment name: what was trained, on what, at which
    commit, e.g. `dcgan-ns-openmoji-32px-1a2b3c4` (train) or `fetch-openmoji-32px-1a2b3c4` (a data stage)."""
    sha = git_commit()
    what = [params.get("model.arch", "model"), params.get("train.loss", "loss")] if stage == "train" else [stage]
    parts = [*what, dataset_slug(params.get("data.source")), f"{params.get('data.image_size', '?')}px"]
    if sha != "unknown":
        parts.append(sha[:7])
    return "-".join(str(p) for p in parts)


def read_run_id(run_file: Path) -> str:
    """The run id in `run_file` (models/mlflow_run.json): a missing, truncated or id-less file is one line naming
    it and train, the stage that writes it."""
    from pipeline.io import read_input, read_json

    def run_id(p: Path) -> str:
        data = read_json(p)
        value = data.get("run_id") if isinstance(data, dict) else None
        if not isinstance(value, str) or not value:
            raise ValueError("holds no run_id")
        return value

    return read_input(run_file, "train", run_id)


@contextlib.contextmanager
def resume_run(stage: str, run_file: Path) -> Iterator[Run]:
    """Continue the run whose id an earlier stage wrote to `run_file`."""
    run_id = read_run_id(run_file)
    with continue_run(stage, run_id, system_metrics=False) as run:
        yield run


def run_exists(run_id: str) -> bool:
    """Whether the tracking store holds this run (a resumed training continues its own run)."""
    mlflow = _mlflow()
    try:
        mlflow.get_run(run_id)
        return True
    except Exception:
        return False


@contextlib.contextmanager
def continue_run(stage: str, run_id: str, system_metrics: bool = True) -> Iterator[Run]:
    """Reopen a run by id (training resumed after an interruption), in its own experiment: a process that ran a
    data stage before (their runs live in the data experiment) may continue a training run all the same."""
    mlflow = _mlflow()
    try:
        mlflow.set_experiment(experiment_id=mlflow.get_run(run_id).info.experiment_id)
    except Exception as exc:
        raise ArtganError(f"MLflow tracking at {tracking_uri()!r} failed: {str(exc).splitlines()[0]}") from None
    with _activate(mlflow, {"run_id": run_id, "log_system_metrics": system_metrics}, stage) as run:
        yield run


def run_data(run_id: str) -> dict:
    """Params, metrics and tags of a run (for tests and reports)."""
    mlflow = _mlflow()
    run = mlflow.get_run(run_id)
    return {
        "params": run.data.params,
        "metrics": run.data.metrics,
        "tags": run.data.tags,
        "status": run.info.status,
        "name": run.info.run_name,
    }


# --- the generator as an MLflow model, and the Model Registry (decisions in pipeline/registry.py) ----------------


def log_data_stage(
    stage: str, params: dict[str, object], figures: dict, artifacts: list[Path] = (), tags: dict[str, str] | None = None
) -> str:
    """One small run per data stage (fetch, validate, preprocess) in the data experiment."""
    with new_run(stage, params, experiment=DATA_EXPERIMENT) as run:
        run.log_metrics({k: v for k, v in figures.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        if tags:
            run.set_tags(tags)
        for path in artifacts:
            run.log_artifact(path)
        return run.run_id


# --- under `dvc exp run --queue` / `--temp`: the store of the repository, not of the temporary copy ----------


def _set_experiment(mlflow, name: str) -> None:
    """mlflow.set_experiment, except that an experiment created from a DVC temporary workspace with a
    SQLite store keeps its artifacts under the repository's ./mlruns (MLflow would resolve its default
    ./mlruns against the temporary workspace, deleted when the experiment ends)."""
    root = project_root().resolve()
    if tracking_uri().startswith("sqlite:") and root != Path.cwd().resolve():
        if mlflow.get_experiment_by_name(name) is None:
            try:
                mlflow.create_experiment(name, artifact_location=str(root / "mlruns" / name))
            except Exception:  # another queue worker created it meanwhile
                if mlflow.get_experiment_by_name(name) is None:
                    raise
    experiment = mlflow.set_experiment(name)
    set_experiment_kind(mlflow, experiment)


def set_experiment_kind(mlflow, experiment) -> None:
    """Tag the experiment as MLflow 3's training kind (`mlflow.experimentKind: custom_model_development`), so
    the UI opens it on its runs, unless someone gave it a kind of their own. An inferred kind (what the UI
    guesses and may store, e.g. `genai_development_inferred`) is replaced. Best effort: a user who may only read
    the experiment on a team server cannot tag it, and tracking goes on without."""
    kind = (experiment.tags or {}).get(EXPERIMENT_KIND_TAG, "")
    if kind == EXPERIMENT_KIND or (kind and not kind.endswith("_inferred") and kind != "no_inferred_type"):
        return
    try:
        mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    except Exception:  # a READ-only user on a basic-auth server: the runs are still tracked
        pass
