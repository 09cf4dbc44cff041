"""An unreachable or stalled tracking server is one clear line before training starts, within seconds."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_cfg

from pipeline.config import parse
from pipeline.errors import ArtganError


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "data" / "processed"
    d.mkdir(parents=True)
    np.save(d / "images.npy", np.random.default_rng(0).integers(0, 256, (16, 16, 16, 3), dtype=np.uint8))
    return parse(
        tiny_cfg(tmp_path, train={"out_dir": str(tmp_path / "models"), "checkpoint_dir": str(tmp_path / "ckpt")})
    )


def _train_fails_fast(cfg, uri: str, monkeypatch) -> str:
    from pipeline.stages import train

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    t = time.perf_counter()
    with pytest.raises(ArtganError) as exc:
        train.run(cfg)
    assert time.perf_counter() - t < 60  # MLflow's own retries take minutes (4 min measured)
    message = str(exc.value)
    assert len(message.splitlines()) == 1 and uri in message and "unreachable" in message
    assert not (Path(cfg.train.out_dir) / "checkpoint.pt").exists()  # nothing trained, nothing written
    return message


def test_a_refused_connection_is_one_line_before_any_training(cfg, monkeypatch):
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    message = _train_fails_fast(cfg, f"http://127.0.0.1:{port}", monkeypatch)
    assert "refused" in message.lower()


def test_a_server_that_never_answers_times_out_with_one_line(cfg, monkeypatch):
    with socket.socket() as s:  # listens (the connection opens) but never replies
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        message = _train_fails_fast(cfg, f"http://127.0.0.1:{s.getsockname()[1]}", monkeypatch)
    assert "timed out" in message.lower()


@pytest.mark.parametrize("where", ["absolute", "relative"])
def test_a_sqlite_store_in_a_missing_folder_is_one_line_and_no_folder_is_made(cfg, tmp_path, monkeypatch, where):
    from pipeline.stages import train

    folder = tmp_path / "some" / "new" / "dir"
    uri = f"sqlite:///{folder / 'mlflow.db'}" if where == "absolute" else "sqlite:///some/new/dir/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(
        ArtganError,
        match=r"^MLFLOW_TRACKING_URI=sqlite:///.*: the folder .*some/new/dir does not "
        r"exist; create it \(`mkdir -p .*some/new/dir`\)",
    ) as exc:
        train.run(cfg)
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "some").exists()
    assert not (Path(cfg.train.out_dir) / "checkpoint.pt").exists()


def test_a_sqlite_store_in_a_folder_the_user_made_is_used(cfg, tmp_path, monkeypatch):
    from pipeline.tracking import check_store_folder, sqlite_path

    (tmp_path / "store").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    check_store_folder()  # no error: the folder is there
    assert sqlite_path("sqlite:////abs/x.db") == Path("/abs/x.db")
    assert sqlite_path("sqlite:///rel/x.db?timeout=5") == Path("rel/x.db")
    assert sqlite_path("sqlite://") is None and sqlite_path("http://127.0.0.1:5000") is None


def test_logging_the_dataset_prints_no_warning(tmp_path, monkeypatch, mlflow_dir):
    """`make repro` stays quiet: the train stage's dataset input (the manifest, with integer columns, from a local
    path) logs without MLflow's source-ambiguity and integer-schema notes, and with its schema and digest."""
    import warnings

    import pandas as pd
    from helpers import isolate_mlflow

    from pipeline import tracking

    isolate_mlflow(monkeypatch, tmp_path, mlflow_dir)
    df = pd.DataFrame({"path": ["a.png", "b.png"], "width": [32, 40], "height": [32, 40]})
    (tmp_path / "manifest.parquet").write_bytes(b"")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with tracking.new_run("train", {"seed": 0}) as run:
            run.log_dataset(df, name="d@32px", source=str(tmp_path / "manifest.parquet"), digest="ab" * 32)
            run_id = run.run_id
    # what a plain run prints: not the deprecation notes (SQLAlchemy's, under MLflow's store) that only pytest shows
    mlflow_warnings = [w for w in caught if "mlflow" in w.filename and not issubclass(w.category, DeprecationWarning)]
    assert not mlflow_warnings, [str(w.message)[:120] for w in mlflow_warnings]
    import mlflow

    inputs = mlflow.MlflowClient().get_run(run_id).inputs.dataset_inputs
    assert [i.dataset.digest for i in inputs] == [("ab" * 32)[: tracking.MLFLOW_DIGEST_CHARS]]
    assert "width" in inputs[0].dataset.schema


RACE = """
import os, sys, time
from pathlib import Path
from pipeline import tracking
import mlflow, sqlalchemy  # the slow imports before the start line, so that the stores are first used together
go = Path(sys.argv[1])
Path(sys.argv[2]).touch()  # at the start line
while not go.exists():
    time.sleep(0.005)
try:
    tracking._set_experiment(tracking._mlflow(), "artgan")
    print("ok")
except Exception as exc:
    print("failed:", exc)
"""


@pytest.mark.slow
def test_queue_workers_that_first_use_a_new_sqlite_store_together_all_track(tmp_path):
    # `dvc queue start -j 3` on a fresh repository: three trainings opened ./mlflow.db at once, and MLflow's
    # table creation raced ("duplicate column name: step"): two of the three experiments failed
    import os
    import subprocess
    import sys

    db, go = tmp_path / "mlflow.db", tmp_path / "go"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}"}
    ready = [tmp_path / f"ready{i}" for i in range(4)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACE, str(go), str(r)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True
        )
        for r in ready
    ]
    deadline = time.monotonic() + 120
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not db.exists()  # nobody has touched the store yet
    go.touch()
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert outs == ["ok"] * 4, outs
    import mlflow

    experiments = mlflow.MlflowClient(f"sqlite:///{db}").search_experiments()
    assert sorted(e.name for e in experiments) == ["Default", "artgan"]
