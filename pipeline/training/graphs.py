"""How a training step runs: the step runner the Trainer picks once, at construction (`runner`).

A step is drawn first and then computed from its draws alone (pipeline/training/loop.py). The Trainer hands
each step to its runner as `run(kind, draws, compute, check)`: `compute(inputs, check)` is the step on the
device from `inputs` (the draws, there), calling `check(values)` on its values before each update, and
returns its values. The runner also says how the Trainer builds what a step touches: `optimizer_kwargs()`
for Adam, `autocast_cache()` for autocast, and `reset(*optimizers)` after a checkpoint is loaded.

- `EagerRunner`: the step as it is written, every step.
- `GraphRunner` (`train.cuda_graphs`, one process on CUDA): each kind of step (a GAN step with or without R1,
  a VAE step) is captured once as a CUDA graph and then replayed. Its replay reads the buffers the capture
  read, so each step's draws are copied into them first: one flat buffer per dtype, filled by one copy each
  from pinned host memory. Before its capture, a kind runs `WARMUP` eager steps on a side stream (cuDNN,
  cuBLAS and the optimisers' state set up); Adam is capturable (its step counts on the device) and autocast
  keeps no weight cache, as PyTorch's recipe for whole-network capture has it. A replayed step is checked
  after its updates, as a whole. A step that cannot be captured is a one-line error saying to turn the
  setting off.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Callable

import torch

from pipeline.errors import ArtganError

WARMUP = 3  # eager steps of each kind before it is captured

Check = Callable[[dict], None]  # raises when a step's values may not be applied
Compute = Callable[[object, Check], dict]  # the step on the device, from its inputs -> scalar tensors


def tree_map(fn: Callable[[torch.Tensor], torch.Tensor], obj):
    """`fn` applied to every tensor of nested dicts, lists and tuples; anything else is kept as it is."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: tree_map(fn, v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(tree_map(fn, v) for v in obj)
    return obj


def leaves(obj) -> list[torch.Tensor]:
    """The tensors of nested dicts, lists and tuples, in the order tree_map visits them."""
    found: list[torch.Tensor] = []
    tree_map(lambda t: found.append(t) or t, obj)
    return found


def to_device(draws, device: torch.device):
    return tree_map(lambda t: t.to(device), draws)


def runner(cuda_graphs: bool, device: torch.device, world_size: int = 1, main: bool = True):
    """The step runner for this run: a GraphRunner when `train.cuda_graphs` is on and can be (one process on
    CUDA), else an EagerRunner; asked for where it cannot be, with a one-line note (from the main process)."""
    if not cuda_graphs:
        return EagerRunner(device)
    why = (
        "CUDA graphs need a CUDA device"
        if device.type != "cuda"
        else "CUDA graphs run in one process (this is one of several)"
        if world_size > 1
        else ""
    )
    if not why:
        return GraphRunner(device)
    if main:
        print(f"train: note: train.cuda_graphs is ignored on {device}: {why}; training runs eagerly", file=sys.stderr)
    return EagerRunner(device)


def set_capturable(opt: torch.optim.Optimizer, capturable: bool) -> None:
    """Adam's `capturable` and where its step counts live (on the parameters' device when capturable, on the
    host when not). load_state_dict brings back the saved run's, which this run must not keep when it differs."""
    for group in opt.param_groups:
        group["capturable"] = capturable
    for p, state in opt.state.items():
        if "step" in state:
            state["step"] = state["step"].to(device=p.device if capturable else "cpu")


class EagerRunner:
    """Every step computed as it is written, checked before each update."""

    def __init__(self, device: torch.device):
        self.device = device

    def run(self, kind: tuple, draws, compute: Compute, check: Check) -> dict[str, torch.Tensor]:
        return compute(to_device(draws, self.device), check)

    def optimizer_kwargs(self) -> dict:
        return {"capturable": False}

    def autocast_cache(self) -> bool:
        return True

    def reset(self, *optimizers: torch.optim.Optimizer) -> None:
        """After a checkpoint load: the optimisers' step counts back on the host (a graphed run saves them
        on the device)."""
        for opt in optimizers:
            set_capturable(opt, False)


@dataclass
class _Kind:
    """One kind of step: its input buffers (views of one flat device buffer per dtype) and, once captured, its
    graph and the graph's outputs."""

    inputs: object
    flat: dict[torch.dtype, torch.Tensor]  # on the device
    staging: dict[torch.dtype, torch.Tensor]  # on the host (pinned when capturing)
    slots: list[tuple[torch.dtype, int, int]]  # per leaf: dtype, offset, numel
    copied: torch.cuda.Event | None = None  # the last upload from `staging`, which must end before it is refilled
    calls: int = 0
    graph: object = None
    out: dict = field(default_factory=dict)


