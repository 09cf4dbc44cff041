"""`artgan export --onnx`: real exports of tiny generators of every architecture, run with onnxruntime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import isolate_mlflow, tiny_cfg

from pipeline.config import parse
from pipeline.errors import ArtganError
from pipeline.export import TOLERANCE, export_onnx
from pipeline.models import KIND, build
from pipeline.tracking import tracking_uri

ARTGAN = str(Path(sys.executable).with_name("artgan"))
Z_DIM = 8

pytestmark = pytest.mark.slow  # make test-fast leaves these out (docs/testing.md)


def _settle(G: torch.nn.Module, n_classes: int) -> None:
    """Bring the batch-norm running statistics from their 0 / 1 start to the batches' own (momentum 0.1), so eval
    mode really uses them (0.9^100 of the start is left) and a deep generator's images are not all near 0."""
    G.train()
    with torch.no_grad():
        for _ in range(100):
            G(torch.randn(8, Z_DIM), torch.randint(0, n_classes, (8,)) if n_classes else None)
    G.eval()


def make_checkpoint(tmp_path: Path, arch: str, n_classes: int = 0, ema: bool = True) -> Path:
    """models/checkpoint.pt as train's _write_outputs writes it, for a tiny freshly built pair; the EMA
    generator is a second, differently seeded build so EMA and raw weights give different images."""
    size = 16 if arch in ("resnet", "fastgan") else 8
    cfg = parse(
        tiny_cfg(
            tmp_path, data={"image_size": size}, model={"arch": arch, "z_dim": Z_DIM, "g_channels": 4, "d_channels": 4}
        )
    )
    torch.manual_seed(1)
    G, D = build(arch, size, Z_DIM, 4, 4, n_classes=n_classes)
    _settle(G, n_classes)
    G_ema = None
    if ema:
        torch.manual_seed(2)
        G_ema, _ = build(arch, size, Z_DIM, 4, 4, n_classes=n_classes)
        _settle(G_ema, n_classes)
    classes = [f"class{i}" for i in range(n_classes)]
    path = tmp_path / "models" / "checkpoint.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "generator": G.state_dict(),
            "discriminator": D.state_dict(),
            "generator_ema": G_ema.state_dict() if G_ema is not None else None,
            "classes": classes,
            "class_counts": [3] * n_classes,
            "kind": KIND[arch],
            "step": 6,
            "config": cfg.model_dump(by_alias=True),
            "mlflow_run_id": "0123abcd",
        },
        path,
    )
    return path


def torch_generator(path: Path, ema: bool = True):
    from pipeline.artifacts import generator_from

    return generator_from(torch.load(path, map_location="cpu", weights_only=True), ema)


def run_both(onnx_path: Path, G, n: int, n_classes: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """(onnxruntime output, torch output) for one seeded batch of n."""
    import onnxruntime as ort

    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, Z_DIM, generator=g)
    y = torch.randint(0, n_classes, (n,), generator=g) if n_classes else None
    feeds = {"z": z.numpy()} | ({"y": y.numpy()} if n_classes else {})
    got = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(["images"], feeds)[0]
    with torch.no_grad():
        ref = G(z, y).numpy()
    return got, ref


@pytest.mark.parametrize(
    "arch, n_classes, ema",
    [
        ("mlp", 0, True),
        ("dcgan", 0, True),
        ("resnet", 0, True),
        ("vae", 0, False),
        ("resnet", 3, True),
        ("mlp", 3, True),
        ("fastgan", 0, True),
        ("fastgan", 3, True),
    ],
)
def test_export_matches_torch(tmp_path, arch, n_classes, ema):
    """onnxruntime gives torch's images for batches of 1 and 7, from the EMA weights when the checkpoint has
    them (the raw ones otherwise; `--raw` is tested through the CLI)."""
    import onnx

    ckpt = make_checkpoint(tmp_path, arch, n_classes, ema=ema)
    out = tmp_path / "out" / "generator.onnx"
    figures = export_onnx(ckpt, out)
    assert out.is_file() and figures["path"] == str(out) and figures["bytes"] == out.stat().st_size
    assert 0 <= figures["max_abs_diff"] <= TOLERANCE
    weights = "ema" if ema else "raw"
    assert figures["weights"] == weights and figures["exporter"] == "torch.export" and figures["opset"] >= 18
    assert sorted(os.listdir(out.parent)) == ["generator.onnx"]  # no temporary file left behind

    G, G_raw = torch_generator(ckpt), torch_generator(ckpt, ema=False)
    size = 16 if arch in ("resnet", "fastgan") else 8
    for n in (1, 7):  # the export traced a batch of 2: the batch axis is dynamic
        got, ref = run_both(out, G, n, n_classes)
        assert got.shape == ref.shape == (n, 3, size, size)
        assert np.abs(got - ref).max() <= TOLERANCE
        assert np.abs(ref).max() > 100 * TOLERANCE  # images, not ~0 everywhere: the comparison means something
        assert got.min() >= -1 and got.max() <= 1
    if ema:  # the EMA generator is a different network here: its images are not the raw one's
        assert np.abs(got - run_both(out, G_raw, 7, n_classes)[1]).max() > 0.01

    model = onnx.load(str(out))
    inputs = {i.name: i.type.tensor_type for i in model.graph.input}
    assert list(inputs) == (["z", "y"] if n_classes else ["z"])
    assert inputs["z"].elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_value or d.dim_param for d in inputs["z"].shape.dim] == ["batch", Z_DIM]
    if n_classes:
        assert inputs["y"].elem_type == onnx.TensorProto.INT64
    assert [o.name for o in model.graph.output] == ["images"]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["z_dim"] == str(Z_DIM) and meta["n_classes"] == str(n_classes) and meta["arch"] == arch
    assert meta["image_size"] == str(size) and meta["step"] == "6" and meta["weights"] == weights
    assert json.loads(meta["classes"]) == [f"class{i}" for i in range(n_classes)]
    assert meta["mlflow_run_id"] == "0123abcd"


