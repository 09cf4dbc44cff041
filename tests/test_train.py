"""train: deterministic on CPU for a seed, tracked in MLflow, every loss/arch/regulariser trains, EMA is an
exact moving average, a resume continues bitwise, a non-finite loss stops cleanly, clear input errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import isolate_mlflow, tiny_cfg

from pipeline.config import TrainCfg, parse
from pipeline.errors import ArtganError

N_IMAGES, SIZE = 64, 16


@pytest.fixture
def processed(tmp_path, monkeypatch, mlflow_dir) -> Path:
    """A tiny images.npy where preprocess would put it (no Inception needed)."""
    isolate_mlflow(monkeypatch, tmp_path, mlflow_dir)
    d = tmp_path / "data" / "processed"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.save(d / "images.npy", rng.integers(0, 256, (N_IMAGES, SIZE, SIZE, 3), dtype=np.uint8))
    return d


@pytest.fixture(autouse=True)
def _restore_torch_globals():
    # train switches on deterministic algorithms for the process; leave other tests as they were
    before = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    yield
    torch.use_deterministic_algorithms(before)
    torch.set_num_threads(threads)


def train(tmp_path: Path, name: str, **overrides) -> tuple[dict, Path, Path]:
    from pipeline.stages import train as stage

    train_over = {
        "out_dir": str(tmp_path / name / "models"),
        "checkpoint_dir": str(tmp_path / name / "ckpt"),
        **overrides.pop("train", {}),
    }
    cfg = parse(tiny_cfg(tmp_path, train=train_over, reports_dir=str(tmp_path / name / "reports"), **overrides))
    figures = stage.run(cfg)
    return figures, Path(cfg.train.out_dir), Path(cfg.reports_dir)


def mlflow_history(run_id: str, key: str) -> list:
    import mlflow

    return mlflow.MlflowClient().get_metric_history(run_id, key)


def load_ckpt(out_dir: Path) -> dict:
    return torch.load(out_dir / "checkpoint.pt", map_location="cpu", weights_only=True)


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_training_is_bitwise_reproducible_and_seeded(processed, tmp_path):
    _, out1, _ = train(tmp_path, "a")
    _, out2, _ = train(tmp_path, "b")
    _, out3, _ = train(tmp_path, "c", train={"seed": 1})
    c1, c2, c3 = load_ckpt(out1), load_ckpt(out2), load_ckpt(out3)
    assert same_weights(c1["generator"], c2["generator"])
    assert same_weights(c1["discriminator"], c2["discriminator"])
    assert not same_weights(c1["generator"], c3["generator"])
    assert c1["step"] == 6
    # training moved the weights away from the seed's initialisation
    from pipeline.models import build

    torch.manual_seed(0)
    g0, _ = build("dcgan", SIZE, 16, 8, 8)
    assert not same_weights(g0.state_dict(), c1["generator"])


def test_training_is_tracked_in_mlflow_and_writes_curves(processed, tmp_path):
    from pipeline.tracking import run_data

    figures, out, reports = train(tmp_path, "run", train={"loss": "hinge"})
    run_id = json.loads((out / "mlflow_run.json").read_text())["run_id"]
    assert figures["run_id"] == run_id
    assert load_ckpt(out)["mlflow_run_id"] == run_id

    data = run_data(run_id)
    assert data["status"] == "FINISHED"
    assert data["params"]["train.loss"] == "hinge"
    assert data["params"]["validate.min_images"] == "10"
    assert data["params"]["data.image_size"] == str(SIZE)
    for key in ("loss_d", "loss_g", "d_real", "d_fake", "grad_norm_d", "grad_norm_g", "lr_g", "lr_d", "img_per_s"):
        assert key in data["metrics"] and math.isfinite(data["metrics"][key]), key
    assert data["metrics"]["lr_g"] == TrainCfg().lr_g and data["metrics"]["img_per_s"] > 0
    history = mlflow_history(run_id, "grad_norm_d")
    assert [m.step for m in history] == [2, 4, 6] and all(m.value > 0 for m in history)  # per logged step
    assert data["metrics"]["loss_d"] == pytest.approx(figures["loss_d"])
    assert data["tags"].get("git_commit")
    assert data["tags"]["stage"] == "train"

    with open(reports / "train_curves.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {
        "step",
        "loss_d",
        "loss_g",
        "d_real",
        "d_fake",
        "grad_norm_d",
        "grad_norm_g",
        "lr_g",
        "lr_d",
        "img_per_s",
    } <= set(rows[0])
    assert float(rows[0]["lr_g"]) == TrainCfg().lr_g and float(rows[0]["grad_norm_d"]) > 0
    assert [int(r["step"]) for r in rows] == [2, 4, 6]  # log_every 2 over 6 steps
    assert all(math.isfinite(float(r["loss_d"])) and math.isfinite(float(r["loss_g"])) for r in rows)
    assert float(rows[-1]["loss_d"]) == pytest.approx(figures["loss_d"])


@pytest.mark.parametrize("loss", ["bce", "ns", "wgan", "wgan-gp", "lsgan", "hinge"])
def test_every_loss_trains_to_a_finite_loss(processed, tmp_path, loss):
    figures, out, reports = train(tmp_path, loss, train={"loss": loss, "steps": 3, "log_every": 1, "sample_every": 3})
    assert figures["steps"] == 3
    assert math.isfinite(figures["loss_d"]) and math.isfinite(figures["loss_g"])
    ckpt = load_ckpt(out)
    assert all(torch.isfinite(v).all() for v in ckpt["generator"].values() if v.is_floating_point())
    with open(reports / "train_curves.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    loss_d, loss_g = [float(r["loss_d"]) for r in rows], [float(r["loss_g"]) for r in rows]
    # what tells the objectives apart in the curves and the weights
    if loss == "bce":  # G minimises log(1 - D(G(z))) < 0
        assert all(v < 0 for v in loss_g)
    if loss in ("bce", "ns"):  # -[log D(x) + log(1 - D(G(z)))] >= 0, and -log D(G(z)) > 0 for ns
        assert all(v > 0 for v in loss_d) and (loss == "bce" or all(v > 0 for v in loss_g))
    if loss == "wgan":  # every weight of the critic clipped to [-c, c] after its step
        c = 0.01
        weights = [v for k, v in ckpt["discriminator"].items() if "running" not in k and "num_batches" not in k]
        assert max(v.abs().max().item() for v in weights) <= c
    if loss == "wgan-gp":
        assert all(float(r["gp"]) > 0 for r in rows)
    else:
        assert "gp" not in rows[0]
    if loss in ("lsgan", "hinge"):
        assert all(v >= 0 for v in loss_d)


def test_checkpoint_reloads_as_a_generator(processed, tmp_path):
    from pipeline.artifacts import load_generator
    from pipeline.imaging import to_uint8

    _, out, _ = train(tmp_path, "g", train={"steps": 2})
    cfg = parse(tiny_cfg(tmp_path, train={"out_dir": str(out)}))
    G, z_dim, n_classes, _ = load_generator(cfg)
    assert z_dim == 16 and n_classes == 0 and not G.training
    with torch.no_grad():
        imgs = to_uint8(G(torch.randn(3, z_dim)))
    assert imgs.shape == (3, SIZE, SIZE, 3) and imgs.dtype == torch.uint8


def test_missing_processed_data_says_to_run_preprocess(tmp_path, monkeypatch, mlflow_dir):
    from pipeline.stages import train as stage

    isolate_mlflow(monkeypatch, tmp_path, mlflow_dir)
    cfg = parse(tiny_cfg(tmp_path, data={"processed_dir": str(tmp_path / "nowhere")}))
    with pytest.raises(ArtganError, match="artgan preprocess"):
        stage.run(cfg)
    assert not (tmp_path / "models" / "checkpoint.pt").exists()


def test_image_size_mismatch_says_to_rerun_preprocess(processed, tmp_path):
    from pipeline.stages import train as stage

    cfg = parse(tiny_cfg(tmp_path, data={"image_size": 32}))
    with pytest.raises(ArtganError, match="artgan preprocess"):
        stage.run(cfg)


@pytest.mark.parametrize(
    "array, needle",
    [
        (np.random.default_rng(0).random((N_IMAGES, SIZE, SIZE, 3)), "float64 images of shape 64×16×16×3, not uint8"),
        (np.zeros((N_IMAGES, SIZE, SIZE, 3), np.int16), "int16 images"),
        (np.zeros((N_IMAGES, 3, SIZE, SIZE), np.uint8), "shape 64×3×16×16, not N×S×S×3"),
        (np.zeros((N_IMAGES, SIZE, SIZE), np.uint8), "shape 64×16×16, not N×S×S×3"),
        (np.zeros((0, SIZE, SIZE, 3), np.uint8), "shape 0×16×16×3"),
    ],
)
def test_an_images_npy_that_preprocess_did_not_write_is_one_line_naming_it(processed, tmp_path, array, needle):
    """A hand-made float array in [0, 1] would train on near-black images: dtype and shape are checked at load."""
    from pipeline.stages import train as stage

    np.save(processed / "images.npy", array)
    cfg = parse(tiny_cfg(tmp_path))
    with pytest.raises(ArtganError, match=rf"^{processed / 'images.npy'}: ") as err:
        stage.run(cfg)
    msg = str(err.value)
    assert needle in msg and "re-run `artgan preprocess`" in msg and "\n" not in msg
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("label", ["", "label"])
def test_a_truncated_processed_manifest_is_one_line_naming_it_and_preprocess(processed, tmp_path, label):
    import pandas as pd

    from pipeline.stages import train as stage

    manifest = processed / "manifest.parquet"
    pd.DataFrame({"path": [f"{i}.png" for i in range(N_IMAGES)], "label": ["a", "b"] * (N_IMAGES // 2)}).to_parquet(
        manifest
    )
    manifest.write_bytes(manifest.read_bytes()[:-40])  # cut off: the parquet footer is gone
    cfg = parse(tiny_cfg(tmp_path, data={"label": label}))
    with pytest.raises(
        ArtganError,
        match=rf"^{manifest}: unreadable \(\w+: .+\); re-run `artgan preprocess` "
        r"\(or `dvc repro`\)$",
    ):
        stage.run(cfg)
    assert not (tmp_path / "models").exists()


def test_batch_larger_than_the_dataset_is_a_clear_error(processed, tmp_path):
    from pipeline.stages import train as stage

    cfg = parse(tiny_cfg(tmp_path, train={"batch_size": N_IMAGES + 1}))
    with pytest.raises(ArtganError, match="train.batch_size"):
        stage.run(cfg)


def test_run_data_records_system_metrics_and_sample_grids(processed, tmp_path, monkeypatch):
    import mlflow

    from pipeline.tracking import run_data

    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.1")  # default 10 s: longer than this run
    figures, _, _ = train(tmp_path, "imgs", train={"steps": 60, "sample_every": 20, "log_every": 20})
    client = mlflow.MlflowClient()
    files = [f.path for f in client.list_artifacts(figures["run_id"], "images")]
    # MLflow image steps: images/samples+step+<step>+timestamp+<ms>+<uuid>.png (and a compressed .webp twin)
    steps = {int(f.split("+step+")[1].split("+")[0]) for f in files if f.endswith(".png") and "samples" in f}
    assert steps == {20, 40, 60}
    data = run_data(figures["run_id"])
    assert data_tags(data)["world_size"] == "1"
    assert any(k.startswith("system/") for k in client.get_run(figures["run_id"]).data.metrics)


def data_tags(data: dict) -> dict:
    return data["tags"]


@pytest.mark.parametrize("arch", ["mlp", "dcgan", "resnet", "fastgan", "vae"])
def test_every_architecture_trains_and_reloads(processed, tmp_path, arch):
    from pipeline.artifacts import load_generator

    size = SIZE if arch != "resnet" else 32
    if size != SIZE:
        d = tmp_path / "data" / "processed"
        np.save(d / "images.npy", np.random.default_rng(1).integers(0, 256, (N_IMAGES, size, size, 3), dtype=np.uint8))
    figures, out, reports = train(
        tmp_path, arch, model={"arch": arch}, data={"image_size": size}, train={"steps": 3, "log_every": 1}
    )
    assert figures["steps"] == 3
    cfg = parse(tiny_cfg(tmp_path, model={"arch": arch}, data={"image_size": size}, train={"out_dir": str(out)}))
    G, z_dim, _, _ = load_generator(cfg)
    with torch.no_grad():
        x = G(torch.randn(2, z_dim))
    assert x.shape == (2, 3, size, size) and torch.isfinite(x).all()
    with open(reports / "train_curves.csv", newline="") as f:
        header = next(csv.reader(f))
    assert ({"loss", "rec", "kl"} if arch == "vae" else {"loss_d", "loss_g"}) <= set(header)


def test_the_vae_step_minimises_the_negative_elbo_computed_by_hand(processed, tmp_path):
    """-ELBO = Σ squared error per image + β·KL(N(μ, σ²) || N(0, I)), averaged over the batch; and its img/s
    counts one batch per step (n_critic is a GAN setting)."""
    from pipeline.training.dist import World
    from pipeline.training.loop import Data, Trainer

    images = torch.from_numpy(np.load(processed / "images.npy")).permute(0, 3, 1, 2).contiguous()
    beta = 0.25
    cfg = parse(tiny_cfg(tmp_path, model={"arch": "vae"}, train={"vae_beta": beta, "n_critic": 3}))
    trainer = Trainer(cfg, Data(images=images, labels=None, n_classes=0), World(), torch.device("cpu"))
    assert trainer.images_per_step == cfg.train.batch_size
    seen = {}
    trainer.D.register_forward_hook(
        lambda m, i, o: seen.update(x=i[0].detach(), mu=o[0].detach(), logvar=o[1].detach()) and None
    )
    trainer.G.register_forward_hook(lambda m, i, o: seen.update(z=i[0].detach(), recon=o.detach()) and None)
    out = trainer.vae_step(1)

    x, recon = seen["x"].double(), seen["recon"].double()
    mu, logvar, z = seen["mu"].double(), seen["logvar"].double(), seen["z"].double()
    n = x.shape[0]
    rec = sum(float(((recon[i] - x[i]) ** 2).sum()) for i in range(n)) / n
    kl = (
        sum(
            0.5 * sum(m * m + math.exp(lv) - 1 - lv for m, lv in zip(mu[i].tolist(), logvar[i].tolist()))
            for i in range(n)
        )
        / n
    )
    assert out["rec"].item() == pytest.approx(rec, rel=1e-5)
    assert out["kl"].item() == pytest.approx(kl, rel=1e-5)
    assert out["loss"].item() == pytest.approx(rec + beta * kl, rel=1e-5)
    eps = (z - mu) / torch.exp(0.5 * logvar)  # the reparameterisation: z = μ + σ·ε with ε drawn apart from μ, σ
    assert x.min() >= -1 and x.max() <= 1 and eps.abs().max() < 6 and abs(eps.std().item() - 1) < 0.2


def test_images_per_step_of_a_gan_counts_every_critic_batch(processed, tmp_path):
    from pipeline.training.dist import World
    from pipeline.training.loop import Data, Trainer

    images = torch.from_numpy(np.load(processed / "images.npy")).permute(0, 3, 1, 2).contiguous()
    cfg = parse(tiny_cfg(tmp_path, train={"n_critic": 3}))
    trainer = Trainer(cfg, Data(images=images, labels=None, n_classes=0), World(), torch.device("cpu"))
    assert trainer.images_per_step == 3 * cfg.train.batch_size


def test_regularisers_and_augmentation_train_and_are_logged(processed, tmp_path):
    figures, out, reports = train(
        tmp_path,
        "reg",
        model={"spectral_norm": True},
        train={
            "loss": "hinge",
            "r1_gamma": 1.0,
            "r1_every": 2,
            "augment": ["color", "translation", "cutout"],
            "augment_p": 0.5,
            "n_critic": 2,
            "lr_g": 2e-4,
            "lr_d": 4e-4,
            "steps": 4,
            "log_every": 1,
        },
    )
    with open(reports / "train_curves.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    r1 = [r.get("r1") for r in rows]
    assert r1[1] and float(r1[1]) > 0 and not r1[0]  # lazy: only on steps 2 and 4
    assert float(rows[0]["lr_d"]) == 4e-4 and float(rows[0]["lr_g"]) == 2e-4  # TTUR: two learning rates
    assert figures["img_per_s"] > 0
    (latest,) = (tmp_path / "reg" / "ckpt").glob("*/latest.pt")
    assert torch.load(latest, weights_only=False)["cursor"] == 4 * 2 * 8  # n_critic real batches per step
    d_keys = load_ckpt(out)["discriminator"].keys()
    assert any("parametrizations" in k or k.endswith("weight_orig") for k in d_keys)  # spectral norm in the trained D


def test_ema_generator_is_the_exact_moving_average(processed, tmp_path):
    from pipeline.models import build

    _, out, _ = train(tmp_path, "ema", train={"steps": 1, "ema_decay": 0.75})
    ck = load_ckpt(out)
    torch.manual_seed(0)
    g0, _ = build("dcgan", SIZE, 16, 8, 8)
    init = g0.state_dict()
    for k, v in ck["generator_ema"].items():
        if "running" in k or "num_batches" in k:
            assert torch.equal(v, ck["generator"][k])  # buffers are copied
        else:
            expect = init[k].lerp(ck["generator"][k], 1 - min(0.75, 2 / 11))  # warm-up decay at step 1
            assert torch.allclose(v, expect, atol=1e-7), k
    assert not same_weights(ck["generator_ema"], ck["generator"])


@pytest.mark.parametrize("arch", ["dcgan", "fastgan"])
def test_conditional_training_on_a_label_column(processed, tmp_path, arch):
    import pandas as pd

    from pipeline.artifacts import load_generator

    labels = ["cat" if i % 3 else "dog" for i in range(N_IMAGES)]
    pd.DataFrame({"path": [f"{i}.png" for i in range(N_IMAGES)], "style": labels}).to_parquet(
        processed / "manifest.parquet"
    )
    model = {"arch": arch}
    figures, out, _ = train(tmp_path, "cond", model=model, data={"label": "style"}, train={"steps": 2})
    ck = load_ckpt(out)
    assert ck["classes"] == ["cat", "dog"] and ck["class_counts"] == [labels.count("cat"), labels.count("dog")]
    cfg = parse(tiny_cfg(tmp_path, model=model, data={"label": "style"}, train={"out_dir": str(out)}))
    G, z_dim, n_classes, _ = load_generator(cfg)
    z = torch.randn(2, z_dim)
    with torch.no_grad():
        a, b = G(z, torch.tensor([0, 0])), G(z, torch.tensor([1, 1]))
    assert n_classes == 2 and not torch.equal(a, b)


def test_unknown_label_column_is_a_clear_error(processed, tmp_path):
    import pandas as pd

    from pipeline.stages import train as stage

    pd.DataFrame({"path": [f"{i}.png" for i in range(N_IMAGES)]}).to_parquet(processed / "manifest.parquet")
    cfg = parse(tiny_cfg(tmp_path, data={"label": "style"}))
    with pytest.raises(ArtganError, match="data.label: column 'style'"):
        stage.run(cfg)


@pytest.mark.slow
def test_a_changed_parameter_trains_afresh_beside_the_first_configurations_checkpoint(processed, tmp_path):
    common = {"checkpoint_dir": str(tmp_path / "shared_ckpt"), "steps": 4, "checkpoint_every": 2}
    first, _, _ = train(tmp_path, "ns", train=common)
    second, _, reports = train(tmp_path, "hinge", train={**common, "loss": "hinge"})
    assert second["checkpoint_key"] != first["checkpoint_key"] and second["run_id"] != first["run_id"]
    latest = (tmp_path / "shared_ckpt").glob("*/latest.pt")
    folders = {p.parent.name: torch.load(p, weights_only=False)["step"] for p in latest}
    assert folders == {first["checkpoint_key"]: 4, second["checkpoint_key"]: 4}  # the first one's is kept as it was
    with open(reports / "train_curves.csv", newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [2, 4]  # from step 1, not resumed


def test_lr_decay_start_lowers_both_rates_linearly_to_the_last_step_and_keys_the_run_by_its_steps(processed, tmp_path):
    common = {
        "checkpoint_dir": str(tmp_path / "shared_ckpt"),
        "checkpoint_every": 2,
        "log_every": 1,
        "lr_decay_start": 0.5,
    }
    rates = {"lr_g": 2e-3, "lr_d": 1e-3}
    first, _, reports = train(tmp_path, "decay", train={**common, **rates, "steps": 8})
    with open(reports / "train_curves.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # constant for the first half (4 of 8 steps), then (8 - step + 1) / 4 of the rate: 1, 0.75, 0.5, 0.25
    scale = [1, 1, 1, 1, 1, 0.75, 0.5, 0.25]
    assert [float(r["lr_g"]) for r in rows] == pytest.approx([2e-3 * k for k in scale], rel=1e-12)
    assert [float(r["lr_d"]) for r in rows] == pytest.approx([1e-3 * k for k in scale], rel=1e-12)
    # 12 steps decay on another schedule: that run starts afresh instead of resuming the 8-step run
    longer, _, reports = train(tmp_path, "decay", train={**common, **rates, "steps": 12})
    assert longer["checkpoint_key"] != first["checkpoint_key"] and longer["run_id"] != first["run_id"]
    with open(reports / "train_curves.csv", newline="") as f:
        assert int(next(csv.DictReader(f))["step"]) == 1


def test_topk_trains_g_on_the_k_best_fakes_with_k_falling_each_epoch_and_logs_it(processed, tmp_path):
    from pipeline.losses import topk_count

    figures, _, reports = train(tmp_path, "topk", train={"topk": 0.5, "steps": 160, "log_every": 1})
    with open(reports / "train_curves.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    batch = 8  # tiny_cfg's
    want = [topk_count(batch, 0.5, (step - 1) * batch // N_IMAGES) for step in range(1, 161)]
    logged = [int(float(r["topk"])) if r.get("topk") else batch for r in rows]
    assert logged == want and want[-1] < want[0] == batch  # blank while k is still the whole batch
    assert math.isfinite(figures["loss_g"])


@pytest.mark.parametrize("arch", ["dcgan", "vae"])
def test_xflip_shows_each_drawn_real_image_or_its_exact_mirror_about_half_of_each(processed, tmp_path, arch):
    from pipeline.training.dist import World
    from pipeline.training.loop import Data, Trainer

    images = torch.from_numpy(np.load(processed / "images.npy")).permute(0, 3, 1, 2).contiguous()
    cfg = parse(tiny_cfg(tmp_path, model={"arch": arch}, train={"xflip": True, "batch_size": 32}))
    tr = Trainer(cfg, Data(images=images, labels=None, n_classes=0), World(), torch.device("cpu"))
    d = tr._draw_gan()["critic"][0] if arch == "dcgan" else tr._draw_vae()
    real, _ = tr._real(d["idx"], d["flip"])
    stored = images[d["idx"]].float() / 127.5 - 1
    mirrored = [bool(f) for f in d["flip"]]
    for row, flip in zip(range(32), mirrored):
        assert torch.equal(real[row], stored[row].flip(-1) if flip else stored[row]), row
    assert 8 <= sum(mirrored) <= 24  # Bernoulli(1/2) over 32 images (p of missing this range: 0.7%)
    assert not torch.equal(stored, stored.flip(-1))  # the fixture's images are not symmetric


def test_lr_decay_is_refused_with_captured_cuda_graphs(processed, tmp_path, monkeypatch):
    """A captured step replays the rate it was captured with: a decay would silently not happen."""
    from pipeline.training import loop
    from pipeline.training.dist import World
    from pipeline.training.graphs import EagerRunner

    class Captured(EagerRunner):  # stands in for what train.cuda_graphs gives on one CUDA process
        capture = True

    monkeypatch.setattr(loop, "runner", lambda cuda_graphs, device, *a: Captured(device))
    images = torch.from_numpy(np.load(processed / "images.npy")).permute(0, 3, 1, 2).contiguous()
    data = loop.Data(images=images, labels=None, n_classes=0)
    cfg = parse(tiny_cfg(tmp_path, train={"lr_decay_start": 0.9}))
    with pytest.raises(ArtganError, match=r"train.lr_decay_start .*set train.cuda_graphs to false"):
        loop.Trainer(cfg, data, World(), torch.device("cpu"))
    loop.Trainer(parse(tiny_cfg(tmp_path)), data, World(), torch.device("cpu"))  # a constant rate is fine


def test_a_checkpoint_restores_every_rng_state(tmp_path):
    import random

    from pipeline.training import checkpoint

    def draws():
        return random.random(), float(np.random.rand()), torch.rand(1).item()

    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    checkpoint.save(tmp_path / "latest.pt", {"step": 7})
    expected = draws()
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    state = checkpoint.load(tmp_path / "latest.pt")
    assert state["step"] == 7 and {"python", "numpy", "torch"} <= state["rng"].keys()
    checkpoint.set_rng_states(state["rng"])
    assert draws() == expected


def test_a_checkpoint_holds_everything_the_next_step_depends_on(processed, tmp_path):
    train(tmp_path, "ck", train={"steps": 3, "checkpoint_every": 3, "augment": ["translation"]})
    (latest,) = (tmp_path / "ck" / "ckpt").glob("*/latest.pt")
    ck = torch.load(latest, weights_only=False)
    assert {"G", "D", "G_ema", "opt_g", "opt_d", "step", "gen", "order", "cursor", "rng", "run_id"} <= ck.keys()
    assert ck["step"] == 3 and ck["cursor"] == 3 * 8 and ck["G_ema"] is not None
    # Adam's moments for every parameter
    assert all(len(o["state"]) == len(o["param_groups"][0]["params"]) for o in (ck["opt_g"], ck["opt_d"]))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["dcgan", "fastgan"])
def test_raising_steps_resumes_and_ends_bitwise_where_one_long_run_ends(processed, tmp_path, arch):
    model = {"arch": arch}
    _, out_long, _ = train(
        tmp_path,
        "long",
        model=model,
        train={"steps": 8, "checkpoint_every": 4, "ema_decay": 0.9, "augment": ["translation"]},
    )
    common = {
        "checkpoint_dir": str(tmp_path / "shared_ckpt"),
        "checkpoint_every": 4,
        "ema_decay": 0.9,
        "augment": ["translation"],
    }
    first, _, _ = train(tmp_path, "part", model=model, train={"steps": 4, **common})
    second, out_part, reports = train(tmp_path, "part", model=model, train={"steps": 8, **common})
    a, b = load_ckpt(out_long), load_ckpt(out_part)
    for key in ("generator", "discriminator", "generator_ema"):
        assert same_weights(a[key], b[key]), key
    assert second["run_id"] == first["run_id"]  # the same MLflow run continues
    with open(reports / "train_curves.csv", newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [2, 4, 6, 8]  # history kept across the resume
    # generator snapshots (FID curve, progress strip) survive the resume too, and match the long run's
    snaps_long = torch.load(out_long / "snapshots.pt", weights_only=True)
    snaps_part = torch.load(out_part / "snapshots.pt", weights_only=True)
    assert snaps_part["steps"] == snaps_long["steps"] == [8]  # every 500 steps and the last: here only the last
    assert same_weights(snaps_part["generators"][-1], b["generator_ema"])


@pytest.mark.slow
def test_lowering_steps_keeps_the_longer_runs_checkpoint_and_raising_them_again_resumes_from_it(
    processed, tmp_path, capsys
):
    common = {"checkpoint_dir": str(tmp_path / "ckpt"), "checkpoint_every": 2}
    train(tmp_path, "run", train={"steps": 6, **common})
    (folder,) = (tmp_path / "ckpt").iterdir()
    long_state = (folder / "latest.pt").read_bytes()
    train(tmp_path, "run", train={"steps": 4, **common})  # starts afresh: its checkpoints must not replace step 6
    assert (folder / "kept_step_0000006.pt").read_bytes() == long_state
    assert torch.load(folder / "latest.pt", weights_only=False)["step"] == 4
    out = train(tmp_path, "run", train={"steps": 5, **common})[1]  # 4 <= 5 < 6: resumes from latest.pt
    assert load_ckpt(out)["step"] == 5
    capsys.readouterr()
    summary, out, _ = train(tmp_path, "run", train={"steps": 6, **common})  # the kept step-6 run: nothing to train
    assert f"resuming from step 6 of {folder / 'kept_step_0000006.pt'}" in capsys.readouterr().out
    kept = torch.load(folder / "kept_step_0000006.pt", weights_only=False)
    assert summary["steps"] == 6 and summary["seconds"] == round(kept["seconds"], 1)  # no step was trained again
    assert same_weights(load_ckpt(out)["generator"], kept["G"])


@pytest.mark.slow
def test_snapshots_every_k_steps_are_kept_across_a_resume(processed, tmp_path):
    common = {"checkpoint_dir": str(tmp_path / "ckpt"), "checkpoint_every": 2, "snapshot_every": 2}
    train(tmp_path, "run", train={"steps": 5, **common})
    _, out, _ = train(tmp_path, "run", train={"steps": 8, **common})  # resumes from step 5
    snaps = torch.load(out / "snapshots.pt", weights_only=True)
    assert snaps["steps"] == [2, 4, 6, 8]  # step 5 was the end of the first run, not a multiple of 2
    assert same_weights(snaps["generators"][-1], load_ckpt(out)["generator_ema"])
    assert not same_weights(snaps["generators"][0], snaps["generators"][-1])


def test_a_non_finite_value_stops_keeps_the_last_good_checkpoint_and_fails_the_run(processed, tmp_path):
    from pipeline.stages import train as stage
    from pipeline.tracking import run_data

    # at 1e8, D's running_var overflows at step 3, before any loss does: that state must not be the one kept
    cfg = parse(
        tiny_cfg(
            tmp_path,
            train={
                "loss": "wgan",
                "clip_value": 1e30,
                "lr_d": 1e8,
                "lr_g": 1e8,
                "steps": 50,
                "checkpoint_every": 1,
                "log_every": 1,
                "divergence_factor": 0,  # the NaN itself, not the divergence before it
                "checkpoint_dir": str(tmp_path / "nan_ckpt"),
            },
        )
    )
    with pytest.raises(ArtganError, match=r"non-finite (loss|state) at step (\d+).*last good checkpoint") as err:
        stage.run(cfg)
    bad_step = int(__import__("re").search(r"step (\d+)", str(err.value)).group(1))
    ckpts = list((tmp_path / "nan_ckpt").glob("*/latest.pt"))
    assert len(ckpts) == 1
    ck = torch.load(ckpts[0], map_location="cpu", weights_only=False)
    assert ck["step"] == bad_step - 1
    assert finite_everywhere(ck)  # buffers (batch norm's running_var) and optimiser moments too
    assert run_data(ck["run_id"])["status"] == "FAILED"
    assert not (Path(cfg.train.out_dir) / "checkpoint.pt").exists()


def finite_everywhere(state) -> bool:
    from pipeline.training.checkpoint import non_finite

    return non_finite(state) == []


def test_a_checkpoint_with_a_non_finite_tensor_never_replaces_the_last_good_one(tmp_path):
    from pipeline.training import checkpoint

    path = tmp_path / "latest.pt"
    good = {"step": 3, "D": {"bn.running_var": torch.ones(4)}, "opt_d": {"state": {0: {"exp_avg_sq": torch.ones(2)}}}}
    checkpoint.save(path, good)
    before = path.read_bytes()
    for where in ("buffer", "optimiser"):
        bad = {
            "step": 4,
            "D": {"bn.running_var": torch.ones(4)},
            "opt_d": {"state": {0: {"exp_avg_sq": torch.ones(2)}}},
        }
        if where == "buffer":
            bad["D"]["bn.running_var"][1] = float("inf")
        else:
            bad["opt_d"]["state"][0]["exp_avg_sq"][0] = float("nan")
        name = "D.bn.running_var" if where == "buffer" else "opt_d.state.0.exp_avg_sq"
        with pytest.raises(
            ArtganError,
            match=rf"latest\.pt: not written, non-finite values in {name}; "
            "the previous checkpoint is kept",
        ):
            checkpoint.save(path, bad)
        assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"]  # no temporary left


def test_an_infinite_batch_norm_buffer_stops_training_before_it_reaches_a_checkpoint(processed, tmp_path, monkeypatch):
    """Losses can stay finite while D's running_var overflows (training mode normalises by the batch's own
    statistics): the state is checked in every tensor before it is checkpointed."""
    from pipeline.stages import train as stage
    from pipeline.tracking import run_data
    from pipeline.training.loop import Trainer

    update_ema = Trainer.update_ema

    def poison_at_step_4(self, step):
        update_ema(self, step)
        if step == 4:
            bn = next(m for m in self.D.modules() if isinstance(m, torch.nn.BatchNorm2d))
            bn.running_var[0] = float("inf")

    monkeypatch.setattr(Trainer, "update_ema", poison_at_step_4)
    cfg = parse(tiny_cfg(tmp_path, train={"steps": 6, "checkpoint_every": 1, "checkpoint_dir": str(tmp_path / "ck")}))
    with pytest.raises(
        ArtganError,
        match=r"^train: non-finite state at step 4 \(in D\.[\w.]*running_var\); "
        r"the last good checkpoint \(step 3\) is kept",
    ) as err:
        stage.run(cfg)
    assert "\n" not in str(err.value)
    (latest,) = (tmp_path / "ck").glob("*/latest.pt")
    ck = torch.load(latest, map_location="cpu", weights_only=False)
    assert ck["step"] == 3 and finite_everywhere(ck)
    assert run_data(ck["run_id"])["status"] == "FAILED"
    assert not (Path(cfg.train.out_dir) / "checkpoint.pt").exists()


def curve(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        # a term logged on some steps only (R1's, every train.r1_every steps) leaves the other rows' cells empty
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def test_the_divergence_watch_never_trips_on_the_default_params_curve():
    from helpers import REPO

    from pipeline.config import TrainCfg
    from pipeline.training.loop import first_divergence

    rows = curve(REPO / "reports" / "train_curves.csv")  # the default params' 11,700 steps
    assert (
        len(rows) >= 1000 and {"loss_d", "loss_g", "grad_norm_d", "grad_norm_g", "d_real", "d_fake"} <= rows[0].keys()
    )
    t = TrainCfg()
    assert first_divergence(rows, t.divergence_factor, t.saturation_steps) is None
    assert first_divergence(rows, 100, 50) is None  # with two orders of magnitude to spare


@pytest.mark.parametrize(
    "key, param",
    [("loss_d", "train.lr_d"), ("grad_norm_d", "train.lr_d"), ("loss_g", "train.lr_g"), ("grad_norm_g", "train.lr_g")],
)
def test_the_divergence_watch_trips_on_an_exploding_series_and_names_the_likely_learning_rate(key, param):
    from helpers import REPO

    from pipeline.training.loop import first_divergence

    rows = curve(REPO / "reports" / "train_curves.csv")[:300]
    for i, row in enumerate(rows[100:], start=1):  # from step 101: ten times larger every ten steps
        row[key] *= 10 ** (i / 10)
    step, what, named = first_divergence(rows, 1e4, 0)
    assert 101 < step < 160 and what.startswith(f"{key}=") and "train.divergence_factor" in what
    assert named == param
    assert first_divergence(rows, 0, 0) is None  # 0 = off


def test_the_divergence_watch_trips_when_d_stays_saturated():
    from pipeline.training.loop import first_divergence

    rows = [{"step": i, "loss_d": 0.5, "loss_g": 2.0, "d_real": 0.8, "d_fake": 0.2} for i in range(1, 101)]
    rows += [{"step": i, "loss_d": 1e-3, "loss_g": 7.0, "d_real": 0.999, "d_fake": 1e-3} for i in range(101, 400)]
    step, what, param = first_divergence(rows, 1e4, 200)
    assert step == 300 and "D saturated" in what and "train.saturation_steps" in what and param == "train.lr_d"
    assert first_divergence(rows, 1e4, 0) is None
    assert first_divergence(rows, 1e4, 200, probabilities=False) is None  # a critic's raw outputs are not D(x)


@pytest.mark.parametrize("loss", ["ns", "hinge"])
def test_a_run_that_diverges_without_a_nan_stops_names_lr_d_and_fails_the_run(processed, tmp_path, loss):
    import mlflow

    from pipeline.stages import train as stage

    cfg = parse(
        tiny_cfg(tmp_path, train={"loss": loss, "lr_d": 1e6, "steps": 20, "checkpoint_dir": str(tmp_path / "ck")})
    )
    with pytest.raises(
        ArtganError,
        match=r"^train: diverging at step 1: weight_norm_d=.* \(train.divergence_factor\); "
        r"no checkpoint was written yet; lower train\.lr_d$",
    ):
        stage.run(cfg)
    (last,) = mlflow.search_runs(
        search_all_experiments=True, order_by=["attributes.start_time DESC"], max_results=1, output_format="list"
    )
    assert last.info.status == "FAILED" and last.data.params["train.lr_d"] == "1000000.0"
    assert not (Path(cfg.train.out_dir) / "checkpoint.pt").exists()


def test_a_divergence_keeps_the_last_good_checkpoint(processed, tmp_path):
    from pipeline.stages import train as stage
    from pipeline.tracking import run_data

    cfg = parse(
        tiny_cfg(
            tmp_path,
            train={
                "lr_d": 1.0,
                "divergence_factor": 20,
                "steps": 20,
                "checkpoint_every": 1,
                "checkpoint_dir": str(tmp_path / "ck"),
            },
        )
    )
    with pytest.raises(
        ArtganError,
        match=r"diverging at step (\d+): .*the last good checkpoint \(step (\d+)\) "
        r"is kept .*; lower train\.lr_d$",
    ) as err:
        stage.run(cfg)
    bad, kept = map(int, __import__("re").search(r"step (\d+).*step (\d+)", str(err.value)).groups())
    (latest,) = (tmp_path / "ck").glob("*/latest.pt")
    ck = torch.load(latest, map_location="cpu", weights_only=False)
    assert ck["step"] == kept == bad - 1
    assert run_data(ck["run_id"])["status"] == "FAILED"


@pytest.mark.slow
def test_gradient_penalty_or_d_batch_norm_false_trains_a_discriminator_without_batch_norm(processed, tmp_path):
    # the penalty is defined per sample; batch norm couples the samples (Gulrajani et al. 2017, section 4)
    _, out_gp, _ = train(tmp_path, "gp", train={"loss": "wgan-gp", "steps": 1})
    _, out_w, _ = train(tmp_path, "w", train={"loss": "wgan", "steps": 1})
    _, out_nobn, _ = train(tmp_path, "nobn", train={"steps": 1}, model={"d_batch_norm": False})
    assert not any("running_mean" in k for k in load_ckpt(out_gp)["discriminator"])
    assert any("running_mean" in k for k in load_ckpt(out_w)["discriminator"])
    assert not any("running_mean" in k for k in load_ckpt(out_nobn)["discriminator"])
    assert load_ckpt(out_nobn)["config"]["model"]["d_batch_norm"] is False  # kept with the weights it shaped


@pytest.mark.parametrize("loss", ["ns", "hinge"])
def test_d_real_and_d_fake_are_mean_probabilities_for_bce_ns_and_mean_critic_outputs_otherwise(
    processed, tmp_path, loss
):
    from pipeline.training.dist import World
    from pipeline.training.loop import Data, Trainer

    images = torch.from_numpy(np.load(processed / "images.npy")).permute(0, 3, 1, 2).contiguous()
    cfg = parse(tiny_cfg(tmp_path, train={"loss": loss}))
    trainer = Trainer(cfg, Data(images=images, labels=None, n_classes=0), World(), torch.device("cpu"))
    logits = []  # what D's last layer said in the D step: on the real batch, then on the fakes
    convs = [m for m in trainer.D.modules() if isinstance(m, torch.nn.Conv2d)]
    convs[-1].register_forward_hook(lambda m, i, o: logits.append(o.detach().flatten()) and None)
    out = trainer.gan_step(1)
    real, fake = logits[:2]
    d = torch.sigmoid if loss == "ns" else (lambda v: v)
    assert out["d_real"].item() == pytest.approx(d(real).mean().item(), rel=1e-6)
    assert out["d_fake"].item() == pytest.approx(d(fake).mean().item(), rel=1e-6)
    assert out["d_real"].item() != pytest.approx(d(fake).mean().item(), rel=1e-6)


@pytest.mark.slow
def test_bf16_autocast_on_cpu_when_asked_and_it_still_resumes_bitwise(processed, tmp_path):
    # train.amp: bf16 runs G and D under CPU autocast (oneDNN uses AMX / AVX512-BF16 where the CPU has them);
    # `auto` keeps the CPU in fp32. Weights and optimiser state stay fp32, and a resume is still bitwise.
    from pipeline.training.dist import World
    from pipeline.training.loop import Data, Trainer

    images = torch.from_numpy(np.load(processed / "images.npy")).permute(0, 3, 1, 2).contiguous()
    seen = {}
    for amp in ("auto", "bf16"):
        cfg = parse(tiny_cfg(tmp_path, train={"amp": amp, "augment": []}))
        trainer = Trainer(cfg, Data(images=images, labels=None, n_classes=0), World(), torch.device("cpu"))
        convs = [m for m in trainer.D.modules() if isinstance(m, torch.nn.Conv2d)]
        convs[-1].register_forward_hook(lambda m, i, o, amp=amp: seen.setdefault(amp, o.dtype) and None)
        out = trainer.gan_step(1)
        assert all(math.isfinite(v.item()) for v in out.values())
        assert {p.dtype for p in trainer.G.parameters()} == {torch.float32}
    assert seen == {"auto": torch.float32, "bf16": torch.bfloat16}

    common = {"amp": "bf16", "checkpoint_every": 4}
    _, out_long, _ = train(tmp_path, "long16", train={"steps": 8, **common})
    train(tmp_path, "part16", train={"steps": 4, "checkpoint_dir": str(tmp_path / "ckpt16"), **common})
    _, out_part, _ = train(tmp_path, "part16", train={"steps": 8, "checkpoint_dir": str(tmp_path / "ckpt16"), **common})
    _, out_fp32, _ = train(tmp_path, "fp32", train={"steps": 8, "checkpoint_every": 4})
    a, b, c = load_ckpt(out_long), load_ckpt(out_part), load_ckpt(out_fp32)
    for key in ("generator", "discriminator"):
        assert same_weights(a[key], b[key]), key
    assert not same_weights(a["generator"], c["generator"])  # bf16 really changed the arithmetic
