"""Sharing models: evaluate registers the generator (pyfunc, signature, input example), @champion moves only
on a better FID with the same data digest and protocol, `artgan promote` / `artgan generate`, the pyfunc
model behind a real `mlflow models serve` on 127.0.0.1, and the one-line errors of the registry."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from helpers import isolate_mlflow, tiny_cfg
from PIL import Image

from pipeline.config import parse
from pipeline.errors import ArtganError

BIN = Path(sys.executable).parent
NAME = "artgan-generator"

pytestmark = pytest.mark.slow  # make test-fast leaves these out (docs/testing.md)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """fetch → validate → preprocess → train → evaluate in-process on 40 images; evaluate registers v1."""
    from pipeline.stages import evaluate, fetch, preprocess, train, validate

    root = tmp_path_factory.mktemp("registry")
    cfg = parse(
        tiny_cfg(
            root,
            train={"steps": 4, "snapshot_every": 4},
            eval={
                "n_samples": 16,
                "batch_size": 16,
                "kid_subset_size": 10,
                "kid_subsets": 2,
                "curve_samples": 0,
                "memorisation_pairs": 2,
            },
        )
    )
    with pytest.MonkeyPatch.context() as mp:
        uri = isolate_mlflow(mp, root)
        for stage in (fetch, validate, preprocess, train):
            stage.run(cfg)
        figures = evaluate.run(cfg)
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        yield cfg, figures, root, env


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def _aliases() -> dict[str, str]:
    return {a: str(v) for a, v in _client().get_registered_model(NAME).aliases.items()}


def _artgan(env, root, *args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "artgan"), *map(str, args)], cwd=root, env=env, capture_output=True, text=True, timeout=timeout
    )


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _tiles(path: Path, n: int, size: int, nrow: int = 8, pad: int = 2) -> list[np.ndarray]:
    """The images of an `artgan generate` grid, in order."""
    grid = np.asarray(Image.open(path).convert("RGB"))
    out = []
    for i in range(n):
        r, c = divmod(i, min(nrow, n))
        y, x = pad + r * (size + pad), pad + c * (size + pad)
        out.append(grid[y : y + size, x : x + size])
    return out


def test_evaluate_registers_the_generator_with_signature_and_example_and_makes_it_champion(trained):
    cfg, figures, _, _ = trained
    assert figures["registered"] == f"{NAME}/1" and figures["champion"] == "1" and figures["champion_moved"]
    client = _client()
    rm = client.get_registered_model(NAME)
    assert rm.tags.get("artgan") == "generator" and _aliases() == {"champion": "1"}
    mv = client.get_model_version(NAME, "1")
    run_id = json.loads((Path(cfg.train.out_dir) / "mlflow_run.json").read_text())["run_id"]
    assert mv.run_id == run_id
    run = client.get_run(run_id)
    assert mv.tags["data_digest"] == run.data.tags["data_digest"] and float(mv.tags["fid"]) == figures["fid"]
    assert mv.tags["fid_protocol"] == f"tf-inception-2015-12-05 n_fake=16 n_real={figures['fid_n_real']} size=16"

    from mlflow.models import get_model_info

    info = get_model_info(f"models:/{NAME}/1")
    assert [c["name"] for c in info.signature.inputs.to_dict()] == ["seed", "label"]
    assert [c["name"] for c in info.signature.outputs.to_dict()] == ["seed", "label", "png"]
    assert info.saved_input_example_info is not None


def test_champion_moves_only_for_a_better_fid_on_the_same_data_and_protocol(trained):
    from pipeline import registry

    _, figures, _, _ = trained
    mv = _client().get_model_version(NAME, "1")
    uri, run_id, digest, proto, fid = (
        mv.source,
        mv.run_id,
        mv.tags["data_digest"],
        mv.tags["fid_protocol"],
        figures["fid"],
    )

    worse = registry.publish(NAME, uri, run_id, fid + 1, digest, proto)
    assert worse["registered"] == f"{NAME}/2" and not worse["champion_moved"] and worse["champion"] == "1"
    other_data = registry.publish(NAME, uri, run_id, fid - 50, "0" * 64, proto)
    assert not other_data["champion_moved"] and "not comparable" in other_data["champion_reason"]
    other_protocol = registry.publish(NAME, uri, run_id, fid - 50, digest, proto.replace("n_fake=16", "n_fake=2048"))
    assert not other_protocol["champion_moved"]
    assert _aliases() == {"champion": "1"}
    better = registry.publish(NAME, uri, run_id, fid - 1, digest, proto)
    assert better["registered"] == f"{NAME}/5" and better["champion_moved"] and better["champion"] == "5"
    assert str(_client().get_model_version_by_alias(NAME, "champion").version) == "5"
    # back to v1 for the tests below (and to check `artgan promote` by hand)
    registry.promote(NAME, "1")
    assert str(_client().get_model_version_by_alias(NAME, "champion").version) == "1"


def test_fp16_features_are_another_protocol_and_fp32_reads_as_before():
    from pipeline import registry

    m = {"fid_n_fake": 2048, "fid_n_real": 4084, "image_size": 32}
    assert (
        registry.protocol(m)
        == registry.protocol(m, "fp32")
        == "tf-inception-2015-12-05 n_fake=2048 n_real=4084 size=32"
    )
    assert registry.protocol(m, "fp16") == registry.protocol(m) + " precision=fp16"


def test_promote_by_hand_and_its_errors(trained):
    _, _, root, env = trained
    res = _artgan(env, root, "promote", "2", "--alias", "staging")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.split("promote: ", 1)[1]) == {
        "model": NAME,
        "alias": "staging",
        "version": "2",
        "previous": None,
    }
    assert str(_client().get_model_version_by_alias(NAME, "staging").version) == "2"

    missing_version = _artgan(env, root, "promote", "99")
    assert missing_version.returncode == 1
    assert missing_version.stderr.strip().splitlines() == [
        f"error: '{NAME}' has no version 99; versions: 1, 2, 3, 4, 5"
    ]
    missing_model = _artgan(env, root, "promote", "1", "--name", "no-such-model")
    assert missing_model.returncode == 1 and len(missing_model.stderr.strip().splitlines()) == 1
    assert "registered model 'no-such-model' does not exist" in missing_model.stderr and NAME in missing_model.stderr


def test_generate_from_the_champion_equals_the_local_checkpoint(trained, tmp_path):
    cfg, _, root, env = trained
    res = _artgan(
        env,
        root,
        "generate",
        "--model",
        f"models:/{NAME}@champion",
        "--n",
        "12",
        "--seed",
        "3",
        "--out",
        tmp_path / "champion.png",
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.split("generate: ", 1)[1])["seeds"] == [3, 14]
    local = _artgan(
        env,
        root,
        "generate",
        "--model",
        Path(cfg.train.out_dir) / "checkpoint.pt",
        "--n",
        "12",
        "--seed",
        "3",
        "--out",
        tmp_path / "local.png",
    )
    assert local.returncode == 0, local.stderr
    a, b = np.asarray(Image.open(tmp_path / "champion.png")), np.asarray(Image.open(tmp_path / "local.png"))
    assert a.shape == (2 + 2 * 18, 2 + 8 * 18, 3) and np.array_equal(a, b)
    tiles = _tiles(tmp_path / "champion.png", 12, 16)
    assert len({t.tobytes() for t in tiles}) == 12  # twelve different images

    # the image of a seed does not depend on the batch it was drawn in
    one = _artgan(
        env,
        root,
        "generate",
        "--model",
        Path(cfg.train.out_dir) / "checkpoint.pt",
        "--n",
        "1",
        "--seed",
        "7",
        "--out",
        f"{tmp_path / 'single'}/",
    )
    assert one.returncode == 0, one.stderr
    single = np.asarray(Image.open(tmp_path / "single" / "seed000007.png").convert("RGB"))
    assert np.abs(single.astype(int) - tiles[4].astype(int)).max() <= 1


@pytest.mark.parametrize(
    "model, expect",
    [
        (f"models:/{NAME}@nope", f"error: '{NAME}' has no alias @nope; its aliases: @champion (v1), @staging (v2)"),
        (f"models:/{NAME}/42", f"error: '{NAME}' has no version 42; versions: 1, 2, 3, 4, 5"),
        ("models:/not-registered@champion", "error: registered model 'not-registered' does not exist at"),
        (
            "runs:/0123456789abcdef0123456789abcdef/generator",
            "error: model runs:/0123456789abcdef0123456789abcdef/generator:",
        ),
        ("no/such/checkpoint.pt", "error: no/such/checkpoint.pt: no such checkpoint"),
    ],
)
def test_a_model_that_does_not_exist_is_one_line(trained, tmp_path, model, expect):
    _, _, root, env = trained
    res = _artgan(env, root, "generate", "--model", model, "--out", tmp_path / "x.png")
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expect), res.stderr
    assert not (tmp_path / "x.png").exists()


def test_a_file_that_is_not_a_checkpoint_is_one_line(trained, tmp_path):
    _, _, root, env = trained
    (tmp_path / "notes.pt").write_text("hello")
    res = _artgan(env, root, "generate", "--model", tmp_path / "notes.pt", "--out", tmp_path / "x.png")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 1, res.stderr
    assert lines[0].startswith(f"error: {tmp_path / 'notes.pt'}: not an artgan checkpoint (")
    assert "weights_only" not in lines[0]  # not torch's advice to unpickle an untrusted file
    assert not (tmp_path / "x.png").exists()


def test_an_out_file_that_is_not_png_is_refused_before_the_model_is_fetched(trained, tmp_path):
    _, _, root, env = trained  # the model does not exist either: the --out check comes first, before any work
    res = _artgan(env, root, "generate", "--model", f"models:/{NAME}/42", "--out", tmp_path / "x.jpg")
    assert res.returncode == 1 and res.stderr.strip().splitlines() == [
        f"error: --out {tmp_path / 'x.jpg'}: write a .png file (or a folder ending in /)"
    ]
    assert list(tmp_path.iterdir()) == []


def test_a_label_for_an_unconditional_generator_is_an_error_not_ignored(trained, tmp_path):
    cfg, _, root, env = trained
    res = _artgan(
        env,
        root,
        "generate",
        "--model",
        Path(cfg.train.out_dir) / "checkpoint.pt",
        "--label",
        "cats",
        "--out",
        tmp_path / "x.png",
    )
    assert res.returncode == 1 and res.stderr.strip().splitlines() == [
        "error: label 'cats': this generator is unconditional (trained without data.label); leave the label out"
    ]
    assert not (tmp_path / "x.png").exists()


def test_a_registered_model_of_another_project_is_refused_before_any_work(trained):
    from pipeline.stages import evaluate

    cfg, _, root, _ = trained
    _client().create_registered_model("their-model")
    other = parse({**cfg.model_dump(by_alias=True), "registry": {"name": "their-model", "enabled": True}})
    t0 = time.perf_counter()
    with pytest.raises(
        ArtganError, match=r"^registry.name: the registered model 'their-model' .* was not made by artgan"
    ):
        evaluate.run(other)
    assert time.perf_counter() - t0 < 60  # refused before the FID work, not after it
    assert _client().search_model_versions("name = 'their-model'") == []


def test_pyfunc_model_answers_seeds_with_the_images_generate_draws(trained, tmp_path):
    import mlflow.pyfunc
    import pandas as pd

    _, _, root, env = trained
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    out = model.predict(pd.DataFrame({"seed": [3, 9]}))
    assert list(out.columns) == ["seed", "label", "png"] and out["seed"].tolist() == [3, 9]
    res = _artgan(
        env,
        root,
        "generate",
        "--model",
        f"models:/{NAME}@champion",
        "--n",
        "7",
        "--seed",
        "3",
        "--out",
        tmp_path / "g.png",
    )
    assert res.returncode == 0, res.stderr
    tiles = _tiles(tmp_path / "g.png", 7, 16)
    for png, tile in zip(out["png"], (tiles[0], tiles[6])):
        img = _png(base64.b64decode(png))
        assert img.shape == (16, 16, 3) and np.abs(img.astype(int) - tile.astype(int)).max() <= 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_models_serve_answers_seeds_with_png_images(trained, tmp_path):
    _, _, root, env = trained
    port = _free_port()
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            f"models:/{NAME}@champion",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            "1",
        ],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).close()
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    pytest.fail("mlflow models serve did not come up:\n" + (tmp_path / "serve.log").read_text()[-3000:])
                time.sleep(0.5)
        body = json.dumps({"dataframe_records": [{"seed": 0}, {"seed": 5}, {"seed": 0}]}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            answer = json.loads(resp.read())
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    rows = answer["predictions"]
    assert [r["seed"] for r in rows] == [0, 5, 0]
    images = [_png(base64.b64decode(r["png"])) for r in rows]
    assert all(img.shape == (16, 16, 3) for img in images)
    assert np.array_equal(images[0], images[2]) and not np.array_equal(images[0], images[1])  # a seed is an image

    res = _artgan(
        env,
        root,
        "generate",
        "--model",
        f"models:/{NAME}@champion",
        "--n",
        "6",
        "--seed",
        "0",
        "--out",
        tmp_path / "g.png",
    )
    assert res.returncode == 0, res.stderr
    tiles = _tiles(tmp_path / "g.png", 6, 16)
    assert np.abs(images[1].astype(int) - tiles[5].astype(int)).max() <= 1


def test_export_onnx_of_the_champion(trained, tmp_path):
    import onnx

    _, _, root, env = trained
    (tmp_path / "tmp").mkdir()
    res = _artgan(
        {**env, "TMPDIR": str(tmp_path / "tmp")},
        root,
        "export",
        "--onnx",
        "--model",
        f"models:/{NAME}@champion",
        "--out",
        tmp_path / "g.onnx",
    )
    assert res.returncode == 0, res.stderr
    figures = json.loads(res.stdout.split("export: ", 1)[1])
    assert figures["max_abs_diff"] <= figures["tolerance"] and figures["weights"] == "ema"
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "g.onnx")).metadata_props}
    assert meta["z_dim"] == "16" and meta["image_size"] == "16"
    assert not list((tmp_path / "tmp").glob("artgan-model-*"))  # the download was cleaned up
