"""`artgan retrain`: the scheduled retraining job, runnable locally exactly as CI runs it.

dvc pull -> dvc repro -> dvc push, then `dvc metrics diff --md` against the committed metrics (HEAD).
Every step is a `dvc` subprocess; the only state is what DVC (cache, remote, dvc.lock) and MLflow (the
runs the stages log) already own. A failing step raises RetrainError naming the step and its exit code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

from pipeline import config
from pipeline.errors import ArtganError
from pipeline.io import atomic_path


class RetrainError(ArtganError):
    """A dvc step of the retraining job failed."""


def _dvc() -> list[str]:
    """The dvc next to this interpreter (the project's virtualenv), else `python -m dvc`."""
    exe = Path(sys.executable).parent / "dvc"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "dvc"]


def _step(name: str, args: list[str], cwd: Path, echo: Callable[[str], None], capture: bool = False) -> str:
    echo(f"retrain: {name}: dvc {' '.join(args)}")
    env = {**os.environ}
    # the `artgan` stage commands must resolve to this interpreter's environment
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    res = subprocess.run([*_dvc(), *args], cwd=cwd, env=env, text=True, stdout=subprocess.PIPE if capture else None)
    if res.returncode != 0:
        raise RetrainError(f"retrain step '{name}' (dvc {' '.join(args)}) failed with exit code {res.returncode}")
    return res.stdout or ""


def set_params(params: Path, overrides: list[str]) -> None:
    """Apply `key.sub=value` overrides to params.yaml in place, comments kept (as `dvc exp run -S` does).

    The result must pass the typed config check; if it does not, params.yaml is left as it was."""
    import yaml
    from dvc.utils.serialize import modify_yaml

    config.load(params)  # the file as it stands must already be valid (a one-line error naming it otherwise)
    with modify_yaml(params) as data:  # written only when this block ends without an error
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise RetrainError(f"--set {item!r}: expected KEY=VALUE, e.g. train.steps=3000")
            *path, last = key.split(".")
            node = data
            for part in path:
                if not isinstance(node, dict) or part not in node:
                    raise RetrainError(f"--set {item!r}: params.yaml has no section {part!r}")
                node = node[part]
            if not isinstance(node, dict):
                raise RetrainError(f"--set {item!r}: {'.'.join(path)} is a value, not a section")
            try:
                node[last] = yaml.safe_load(value)
            except yaml.YAMLError:
                raise RetrainError(f"--set {item!r}: the value is not valid YAML") from None
        config.parse(data, f"--set ({params} with the overrides)")


def run(
    remote: str | None = None,
    push: bool = True,
    pull: bool = True,
    summary: Path | None = None,
    baseline: str = "HEAD",
    overrides: list[str] | None = None,
    params: Path = Path("params.yaml"),
    cwd: Path | None = None,
    echo: Callable[[str], None] = print,
) -> dict:
    """Pull, reproduce, push and diff the metrics; returns what happened (for the CLI's one-line summary)."""
    cwd = Path(cwd or Path.cwd())
    remote_args = ["--remote", remote] if remote else []
    if overrides:
        set_params(cwd / params, overrides)  # the typed config check in every stage still applies
    pulled = False
    if pull:
        # --allow-missing: the first run (or a stage whose outputs were never pushed) has nothing to pull;
        # dvc repro then rebuilds what is missing.
        _step("pull", ["pull", "--allow-missing", *remote_args], cwd, echo)
        pulled = True
    _step("repro", ["repro"], cwd, echo)
    if push:
        _step("push", ["push", *remote_args], cwd, echo)
    diff = _step("metrics diff", ["metrics", "diff", "--md", baseline], cwd, echo, capture=True)
    changed = len([line for line in diff.splitlines() if line.startswith("|")]) > 2  # beyond header + rule
    markdown = (
        f"## artgan retrain: metrics vs {baseline}\n\n" + (diff.strip() if changed else "No metric changed.") + "\n"
    )
    echo(markdown)
    if summary is not None:
        with atomic_path(summary) as tmp:
            tmp.write_text(markdown)
    return {
        "pulled": pulled,
        "pushed": push,
        "remote": remote or "default",
        "baseline": baseline,
        "summary": str(summary) if summary else None,
        "metrics_changed": changed,
    }
