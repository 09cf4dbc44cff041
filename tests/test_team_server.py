"""The team tracking server (README, "Team tracking server"), for real: a PostgreSQL cluster (Debian's
`postgresql`, which `make setup` installs) as MLflow's backend and registry store, a real `mlflow server`
on 127.0.0.1 with proxied artifact storage and the basic-auth app, and the tiny pipeline run against it
stage by stage through MLFLOW_TRACKING_URI. The run, its metrics and artifacts and the registered model
are read back through the server, and the rows are looked up in PostgreSQL itself, so the test cannot
pass against a local fallback store.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from helpers import REPO, _merge, tiny_cfg, write_params
from pgserver import MlflowServer, PostgresCluster, mlflow_env

pytestmark = pytest.mark.e2e  # runs the real stages (~2 minutes on 2 cores); `pytest -m "not e2e"` leaves it out

DB_USER, DB_PASSWORD = "artgan", "db-pw-not-secret"
ADMIN, ADMIN_PASSWORD = "admin", "admin-pw-not-secret"  # the auth app wants >= 12 characters
USER, USER_PASSWORD = "alice", "alice-pw-not-secret"

# Tiny and quick: no FID curve (curve_samples 0, not under test here); the per-step losses carry the metric steps.
TINY = {
    "data": {"image_size": 16, "max_images": 80},
    "validate": {"min_images": 50},
    "preprocess": {"fid_real_images": 0, "workers": 1},
    "model": {"g_channels": 8, "d_channels": 8},
    "train": {
        "steps": 10,
        "batch_size": 16,
        "log_every": 1,
        "sample_every": 5,
        "snapshot_every": 10,
        "checkpoint_every": 10,
    },
    "eval": {"n_samples": 64, "kid_subsets": 2, "kid_subset_size": 50, "curve_samples": 0},
}
STAGES = ("fetch", "validate", "preprocess", "train", "evaluate", "render")


@pytest.fixture(scope="module")
def postgres():
    """A fresh cluster: role `artgan` (password over TCP), databases `mlflow` (runs + registry) and
    `mlflow_auth` (the basic-auth app's users and permissions). Always stopped at teardown."""
    pg = PostgresCluster()
    try:
        pg.start()
        pg.create_db("mlflow", DB_USER, DB_PASSWORD)
        pg.create_db("mlflow_auth", DB_USER)
        yield pg
    finally:
        pg.stop()


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    """`mlflow server --app-name basic-auth` on PostgreSQL, as the README documents it.

    Artifacts: `--artifacts-destination` (proxied artifact serving, on by default) rather than
    `--default-artifact-root`. Runs then record `mlflow-artifacts:/...` locations and clients upload and
    download through the server's HTTP API, so team members need neither a shared file system nor the
    bucket's credentials (only the server holds them), and basic-auth guards the artifacts as well. With
    `--default-artifact-root` every client would write straight to that path or bucket itself.
    """
    work = tmp_path_factory.mktemp("mlflow-server")
    ini = work / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {postgres.uri(DB_USER, DB_PASSWORD, 'mlflow_auth')}\n"
        f"admin_username = {ADMIN}\n"
        f"admin_password = {ADMIN_PASSWORD}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # cache a checked password for a minute: PBKDF2 on every request is slow on 2 cores
        "auth_cache_ttl_seconds = 60\n"
    )
    artifacts = work / "artifacts"
    srv = MlflowServer(
        work,
        [
            "--backend-store-uri",
            postgres.uri(DB_USER, DB_PASSWORD, "mlflow"),
            "--artifacts-destination",
            str(artifacts),
            "--workers",
            "1",
            "--app-name",
            "basic-auth",
        ],
        mlflow_env(MLFLOW_AUTH_CONFIG_PATH=str(ini), MLFLOW_FLASK_SERVER_SECRET_KEY="test-only-csrf-secret-key"),
    )
    try:
        srv.wait_healthy(timeout=90)
        _request(
            srv.url,
            "/api/2.0/mlflow/users/create",
            (ADMIN, ADMIN_PASSWORD),
            {"username": USER, "password": USER_PASSWORD},
        )
        srv.artifacts = artifacts
        yield srv
    finally:
        srv.stop()


