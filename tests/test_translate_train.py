"""Task translate's data and training: the pairing and the held-out split, the translators' shapes, the losses and
the history buffer against hand computations, and bitwise resume."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_cfg

from pipeline.config import parse
from pipeline.data import pairing
from pipeline.errors import ArtganError
from pipeline.models.translators import TRANSLATORS, DrawnDropout, UNet, draw_dropout, multiply
from pipeline.training import checkpoint, dist
from pipeline.translation.trainer import Domains, HistoryBuffer, TranslationTrainer, resolve_model


# ----------------------------------------------------------------------------------------- models
@pytest.mark.parametrize("model", ["pix2pix", "cyclegan"])
@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_translators_map_images_to_images_and_d_to_a_patch_map(model, size):
    torch.manual_seed(0)
    G, D = TRANSLATORS[model](size, 4, 4)
    x = torch.rand(2, 3, size, size) * 2 - 1
    y = G(x)
    assert y.shape == x.shape and y.abs().max() <= 1
    logits = D(torch.cat([x, y], 1) if model == "pix2pix" else y)
    assert logits.shape[:2] == (2, 1) and min(logits.shape[2:]) >= 2


@pytest.mark.parametrize("model", ["pix2pix", "cyclegan"])
def test_the_multiply_blend_keeps_the_inputs_ink_and_paper_and_colours_the_rest_with_the_layer(model):
    torch.manual_seed(0)
    G = TRANSLATORS[model](32, 4, 4, blend="multiply")[0].eval()  # eval: no dropout, one draw
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    x[:, :, :8] = -1  # black ink
    x[:, :, 8:16] = 1  # white paper
    with torch.no_grad():
        y, layer = G(x), G.net(x)  # the image, and the network's colour layer
    # in [0, 1] terms the image is input x layer, by hand
    assert torch.allclose((y + 1) / 2, (x + 1) / 2 * ((layer + 1) / 2), atol=1e-6)
    assert torch.equal(multiply(x, layer), y)
    assert torch.all(y[:, :, :8] == -1)  # ink stays black whatever the layer says
    assert torch.allclose(y[:, :, 8:16], layer[:, :, 8:16], atol=1e-6)  # paper takes the layer's colour
    assert y.abs().max() <= 1
    with pytest.raises(ValueError, match="unknown blend"):
        TRANSLATORS[model](32, 4, 4, blend="screen")


def test_a_size_that_is_not_a_power_of_two_is_refused():
    with pytest.raises(ValueError, match="power of two"):
        TRANSLATORS["pix2pix"](48, 4, 4)


# ----------------------------------------------------------------------------------------- pairing and split
class Tr:
    pairing, holdout, split_seed = "auto", 0.25, 0


def _frames(style_names, input_names):
    style = pd.DataFrame({"path": [f"images/{n}.png" for n in style_names], "sha256": [f"s{n}" for n in style_names]})
    inputs = pd.DataFrame(
        {"path": [f"inputs/images/{n}.jpg" for n in input_names], "sha256": [f"i{n}" for n in input_names]}
    )
    return style, inputs


def test_same_relative_names_pair_each_input_with_its_style_image():
    style, inputs = _frames(["a", "b", "c", "d"], ["d", "b", "a", "c"])
    plan = pairing.plan(style, inputs, Tr, "m")
    assert plan.paired and plan.unmatched == []
    for key, target in zip(plan.inputs["key"], plan.inputs["target"]):
        assert plan.style["key"][target] == key  # the suffix does not matter: a.jpg pairs with a.png


def test_unmatched_names_are_listed_and_left_out_of_the_pairs():
    style, inputs = _frames(["a", "b", "c", "x"], ["a", "b", "c", "y"])
    plan = pairing.plan(style, inputs, Tr, "m")
    assert plan.paired
    assert {(u["domain"], u["key"]) for u in plan.unmatched} == {("input", "images/y"), ("style", "images/x")}
    assert sorted(plan.inputs["key"]) == sorted(plan.style["key"]) == ["images/a", "images/b", "images/c"]


def test_sets_without_shared_names_are_unpaired_under_auto_and_an_error_under_paired():
    style, inputs = _frames(["a", "b"], ["c", "d"])
    plan = pairing.plan(style, inputs, Tr, "m")
    assert not plan.paired and (plan.inputs["target"] == -1).all() and (plan.style["split"] == "train").all()

    class Paired(Tr):
        pairing = "paired"

    with pytest.raises(ArtganError, match="translate.pairing"):
        pairing.plan(style, inputs, Paired, "m")


def test_the_held_out_split_is_fixed_by_content_and_seed_and_its_targets_are_held_out_too():
    names = [f"n{i:03d}" for i in range(400)]
    style, inputs = _frames(names, names)
    plan = pairing.plan(style, inputs, Tr, "m")
    held = set(plan.inputs.loc[plan.inputs["split"] == "holdout", "key"])
    assert 0.15 < len(held) / len(names) < 0.35  # holdout 0.25
    # reordered and grown, every file keeps its split
    more = [f"m{i:03d}" for i in range(100)]
    style2, inputs2 = _frames(more + names[::-1], names[::-1] + more)
    plan2 = pairing.plan(style2, inputs2, Tr, "m")
    held2 = set(plan2.inputs.loc[plan2.inputs["split"] == "holdout", "key"])
    assert held2 & set(f"images/{n}" for n in names) == held
    # a held-out input's target is held out: training sees neither
    targets = plan.inputs.loc[plan.inputs["split"] == "holdout", "target"]
    assert (plan.style["split"][targets] == "holdout").all()
    assert (plan.style["split"] == "holdout").sum() == len(held)

    class Seed1(Tr):
        split_seed = 1

    other = pairing.plan(style, inputs, Seed1, "m")
    assert set(other.inputs.loc[other.inputs["split"] == "holdout", "key"]) != held


# ----------------------------------------------------------------------------------------- training
SIZE, N = 16, 8


def make_trainer(tmp_path: Path, model: str, blend: str = "none", **train):
    cfg = parse(
        tiny_cfg(
            tmp_path,
            task="translate",
            translate={"model": model, "pool_size": 4, "blend": blend},
            train={"batch_size": N, "loss": "lsgan", **train},
        )
    )
    g = torch.Generator().manual_seed(5)
    inputs = torch.randint(0, 256, (N, 3, SIZE, SIZE), dtype=torch.uint8, generator=g)
    styles = torch.randint(0, 256, (N, 3, SIZE, SIZE), dtype=torch.uint8, generator=g)
    targets = torch.arange(N).flip(0) if model == "pix2pix" else None
    return TranslationTrainer(cfg, Domains(inputs, styles, targets), model, dist.World(), torch.device("cpu"))


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 127.5 - 1


def test_pix2pix_g_loss_is_the_adversarial_term_plus_lambda_times_the_l1_to_the_target(tmp_path, monkeypatch):
    from pipeline.translation import trainer as trainer_module

    masks = []  # G's dropout masks (the paper's noise), which the trainer draws with the batch

    def record(*args, **kw):
        masks.append(draw_dropout(*args, **kw))
        return masks[-1]

    monkeypatch.setattr(trainer_module, "draw_dropout", record)
    t = make_trainer(tmp_path, "pix2pix", augment=[])
    G = copy.deepcopy(t.G)  # G before the step: the step reports its losses from the weights it started with
    out = t.gan_step(1)
    assert len(masks) == len(G.dropouts) > 0
    idx = t.state.order  # the step's batch: the whole set, in the order it drew
    x, y = _unit(t.data.inputs[idx]), _unit(t.data.styles[t.data.targets[idx]])
    for m, mask in zip(G.dropouts, masks):
        m.mask = mask
    with torch.no_grad():
        l1 = F.l1_loss(G(x), y)
    assert out["l1"].item() == pytest.approx(l1.item(), rel=1e-5)
    assert out["loss_g"].item() == pytest.approx(out["loss_g_adv"].item() + 100.0 * l1.item(), rel=1e-5)


def test_drawn_dropout_applies_its_mask_in_training_and_nothing_in_eval():
    gen = torch.Generator().manual_seed(0)
    mask = draw_dropout(4, (8, 2, 2), gen)
    assert mask.shape == (4, 8, 2, 2) and set(mask.unique().tolist()) == {0.0, 2.0}
    assert 0.4 < (mask == 0).float().mean().item() < 0.6  # p = 0.5, kept values scaled by 1 / (1 - p)
    drop = DrawnDropout((8, 2, 2))
    x = torch.randn(4, 8, 2, 2)
    drop.mask = mask
    assert torch.equal(drop(x), x * mask)
    drop.eval()
    assert torch.equal(drop(x), x)
    drop.train()
    drop.mask = None
    torch.manual_seed(3)
    a = drop(x)
    torch.manual_seed(3)
    assert torch.equal(a, torch.nn.functional.dropout(x, 0.5, True))  # no mask: plain dropout
    unet = UNet(64, 8)
    assert sorted(m.shape for m in unet.dropouts) == [(32, 8, 8), (64, 4, 4)]  # levels 3 and 4 of 64 px
    seen = []
    for m in unet.dropouts:
        m.register_forward_hook(lambda m, i, o: seen.append((m.shape, tuple(o.shape[1:]))))
    unet(torch.randn(2, 3, 64, 64))
    assert len(seen) == 2 and all(want == got for want, got in seen)  # each mask fits what its layer sees


def test_cyclegan_cycle_and_identity_terms_match_a_hand_computation(tmp_path):
    t = make_trainer(tmp_path, "cyclegan", augment=[])
    G, Fb = copy.deepcopy(t.G), copy.deepcopy(t.G_ba)
    out = t.gan_step(1)
    a, b = _unit(t.data.inputs), _unit(t.data.styles)
    with torch.no_grad():
        cycle = F.l1_loss(Fb(G(a)), a) + F.l1_loss(G(Fb(b)), b)
        identity = F.l1_loss(G(b), b) + F.l1_loss(Fb(a), a)
    assert out["cycle"].item() == pytest.approx(cycle.item(), rel=1e-5)
    assert out["identity"].item() == pytest.approx(identity.item(), rel=1e-5)
    lam, idt = 10.0, 0.5
    expected = out["loss_g_adv"].item() + lam * cycle.item() + lam * idt * identity.item()
    assert out["loss_g"].item() == pytest.approx(expected, rel=1e-5)


def test_the_history_buffer_fills_first_then_swaps_half_the_time():
    pool = HistoryBuffer(3)
    imgs = torch.arange(5.0).view(5, 1, 1, 1)
    # the first three fill it and are shown as they are
    shown = pool.query(imgs[:3], torch.zeros(3), torch.zeros(3, dtype=torch.long))
    assert shown.flatten().tolist() == [0, 1, 2]
    # u < 0.5: the stored image at the slot is shown and the new one takes its place; else the new one is shown
    shown = pool.query(imgs[3:], torch.tensor([0.2, 0.9]), torch.tensor([4, 0]))
    assert shown.flatten().tolist() == [1, 4]  # slot 4 % 3 = 1
    assert pool.images.flatten().tolist() == [0, 3, 2]
    assert HistoryBuffer(0).query(imgs, torch.zeros(5), torch.zeros(5, dtype=torch.long)) is imgs


@pytest.mark.parametrize("model", ["pix2pix", "cyclegan"])
def test_resume_from_a_checkpoint_ends_bitwise_where_an_uninterrupted_run_does(tmp_path, model):
    torch.set_num_threads(1)
    straight = make_trainer(tmp_path, model)
    for step in range(1, 7):
        straight.gan_step(step)
        straight.update_ema(step)

    first = make_trainer(tmp_path, model)
    for step in range(1, 4):
        first.gan_step(step)
        first.update_ema(step)
        first.state.step = step
    path = tmp_path / "latest.pt"
    checkpoint.save(path, first.state_dict())
    torch.manual_seed(123)  # whatever the process did since: the checkpoint restores it
    resumed = make_trainer(tmp_path, model)
    resumed.load_state_dict(checkpoint.load(path))
    for step in range(4, 7):
        resumed.gan_step(step)
        resumed.update_ema(step)
    for a, b in zip(straight.state_dict().items(), resumed.state_dict().items()):
        if a[0] in ("G", "D", "G_ba", "D_a", "G_ema") and a[1] is not None:
            for k in a[1]:
                assert torch.equal(a[1][k], b[1][k]), (a[0], k)


@pytest.mark.parametrize("model", ["pix2pix", "cyclegan"])
def test_translate_blend_reaches_the_generator_and_its_checkpoint_and_the_way_back_has_none(tmp_path, model):
    from pipeline.translation.translator import new_generator

    t = make_trainer(tmp_path, model)
    assert t.G.blend == "none" and t.checkpoint_fields()["blend"] == "none"  # the default: G draws the image
    t = make_trainer(tmp_path, model, blend="multiply")
    assert t.G.blend == "multiply" and t.checkpoint_fields()["blend"] == "multiply"
    t.gan_step(1)
    ckpt = t.checkpoint_fields()
    x = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    G = t.G.eval()
    with torch.no_grad():  # what the checkpoint rebuilds draws what the trained generator drew
        assert torch.equal(new_generator(ckpt, ckpt["generator"])(x), G(x))
        old = new_generator({k: v for k, v in ckpt.items() if k != "blend"}, ckpt["generator"])  # before the param
        assert torch.equal(old(x), G.net(x))
    if model == "cyclegan":
        assert t.G_ba.blend == "none"  # style -> input draws its image: a line art is not a colour layer
    with pytest.raises(ArtganError, match="translate.blend"):
        parse(tiny_cfg(tmp_path, task="translate", translate={"blend": "screen"}))


def test_auto_picks_pix2pix_for_pairs_and_cyclegan_otherwise_and_pix2pix_needs_pairs():
    assert resolve_model("auto", True) == "pix2pix" and resolve_model("auto", False) == "cyclegan"
    with pytest.raises(ArtganError, match="cyclegan"):
        resolve_model("pix2pix", False)


def test_a_wgan_loss_is_refused_in_one_line(tmp_path):
    with pytest.raises(ArtganError, match="train.loss"):
        make_trainer(tmp_path, "pix2pix", loss="wgan-gp")


def test_the_loaded_data_exclude_held_out_inputs_and_their_targets_from_training():
    from pipeline.translation.pairs import TranslationData

    names = [f"n{i:02d}" for i in range(40)]
    style, inputs = _frames(names, names)
    plan = pairing.plan(style, inputs, Tr, "m")
    imgs = np.zeros((40, 4, 4, 3), np.uint8)
    data = TranslationData(imgs, imgs, plan.inputs, plan.style, True)
    train_in, train_style = data.train_rows()
    assert set(plan.inputs["target"][train_in]) <= set(train_style)
    held_targets = plan.inputs["target"][plan.inputs["split"] == "holdout"]
    assert not set(held_targets) & set(train_style)
