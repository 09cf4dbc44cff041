"""Test tiers as pytest markers (registered in pyproject.toml), so each can be selected on its own:

- e2e: runs the real `dvc repro`, `artgan retrain`, torchrun or the stages as subprocesses (marked in the modules);
- browser: opens a page in Debian's headless Chromium (`/usr/bin/chromium`);
- postgres: starts a throwaway PostgreSQL cluster (tests/pgserver.py);
- gpu: needs a CUDA device (skipped without one);
- slow: trains, scores, registers or exports tiny models in-process, seconds each (marked in the modules).

`make test` runs them all; `make test-fast` runs none of them (`pytest -m "not e2e and not browser and not postgres
and not gpu and not slow"`). Modules mark e2e and slow themselves; the other three are applied here, from what a test uses, so that a
new test that opens the browser, starts PostgreSQL or needs CUDA joins its tier without remembering to say so.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def mlflow_dir(tmp_path_factory):
    """One MLflow tracking store per test module (creating a store costs seconds); each test looks its runs up by
    their own ids. Use it with helpers.isolate_mlflow(monkeypatch, tmp_path, mlflow_dir)."""
    return tmp_path_factory.mktemp("mlflow")


CHROMIUM = Path("/usr/bin/chromium")  # Debian's headless Chromium (`make setup` installs it)


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium through playwright, one per test module."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} not found: the report tests open index.html in Debian's headless Chromium; "
            "run `make setup` (it installs the `chromium` package)",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
        yield b
        b.close()


BROWSER_FIXTURES = {"browser", "chromium"}  # tests/test_report.py's playwright browser, test_mlflow_ui's chromium
POSTGRES_FIXTURES = {"postgres"}  # tests/test_team_server.py's PostgresCluster
CUDA_REASONS = ("needs a cuda device", "needs cuda", "requires cuda")


def _needs_cuda(item: pytest.Item) -> bool:
    """A test skipped unless CUDA is there (`skipif(not torch.cuda.is_available(), reason="needs a CUDA device")`,
    on the test, its module or its parameter)."""
    return any(
        any(r in str(m.kwargs.get("reason", "")).lower() for r in CUDA_REASONS) for m in item.iter_markers("skipif")
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & BROWSER_FIXTURES:
            item.add_marker(pytest.mark.browser)
        if used & POSTGRES_FIXTURES or item.module.__name__ == "test_team_server":
            item.add_marker(pytest.mark.postgres)
        if _needs_cuda(item):
            item.add_marker(pytest.mark.gpu)
