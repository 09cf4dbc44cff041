"""How many CPU cores a stage may use: `train.threads`, or every core this process may run on when 0."""

from __future__ import annotations

import os


def available_cores() -> int:
    """The cores this process may run on."""
    affinity = getattr(os, "sched_getaffinity", None)  # Linux; elsewhere every core
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def cores(threads: int) -> int:
    """`threads` (train.threads), or all the cores this process may run on when 0."""
    return threads or available_cores()