def _request(url: str, path: str, auth: tuple[str, str] | None = None, body: dict | None = None):
    """One REST call; returns (status, parsed JSON or text)."""
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            text = r.read().decode()
            return r.status, (json.loads(text) if text.startswith("{") else text)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


@pytest.fixture(scope="module")
def pipeline(server, tmp_path_factory):
    """The six stages as `artgan <stage> --params`, in an empty working folder, as user alice."""
    work = tmp_path_factory.mktemp("team-pipeline")
    params = _merge(yaml.safe_load((REPO / "params.yaml").read_text()), tiny_cfg(work, **TINY))
    params_file = write_params(work / "params.yaml", params)
    env = mlflow_env(
        MLFLOW_TRACKING_URI=server.url, MLFLOW_TRACKING_USERNAME=USER, MLFLOW_TRACKING_PASSWORD=USER_PASSWORD
    )
    seconds = {}
    for stage in STAGES:
        t0 = time.monotonic()
        out = subprocess.run(
            ["artgan", stage, "--params", str(params_file)],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        seconds[stage] = round(time.monotonic() - t0, 1)
        assert out.returncode == 0, (
            f"artgan {stage} failed ({out.returncode}):\n{out.stdout[-3000:]}\n"
            f"{out.stderr[-3000:]}\n--- server log ---\n{server.log.read_text()[-3000:]}"
        )
    print("stage seconds:", seconds)
    run_id = json.loads((Path(params["train"]["out_dir"]) / "mlflow_run.json").read_text())["run_id"]
    return {"work": work, "params": params, "run_id": run_id}


@pytest.fixture
def client(server, monkeypatch):
    """An MlflowClient on the server, as alice (MLflow reads the credentials from the environment)."""
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", USER_PASSWORD)
    return MlflowClient(tracking_uri=server.url, registry_uri=server.url)


def test_basic_auth_refuses_requests_without_valid_credentials(server):
    search = "/api/2.0/mlflow/experiments/search?max_results=5"
    assert _request(server.url, "/health")[0] == 200  # unprotected: artgan's reachability check uses it
    assert _request(server.url, search)[0] == 401
    assert _request(server.url, search, (USER, "wrong-password-123"))[0] == 401
    assert _request(server.url, search, ("mallory", USER_PASSWORD))[0] == 401
    status, body = _request(server.url, search, (USER, USER_PASSWORD))
    assert status == 200 and any(e["name"] == "Default" for e in body["experiments"])


def test_basic_auth_guards_writes_and_checks_permissions(server, client, monkeypatch):
    # alice creates an experiment and a run with her credentials (what artgan does through MLFLOW_TRACKING_*)
    exp_id = client.create_experiment("alice-scratch")
    run = client.create_run(exp_id)
    client.log_metric(run.info.run_id, "x", 1.0)
    assert client.get_run(run.info.run_id).data.metrics == {"x": 1.0}
    # without credentials the same write is refused
    status, _ = _request(
        server.url,
        "/api/2.0/mlflow/runs/log-metric",
        None,
        {"run_id": run.info.run_id, "key": "x", "value": 2.0, "timestamp": 0, "step": 1},
    )
    assert status == 401
    # another user only has the default READ permission on alice's experiment: can read, cannot write
    assert (
        _request(
            server.url,
            "/api/2.0/mlflow/users/create",
            (ADMIN, ADMIN_PASSWORD),
            {"username": "bob", "password": "bob-pw-not-secret"},
        )[0]
        == 200
    )
    bob = ("bob", "bob-pw-not-secret")
    log_metric = {"run_id": run.info.run_id, "key": "x", "value": 3.0, "timestamp": 0, "step": 2}
    assert _request(server.url, f"/api/2.0/mlflow/runs/get?run_id={run.info.run_id}", bob)[0] == 200
    assert _request(server.url, "/api/2.0/mlflow/runs/log-metric", bob, log_metric)[0] == 403
    # ... until an admin grants EDIT on it, with the auth app's client as the README shows
    from mlflow.server import get_app_client

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    get_app_client("basic-auth", tracking_uri=server.url).grant_user_permission("bob", "experiment", exp_id, "EDIT")
    assert _request(server.url, "/api/2.0/mlflow/runs/log-metric", bob, log_metric)[0] == 200


def test_pipeline_run_is_read_back_through_the_server(pipeline, client):
    run = client.get_run(pipeline["run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.user_id == USER  # the basic-auth user, not the OS account
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")  # proxied through the server
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == "artgan"
    assert run.data.params["train.loss"] == pipeline["params"]["train"]["loss"]
    assert run.data.params["train.steps"] == "10"
    assert {"train", "evaluate", "render"} <= set(run.data.tags["stages"].split(","))
    for key in ("fid", "kid_mean", "kid_std", "loss_d", "loss_g"):
        assert key in run.data.metrics, key
    assert run.data.metrics["fid"] > 0
    history = client.get_metric_history(run.info.run_id, "loss_d")
    assert sorted(m.step for m in history) == list(range(1, 11))  # every step (log_every 1)

    # artifacts, listed and downloaded through the server (which stores them under --artifacts-destination)
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"images", "render", "index.html"} <= top, top
    grids = [a.path for a in client.list_artifacts(run.info.run_id, "images") if a.path.endswith(".png")]
    assert any("samples" in p for p in grids), grids
    local = client.download_artifacts(run.info.run_id, grids[0], str(pipeline["work"] / "downloaded"))
    assert Path(local).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_data_stages_log_into_the_data_experiment(pipeline, client):
    exp = client.get_experiment_by_name("artgan-data")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    assert {r.data.tags.get("stage") for r in runs} >= {"fetch", "validate", "preprocess"}
    assert all(r.info.status == "FINISHED" for r in runs)


def test_generator_is_registered_with_the_champion_alias(pipeline, client):
    name = pipeline["params"].get("registry", {}).get("name", "artgan-generator")
    model = client.get_registered_model(name)
    versions = client.search_model_versions(f"name='{name}'")
    mine = [v for v in versions if v.run_id == pipeline["run_id"]]
    assert mine, f"no version of {name} from run {pipeline['run_id']}: {[(v.version, v.run_id) for v in versions]}"
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.run_id == pipeline["run_id"] and champion.version == mine[0].version
    assert "champion" in model.aliases


def test_everything_lives_in_postgres_and_the_artifact_store(pipeline, postgres, server):
    """Read the rows in PostgreSQL itself (not through MLflow), and the files under the artifact root."""
    import psycopg2

    run_id = pipeline["run_id"]
    with (
        psycopg2.connect(
            host="127.0.0.1", port=postgres.port, user=DB_USER, password=DB_PASSWORD, dbname="mlflow"
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute(
            "SELECT r.status, r.user_id, e.name FROM runs r JOIN experiments e USING (experiment_id) "
            "WHERE r.run_uuid = %s",
            (run_id,),
        )
        assert cur.fetchall() == [("FINISHED", USER, "artgan")]
        cur.execute("SELECT count(*) FROM metrics WHERE run_uuid = %s AND key = 'loss_d'", (run_id,))
        assert cur.fetchone()[0] == 10
        cur.execute("SELECT value FROM params WHERE run_uuid = %s AND key = 'train.loss'", (run_id,))
        assert cur.fetchone()[0] == pipeline["params"]["train"]["loss"]
        cur.execute(
            "SELECT e.name, count(*) FROM runs r JOIN experiments e USING (experiment_id) "
            "WHERE e.name LIKE 'artgan%%' GROUP BY e.name ORDER BY e.name"
        )
        assert cur.fetchall() == [("artgan", 1), ("artgan-data", 3)]
    # the users live in the auth database of the same cluster
    assert set(postgres.psql("SELECT username FROM users", db="mlflow_auth").split()) >= {ADMIN, USER}

    stored = list(server.artifacts.rglob(f"{run_id}/artifacts/index.html"))
    assert len(stored) == 1, stored
    # nothing fell back to a local store in the pipeline's working folder
    work = pipeline["work"]
    assert not (work / "mlflow.db").exists() and not (work / "mlruns").exists() and not (work / "mlartifacts").exists()


def test_a_wrong_password_is_one_line_naming_the_server(server, monkeypatch):
    from pipeline import tracking
    from pipeline.errors import ArtganError

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong-password-123")
    with pytest.raises(ArtganError) as exc:
        with tracking.new_run("probe", {}, experiment="artgan-probe"):
            pass
    message = str(exc.value)
    print(repr(message))
    assert server.url in message and "\n" not in message
