"""dvc.yaml lists the code each stage runs, so `dvc repro` reruns a stage when that code changes.

Checked from the stage modules' own imports (at module level or inside functions): every pipeline module a
stage imports a function or class from is a dependency of that stage (the file or a folder above it). Not
counted: the shared plumbing every stage uses (config, errors, io, tracking) and imports of constants only
(file names such as MANIFEST), plus the few imports listed below with the reason they do not change outputs.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PLUMBING = {"pipeline/config.py", "pipeline/errors.py", "pipeline/io.py", "pipeline/tracking.py"}
NOT_OUTPUTS = {  # (stage, module): why a change there cannot change the stage's outputs
    ("train", "pipeline/generate.py"): "read_checkpoint serves load_generator, which evaluate and render call",
    ("train", "pipeline/stages/preprocess.py"): "dataset_digest only tags the MLflow run",
}
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def imported_code(module: Path) -> set[str]:
    """Files of the pipeline modules `module` imports something other than constants from."""
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if not (isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline")):
            continue
        for alias in node.names:
            if alias.name.isupper():
                continue
            base = node.module.replace(".", "/")
            for cand in (f"{base}/{alias.name}.py", f"{base}.py", f"{base}/__init__.py"):
                if (ROOT / cand).is_file():
                    found.add(cand)
                    break
    return found


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_module_a_stage_runs_is_a_dependency(stage):
    deps = [d if isinstance(d, str) else next(iter(d)) for d in STAGES[stage]["deps"]]
    assert f"pipeline/stages/{stage}.py" in deps
    missing = sorted(f for f in imported_code(ROOT / "pipeline" / "stages" / f"{stage}.py") - PLUMBING
                     if (stage, f) not in NOT_OUTPUTS and not any(f == d or f.startswith(d.rstrip("/") + "/")
                                                                  for d in deps))
    assert not missing, f"dvc.yaml stage {stage} runs {missing} but does not list them under deps"


def test_every_listed_dependency_exists():
    for stage, spec in STAGES.items():
        for d in spec["deps"]:
            path = d if isinstance(d, str) else next(iter(d))
            if path.startswith("pipeline"):
                assert (ROOT / path).exists(), f"dvc.yaml stage {stage}: {path} does not exist"
