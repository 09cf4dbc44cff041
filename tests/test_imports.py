"""The shape of the code: shared names live in modules of their own, so no stage is imported for a name."""

from __future__ import annotations

from importgraph import cycles, imports, modules

CLI = "pipeline/cli.py"


def test_only_the_cli_imports_the_stages():
    offenders = {m: sorted(i for i in imports(m) if i.startswith("pipeline/stages/")) for m in modules() if m != CLI}
    offenders = {m: i for m, i in offenders.items() if i}
    assert not offenders, f"these modules import stage modules (move the shared name to its own module): {offenders}"


def test_no_import_cycle_among_pipeline_modules():
    assert cycles() == []


def test_the_graph_sees_function_level_imports():
    """The check would pass vacuously if the reader missed imports inside functions (most of ours are)."""
    assert "pipeline/training/loop.py" in imports("pipeline/stages/train.py")
    assert "pipeline/generate.py" in imports(CLI)
