"""The device a stage runs on, chosen at run time from a param (`train.device`, `eval.device`)."""

from __future__ import annotations

import torch

from pipeline.errors import ArtganError


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(name: str, key: str = "train.device", mps: bool = True) -> torch.device:
    """'auto' is cuda -> mps (when `mps`) -> cpu; an explicit device that is not there is a one-line error naming `key`."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps and _mps_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ArtganError(f"{key} is 'cuda' but no CUDA device is available; use {key}=auto or cpu")
    if name == "mps" and not _mps_available():
        raise ArtganError(f"{key} is 'mps' but MPS is not available; use {key}=auto or cpu")
    return torch.device(name)


def cpu_bf16_native() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX); elsewhere it emulates it, slowly."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


CPU_BF16_WARNING = (
    "train: warning: train.amp is bf16 but this CPU has no native bf16 (AVX512-BF16 or AMX; "
    "torch sees {cap}): oneDNN emulates it, about 13x slower than fp32 on an AVX2 CPU; "
    "set train.amp: auto for fp32"
)
