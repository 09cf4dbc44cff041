"""train.device / eval.device: `auto` picks cuda -> mps -> cpu at run time; an absent device is one line.

This machine has neither CUDA nor MPS, so which of them is present is simulated by what torch reports."""

from __future__ import annotations

import pytest
import torch

from pipeline.device import pick_device
from pipeline.errors import ArtganError


@pytest.mark.parametrize(
    "cuda, mps, allow_mps, expected",
    [
        (True, True, True, "cuda"),
        (False, True, True, "mps"),
        (False, False, True, "cpu"),
        (False, True, False, "cpu"),  # a stage that cannot use MPS (e.g. eval) falls back to the CPU
    ],
)
def test_auto_picks_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, allow_mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert pick_device("auto", mps=allow_mps).type == expected


@pytest.mark.parametrize("name", ["cuda", "mps"])
def test_asking_for_a_device_that_is_not_there_names_the_key(monkeypatch, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ArtganError, match=rf"^eval.device is '{name}' but .* available; use eval.device=auto or cpu$"):
        pick_device(name, key="eval.device")


def test_cpu_is_always_there():
    assert pick_device("cpu") == torch.device("cpu")