class GraphRunner:
    """Runs steps through one captured graph per kind of step.

    With capture=False (or off CUDA) the steps run eagerly from the same input buffers: the data path of a
    captured step without the capture, which the CPU tests compare bitwise with plain eager steps."""

    def __init__(self, device: torch.device, capture: bool = True):
        self.device = device
        self.capture = capture and device.type == "cuda"
        self.kinds: dict[tuple, _Kind] = {}
        self.stream = torch.cuda.Stream(device) if self.capture else None

    def optimizer_kwargs(self) -> dict:
        return {"capturable": self.capture}  # a captured step keeps Adam's step counts on the device

    def autocast_cache(self) -> bool:
        return False  # autocast's cache of cast weights would hold tensors freed after a capture

    def reset(self, *optimizers: torch.optim.Optimizer) -> None:
        """After a checkpoint load: the graphs, which hold the optimisers' old state tensors, are dropped (to
        be captured again), and the optimisers' step counts go where this runner keeps them."""
        self.kinds = {}
        for opt in optimizers:
            set_capturable(opt, self.capture)

    def _new_kind(self, draws) -> _Kind:
        sizes: dict[torch.dtype, int] = {}
        slots = []
        for t in leaves(draws):
            slots.append((t.dtype, sizes.get(t.dtype, 0), t.numel()))
            sizes[t.dtype] = sizes.get(t.dtype, 0) + t.numel()
        flat = {dt: torch.empty(n, dtype=dt, device=self.device) for dt, n in sizes.items()}
        staging = {dt: torch.empty(n, dtype=dt, pin_memory=self.capture) for dt, n in sizes.items()}
        views = iter([flat[dt][o : o + n] for dt, o, n in slots])
        inputs = tree_map(lambda t: next(views).view(t.shape), draws)
        return _Kind(inputs, flat, staging, slots)

    def _upload(self, k: _Kind, draws) -> None:
        if k.copied is not None:
            k.copied.synchronize()
        for t, (dt, o, n) in zip(leaves(draws), k.slots, strict=True):
            k.staging[dt][o : o + n].copy_(t.reshape(-1))
        for dt, buf in k.flat.items():
            buf.copy_(k.staging[dt], non_blocking=self.capture)
        if self.capture:
            k.copied = torch.cuda.Event()
            k.copied.record()

    def run(self, kind: tuple, draws, compute: Compute, check: Check) -> dict[str, torch.Tensor]:
        """The step of this kind for these draws, computed from this kind's input buffers: eagerly (checked
        before each update) for the warm-up steps and always when not capturing; else replayed from its graph
        (captured on first use) and checked after. A replayed graph's outputs are its own tensors, which the
        next replay overwrites: read them before the next step."""
        k = self.kinds.get(kind)
        if k is None:
            k = self.kinds[kind] = self._new_kind(draws)
        self._upload(k, draws)
        if not self.capture:
            return compute(k.inputs, check)
        if k.graph is None and k.calls < WARMUP:
            k.calls += 1
            return self._side_stream(compute, k.inputs, check)
        if k.graph is None:
            k.graph, k.out = self._capture(kind, compute, k.inputs)
        k.graph.replay()
        # checked after its updates (a non-finite value earlier in the step reaches the last critic step's
        # values and G's through the weights); training stops here, before those weights reach a checkpoint
        out = dict(k.out)
        check(out)
        return out

    def _capture(self, kind: tuple, compute: Compute, inputs) -> tuple[torch.cuda.CUDAGraph, dict]:
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
                out = compute(inputs, lambda values: None)  # no host sync inside a capture: checked after replay
        except Exception as exc:  # a kernel that waits on the host (or an optimiser that is not capturable)
            cause = exc.__context__ or exc  # what broke the capture, not the end of the broken capture
            first = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]
            raise ArtganError(
                f"train.cuda_graphs: the {kind[0]} step could not be captured as a CUDA graph "
                f"({type(cause).__name__}: {first}); set train.cuda_graphs: false"
            ) from None
        return graph, out

    def _side_stream(self, compute: Compute, inputs, check: Check) -> dict[str, torch.Tensor]:
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            out = compute(inputs, check)
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        return out

    def captured_kinds(self) -> list[tuple]:
        return [kind for kind, k in self.kinds.items() if k.graph is not None]
