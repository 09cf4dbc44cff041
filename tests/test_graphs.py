"""train.cuda_graphs: a step drawn first and computed from input buffers (what a CUDA graph replays) is bitwise
the eager step, for every kind of step, and draws in the documented order; a non-finite value still stops at its
step; a checkpoint resumes whichever way the optimisers' step counts were kept; on a CPU or in several processes
the setting is ignored with a note (the trainer's step runner is the eager one); with torch.compile it is a params
error. On CUDA: captured steps replay what eager steps compute, a resume is bitwise, and a step that cannot be
captured is a one-line error."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import make_trainer as trainer
from helpers import run_steps, tiny_cfg

from pipeline import augment
from pipeline.config import parse
from pipeline.errors import ArtganError
from pipeline.training.graphs import EagerRunner, GraphRunner, leaves, runner, tree_map
from pipeline.training.loop import NonFinite, Trainer

CPU = torch.device("cpu")
N_IMAGES = 20  # make_trainer's default

CASES = {
    "ns, translation + cutout, EMA (the default)": {},
    "wgan-gp, n_critic 2, every policy at p 0.5, conditional": {
        "train": {"loss": "wgan-gp", "n_critic": 2, "augment": ["color", "translation", "cutout"], "augment_p": 0.5},
        "labels": True,
    },
    "hinge + lazy R1 every 2nd step (two kinds of step), mirrored reals": {
        "train": {"loss": "hinge", "r1_gamma": 1.0, "r1_every": 2, "xflip": True}
    },
    "ns + lazy bCR every 3rd step (two kinds of step)": {"train": {"cr": 10.0, "cr_every": 3}},
    "wgan clipping, resnet with spectral norm": {
        "train": {"loss": "wgan", "n_critic": 2},
        "model": {"arch": "resnet", "spectral_norm": True},
    },
    "vae": {"model": {"arch": "vae"}, "train": {"ema_decay": 0.0, "augment": []}},
}


def assert_same_state(a: Trainer, b: Trainer) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    for net in ("G", "D", "G_ema"):
        if sa[net] is None:
            assert sb[net] is None
            continue
        for k in sa[net]:
            assert torch.equal(sa[net][k].cpu(), sb[net][k].cpu()), (net, k)
    for opt in ("opt_g", "opt_d"):
        for pid, state in sa[opt]["state"].items():
            for k, v in state.items():
                assert torch.equal(torch.as_tensor(v).cpu(), torch.as_tensor(sb[opt]["state"][pid][k]).cpu()), (opt, k)
    assert torch.equal(sa["gen"], sb["gen"]) and torch.equal(sa["order"], sb["order"]) and sa["cursor"] == sb["cursor"]


class ScramblingGraphs(GraphRunner):
    """Buffered steps whose draws are zeroed once uploaded: if GraphRunner handed the step the draws instead of
    its buffers (which a replayed graph reads), the step would compute from zeros. And the step itself draws
    nothing: a replay would repeat the captured draw."""

    def __init__(self, gen: torch.Generator):
        super().__init__(CPU, capture=False)
        self.gen = gen

    def run(self, kind, draws, compute, check):
        draws = tree_map(torch.clone, draws)  # (the real draws include a view of the data order)

        def scrambled(inputs, check):
            for t in leaves(draws):
                t.zero_()
            before = self.gen.get_state()
            out = compute(inputs, check)
            assert torch.equal(self.gen.get_state(), before), "the step drew from the trainer's generator"
            return out

        return super().run(kind, draws, scrambled, check)


@pytest.mark.parametrize("name", CASES)
def test_a_step_computed_from_its_input_buffers_is_bitwise_the_eager_step(tmp_path, name):
    # the data path of a captured step, without the capture: the step's draws are copied into buffers made
    # once, and the step reads only those. A buffer that were not refreshed, or a draw that the step made
    # for itself, would make these runs part (new latents, a new data order every epoch, new augmentations).
    eager, buffered = trainer(tmp_path, CASES[name]), trainer(tmp_path, CASES[name])
    buffered.runner = ScramblingGraphs(buffered.gen)
    assert run_steps(eager, 9) == run_steps(buffered, 9)
    assert_same_state(eager, buffered)
    kinds = {("vae",)} if eager.kind == "vae" else {("gan", False, False)}
    if "R1" in name:
        kinds.add(("gan", True, False))
    if "bCR" in name:
        kinds.add(("gan", False, True))
    assert set(buffered.runner.kinds) == kinds  # every step went through the buffers, one set per kind of step


def test_the_buffers_are_made_once_per_kind_and_read_fresh_each_step(tmp_path):
    tr = trainer(tmp_path, CASES["ns, translation + cutout, EMA (the default)"])
    tr.runner = GraphRunner(CPU, capture=False)
    tr.gan_step(1)
    first = leaves(tr.runner.kinds[("gan", False, False)].inputs)
    z1 = first[0].clone()
    tr.gan_step(2)
    again = leaves(tr.runner.kinds[("gan", False, False)].inputs)
    assert all(a is b for a, b in zip(first, again))  # the same tensors (a graph reads fixed addresses) ...
    assert not torch.equal(z1, again[0])  # ... holding the new step's draws


@pytest.mark.parametrize("cr", [False, True], ids=["plain step", "bCR step"])
def test_a_gan_step_draws_in_the_documented_order(tmp_path, cr):
    # per critic step: latents, fake labels, the data order (when an epoch starts), the reals' and the fakes'
    # augmentations, the penalty's weights, on a bCR step the second augmentations of the reals and the fakes;
    # then G's augmentation. A checkpoint's generator state only resumes the same stream while this order holds.
    case = CASES["wgan-gp, n_critic 2, every policy at p 0.5, conditional"]
    tr = trainer(tmp_path, {**case, "train": {**case["train"], "cr": 10.0}})
    g = torch.Generator()
    g.set_state(tr.gen.get_state())
    b, t = tr.t.batch_size, tr.t
    assert t.n_critic == 2 and b == 8 and N_IMAGES == 20  # one permutation serves both critic steps
    expected, order = [], None
    for i in range(t.n_critic):
        weights = torch.tensor(tr.data.class_counts, dtype=torch.float64)  # the training set's frequencies
        expected += [torch.randn(b, tr.z_dim, generator=g), torch.multinomial(weights, b, True, generator=g)]
        if order is None:
            order = torch.randperm(N_IMAGES, generator=g)
        expected.append(order[i * b : (i + 1) * b])
        for _ in ("real", "fake"):
            expected += leaves(augment.draw(t.augment, t.augment_p, g, (16, 16), b))
        expected.append(torch.rand(b, generator=g))
        if cr:
            for _ in ("real", "fake"):
                expected += leaves(augment.draw(t.augment, t.augment_p, g, (16, 16), b))
    expected += leaves(augment.draw(t.augment, t.augment_p, g, (16, 16), b))
    got = leaves(tr._draw_gan(cr))
    assert len(got) == len(expected)
    assert all(torch.equal(a, e) for a, e in zip(got, expected))
    assert torch.equal(tr.gen.get_state(), g.get_state())


def test_tree_map_and_leaves_walk_nested_draws_in_one_order():
    draws = {
        "critic": [{"z": torch.zeros(2), "y": None, "aug": [("cutout", torch.ones(2), torch.full((2,), 3))]}],
        "aug_g": [],
    }
    doubled = tree_map(lambda t: t * 2, draws)
    assert doubled["critic"][0]["y"] is None and doubled["critic"][0]["aug"][0][0] == "cutout"
    assert [t.tolist() for t in leaves(doubled)] == [[0.0, 0.0], [2.0, 2.0], [6, 6]]


def test_a_non_finite_value_in_a_buffered_step_stops_at_the_same_step_as_eager(tmp_path):
    explode = {"train": {"loss": "wgan", "clip_value": 1e30, "lr_d": 1e12, "lr_g": 1e12, "augment": []}}
    failed = []
    for buffers in (False, True):
        tr = trainer(tmp_path, explode)
        if buffers:
            tr.runner = GraphRunner(CPU, capture=False)
        with pytest.raises(NonFinite, match=r"non-finite loss at step \d+") as err:
            run_steps(tr, 50)
        failed.append(str(err.value).split(" (")[0])
    assert failed[0] == failed[1]


@pytest.mark.parametrize("saved_capturable", [True, False])
def test_a_checkpoint_resumes_whichever_way_its_optimisers_kept_their_step_counts(tmp_path, saved_capturable):
    # a CUDA-graph run's Adam is capturable (step counts on the GPU); resumed eagerly, on a CPU say, it must not
    # stay so (Adam refuses capturable state on a CPU), and the other way round
    case = CASES["ns, translation + cutout, EMA (the default)"]
    whole, first = trainer(tmp_path, case), trainer(tmp_path, case)
    run_steps(whole, 6)
    run_steps(first, 3)
    ck = copy.deepcopy(first.state_dict())
    from pipeline.training.checkpoint import rng_states

    ck["rng"] = rng_states()
    for opt in ("opt_g", "opt_d"):
        for group in ck[opt]["param_groups"]:
            group["capturable"] = saved_capturable
    resumed = trainer(tmp_path, case)
    resumed.load_state_dict(ck)
    assert {g["capturable"] for g in resumed.opt_g.param_groups + resumed.opt_d.param_groups} == {False}
    run_steps(resumed, 3, start=3)
    assert_same_state(whole, resumed)


def test_cuda_graphs_with_torch_compile_is_a_params_error_naming_both(tmp_path):
    with pytest.raises(ArtganError, match=r"'train\.cuda_graphs'.*train\.compile"):
        parse(tiny_cfg(tmp_path, train={"cuda_graphs": True, "compile": True}))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_graphs_off_cuda_are_ignored_with_a_note_and_train_as_eager(tmp_path, capsys):
    case = CASES["ns, translation + cutout, EMA (the default)"]
    with_graphs, eager = trainer(tmp_path, case, cuda_graphs=True), trainer(tmp_path, case)
    assert "train.cuda_graphs is ignored on cpu" in capsys.readouterr().err
    assert type(with_graphs.runner) is EagerRunner
    assert run_steps(with_graphs, 3) == run_steps(eager, 3)


def test_the_runner_is_graphed_only_for_one_process_on_cuda_and_says_why_not(capsys):
    # several processes on CUDA: eager with a note (made without touching a GPU); off: eager, silently
    multi = runner(True, torch.device("cuda"), world_size=2)
    assert type(multi) is EagerRunner
    assert "train.cuda_graphs is ignored on cuda: CUDA graphs run in one process" in capsys.readouterr().err
    assert type(runner(True, CPU, main=False)) is EagerRunner and capsys.readouterr().err == ""  # noted on rank 0
    assert type(runner(False, CPU)) is EagerRunner and capsys.readouterr().err == ""
    eager = EagerRunner(CPU)
    assert eager.optimizer_kwargs() == {"capturable": False} and eager.autocast_cache()


def test_cuda_graphs_do_not_change_the_checkpoint_key(tmp_path):
    # like compile or device, they change how a step runs, not what training is: a run resumes the other's
    from pipeline.training.checkpoint import config_key

    on, off = (parse(tiny_cfg(tmp_path, train={"cuda_graphs": v})) for v in (True, False))
    assert config_key(on, "digest") == config_key(off, "digest")


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def deterministic():
    # as the train stage runs (its deterministic kernels are among those captured)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(before)


@CUDA
@pytest.mark.parametrize("name", CASES)
def test_captured_steps_replay_what_eager_steps_compute(tmp_path, name, deterministic):
    dev = torch.device("cuda")
    captured = trainer(tmp_path, CASES[name], dev, cuda_graphs=True)
    eager = trainer(tmp_path, CASES[name], dev, cuda_graphs=True)  # capturable optimisers too, ...
    eager.runner = GraphRunner(dev, capture=False)  # ... but every step eager
    assert run_steps(captured, 9) == run_steps(eager, 9)
    assert_same_state(captured, eager)
    assert set(captured.runner.captured_kinds()) == set(captured.runner.kinds)  # captured after the warm-up, replayed


@CUDA
@pytest.mark.parametrize("first_graphs", [True, False])
def test_a_resume_with_cuda_graphs_is_bitwise(tmp_path, deterministic, first_graphs):
    # checkpointed after both kinds of step were captured (r1 every 2nd step: 5 steps of each kind in 10), and
    # loaded into a trainer holding graphs of its own; also from an eager run's checkpoint
    from pipeline.training.checkpoint import rng_states

    dev, case = torch.device("cuda"), CASES["hinge + lazy R1 every 2nd step (two kinds of step), mirrored reals"]
    whole = trainer(tmp_path, case, dev, cuda_graphs=True)
    run_steps(whole, 20)
    first = trainer(tmp_path, case, dev, cuda_graphs=first_graphs)
    run_steps(first, 10)
    if first_graphs:
        assert len(first.runner.captured_kinds()) == 2
    ck = copy.deepcopy(first.state_dict())
    ck["rng"] = rng_states()
    resumed = trainer(tmp_path, case, dev, cuda_graphs=True)
    run_steps(resumed, 10)  # graphs captured on its own weights, dropped by the load
    resumed.load_state_dict(ck)
    run_steps(resumed, 10, start=10)
    assert len(resumed.runner.captured_kinds()) == 2
    if first_graphs:
        assert_same_state(whole, resumed)


@CUDA
def test_a_step_that_cannot_be_captured_is_a_one_line_error(tmp_path, monkeypatch):
    dev = torch.device("cuda")
    tr = trainer(tmp_path, CASES["ns, translation + cutout, EMA (the default)"], dev, cuda_graphs=True)
    compute = tr._gan_compute

    def syncs(d, r1, step):
        out = compute(d, r1, step)
        out["loss_d"].item()  # waits on the GPU: not allowed while capturing
        return out

    monkeypatch.setattr(tr, "_gan_compute", syncs)
    with pytest.raises(
        ArtganError,
        match=r"train\.cuda_graphs: the gan step could not be captured.*"
        r"set train\.cuda_graphs: false",
    ):
        run_steps(tr, 5)