def test_old_opset_uses_the_torchscript_exporter(tmp_path):
    import onnx

    ckpt = make_checkpoint(tmp_path, "resnet", n_classes=3)
    out = tmp_path / "g17.onnx"
    figures = export_onnx(ckpt, out, opset=17)
    assert figures["opset"] == 17 and figures["exporter"] == "torchscript"
    assert [o.version for o in onnx.load(str(out)).opset_import if o.domain in ("", "ai.onnx")] == [17]
    got, ref = run_both(out, torch_generator(ckpt), 7, 3)
    assert np.abs(got - ref).max() <= TOLERANCE


def test_check_failure_leaves_no_onnx(tmp_path, monkeypatch):
    """A real check that fails (every difference is above a negative tolerance): nothing at --out, no temp file;
    an older model already there is left as it was."""
    ckpt = make_checkpoint(tmp_path, "dcgan")
    out, old = tmp_path / "out" / "generator.onnx", tmp_path / "out" / "old.onnx"
    old.parent.mkdir()
    old.write_bytes(b"an older model")
    monkeypatch.setattr("pipeline.export.TOLERANCE", -1.0)
    with pytest.raises(ArtganError, match=r"generator\.onnx: onnxruntime output differs from torch by .*not written"):
        export_onnx(ckpt, out)
    assert os.listdir(out.parent) == ["old.onnx"]
    with pytest.raises(ArtganError):
        export_onnx(ckpt, old, opset=17)  # the other exporter's output is checked too
    assert old.read_bytes() == b"an older model" and os.listdir(out.parent) == ["old.onnx"]


def test_not_a_checkpoint(tmp_path):
    for bad, why in [
        (tmp_path / "missing.pt", "no such checkpoint"),
        (tmp_path / "garbage.pt", "not an artgan checkpoint"),
        (tmp_path / "snapshots.pt", "not an artgan checkpoint"),
    ]:
        if bad.name == "garbage.pt":
            bad.write_bytes(b"\x00not a torch file" * 10)
        elif bad.name == "snapshots.pt":
            torch.save({"steps": [1], "generators": [{}]}, bad)
        with pytest.raises(ArtganError, match=why) as info:
            export_onnx(bad, tmp_path / "g.onnx")
        assert str(bad) in str(info.value) and "\n" not in str(info.value)
        assert not (tmp_path / "g.onnx").exists()


def _artgan(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([ARTGAN, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cli_exports_and_prints_figures(tmp_path):
    ckpt = make_checkpoint(tmp_path, "dcgan", n_classes=3)  # under tmp_path/models, the default --model
    res = _artgan("export", "--onnx", "--raw", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    line = res.stdout.strip().splitlines()[-1]
    assert line.startswith("export: ")
    figures = json.loads(line.removeprefix("export: "))
    out = tmp_path / "models" / "generator.onnx"
    assert figures["path"] == "models/generator.onnx" and out.is_file()
    assert figures["weights"] == "raw" and figures["max_abs_diff"] <= TOLERANCE
    assert figures["bytes"] == out.stat().st_size and figures["opset"] >= 18
    got, ref = run_both(out, torch_generator(ckpt, ema=False), 7, 3)
    assert np.abs(got - ref).max() <= TOLERANCE


def test_cli_errors_are_one_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from pipeline.cli import app

    res = _artgan("export", "--onnx", cwd=tmp_path)  # the default models/checkpoint.pt is missing
    assert res.returncode == 1
    assert res.stderr.splitlines() == [
        "error: models/checkpoint.pt: no such checkpoint; run `artgan train` (or `dvc repro`) first, or pass "
        "--model PATH (or an MLflow model URI such as models:/<name>@champion)"
    ]
    assert not (tmp_path / "models").exists()

    (tmp_path / "notes.txt").write_text("not a checkpoint")
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["export", "--onnx", "--model", "notes.txt", "--out", "g.onnx"])
    assert res.exit_code == 1
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: notes.txt: not an artgan checkpoint ("), res.stderr
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_cli_needs_a_format_and_names_a_model_uri_that_does_not_exist(tmp_path, monkeypatch):
    """Without --onnx: say which formats exist. A models:/ URI goes to the registry (an empty store here; the
    export of a registered model is in tests/test_registry.py)."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["export"])
    assert res.exit_code == 1 and res.stderr.strip() == "error: choose an export format: --onnx (the only one so far)"

    isolate_mlflow(monkeypatch, tmp_path)
    out = tmp_path / "g.onnx"
    res = runner.invoke(app, ["export", "--onnx", "--model", "models:/artgan@champion", "--out", str(out)])
    assert res.exit_code == 1 and not out.exists()
    assert res.stderr.strip().splitlines() == [
        f"error: registered model 'artgan' does not exist at {tracking_uri()}; "
        "nothing is registered yet (run `dvc repro`)"
    ]
