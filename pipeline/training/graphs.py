"""CUDA graphs of whole training steps (`train.cuda_graphs`): each kind of step is captured once and then
replayed, so the host launches one graph a step instead of a few hundred kernels.

A small GAN on a fast GPU is bound by the host, not the GPU: DCGAN at 64 px on an H200 spent 137 ms of CPU
time on kernel launches against 20 ms of GPU time for 10 steps (README, "On a GPU"). A step here is a pure
function of its draws (latents, image indices, augmentation and penalty weights; pipeline/training/loop.py),
so its replay only needs them copied into the buffers the capture read: one flat buffer per dtype, filled by
one copy each from pinned host memory. Each kind of step (a GAN step with or without R1, a VAE step) is its
own graph, in its own memory pool, after a few eager steps that set up cuDNN, cuBLAS and the optimisers'
state (PyTorch's recipe for whole-network capture: warm-up on a side stream, capturable optimisers, autocast
without its weight cache). A step that cannot be captured (a kernel that waits on the host) is a one-line
error that says to turn the setting off.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from pipeline.errors import ArtganError

WARMUP = 3  # eager steps of each kind before it is captured

Step = Callable[[object], dict]  # the step computed from its inputs on the device -> scalar tensors


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


class StepGraphs:
    """Runs steps through one captured graph per kind of step.

    With capture=False (or off CUDA) the steps run eagerly from the same input buffers: the data path of a
    captured step without the capture, which the CPU tests compare bitwise with plain eager steps."""

    def __init__(self, device: torch.device, capture: bool = True):
        self.device = device
        self.capture = capture and device.type == "cuda"
        self.kinds: dict[tuple, _Kind] = {}
        self.stream = torch.cuda.Stream(device) if self.capture else None

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

    def run(self, kind: tuple, draws, eager: Step, captured: Step) -> dict[str, torch.Tensor]:
        """The step of this kind for these draws: `eager(inputs)` for the warm-up steps (and always when not
        capturing), `captured(inputs)` to capture it. A captured graph's outputs are its own tensors, which
        the next replay overwrites: read them before the next step."""
        k = self.kinds.get(kind)
        if k is None:
            k = self.kinds[kind] = self._new_kind(draws)
        self._upload(k, draws)
        if not self.capture:
            return eager(k.inputs)
        if k.graph is None and k.calls < WARMUP:
            k.calls += 1
            return self._side_stream(eager, k.inputs)
        if k.graph is None:
            k.graph, k.out = self._capture(kind, captured, k.inputs)
        k.graph.replay()
        return dict(k.out)

    def _capture(self, kind: tuple, captured: Step, inputs) -> tuple[torch.cuda.CUDAGraph, dict]:
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
                out = captured(inputs)
        except Exception as exc:  # a kernel that waits on the host (or an optimiser that is not capturable)
            cause = exc.__context__ or exc  # what broke the capture, not the end of the broken capture
            first = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]
            raise ArtganError(f"train.cuda_graphs: the {kind[0]} step could not be captured as a CUDA graph "
                              f"({type(cause).__name__}: {first}); set train.cuda_graphs: false") from None
        return graph, out

    def _side_stream(self, eager: Step, inputs) -> dict[str, torch.Tensor]:
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            out = eager(inputs)
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        return out

    def captured_kinds(self) -> list[tuple]:
        return [kind for kind, k in self.kinds.items() if k.graph is not None]
