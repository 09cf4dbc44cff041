"""dvc.yaml lists exactly the code each stage runs, so `dvc repro` reruns a stage when (and only when) that code
changes: an edit to the train stage reruns train, not evaluate's minutes of FID work.

The code a stage runs is its module and every pipeline module it imports, transitively (at module level or inside
functions), with two exceptions stated below. A folder in deps stands for every module in it.
"""

from __future__ import annotations

import pytest
import yaml
from importgraph import ROOT, closure, modules

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
# config.py looks up the names of sources, losses and architectures in their registries to reject a typo in
# params.yaml; the stage that uses one runs it, and lists it. config's own code is listed by every stage.
NAME_LOOKUPS_ONLY = {"pipeline/config.py"}
EXTRA = {  # (stage, module): code a stage ships rather than imports
    ("evaluate", "pipeline/generate.py"): "the registered pyfunc model runs it (seeds -> images)",
    ("evaluate", "pipeline/pyfunc_model.py"): "logged as the registered model's python_model",
    ("evaluate", "pipeline/translation/pyfunc.py"): "logged as the registered translator's python_model",
}

# files a module reads as code: a stage that runs the module runs them too
DATA_CODE = {"pipeline/report.py": {"pipeline/templates/report.html.j2"}}


def code_deps(stage: str) -> set[str]:
    found = set()
    for d in STAGES[stage]["deps"]:
        d = d if isinstance(d, str) else next(iter(d))
        if not d.startswith("pipeline"):
            continue
        path = ROOT / d
        found |= {m for m in modules() if (ROOT / m).is_relative_to(path)} if path.is_dir() else {d}
    return found


@pytest.mark.parametrize("stage", list(STAGES))
def test_deps_are_exactly_the_code_the_stage_runs(stage):
    runs = closure(f"pipeline/stages/{stage}.py", leaves=NAME_LOOKUPS_ONLY) | {m for (s, m) in EXTRA if s == stage}
    runs |= {f for m in runs for f in DATA_CODE.get(m, ())}
    listed = code_deps(stage)
    assert not runs - listed, f"dvc.yaml stage {stage} runs {sorted(runs - listed)} but does not list them under deps"
    assert not listed - runs, f"dvc.yaml stage {stage} lists {sorted(listed - runs)}, which it does not run"


def test_the_report_template_is_the_file_listed():
    from pipeline import report

    assert {f"pipeline/templates/{report.TEMPLATE}"} == DATA_CODE["pipeline/report.py"]


def test_every_listed_dependency_exists():
    for stage, spec in STAGES.items():
        for d in spec["deps"]:
            path = d if isinstance(d, str) else next(iter(d))
            if path.startswith("pipeline"):
                assert (ROOT / path).exists(), f"dvc.yaml stage {stage}: {path} does not exist"


def test_every_path_comes_from_params():
    """No artifact folder is written twice (in params.yaml and dvc.yaml): dvc.yaml interpolates the params."""
    for stage, spec in STAGES.items():
        for key in ("outs", "metrics", "plots"):
            for out in spec.get(key, []):
                path = out if isinstance(out, str) else next(iter(out))
                assert path.startswith("${"), f"dvc.yaml stage {stage}: {path} is not one of the path params"
        for d in spec["deps"]:
            path = d if isinstance(d, str) else next(iter(d))
            assert path.startswith(("pipeline/", "${")), f"dvc.yaml stage {stage}: dep {path} is not a path param"
