"""docs/params.md is the params reference generated from the config schema (scripts/params_doc.py): the committed
file must be what the script writes now, so a changed default, key or comment cannot leave it behind."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from helpers import load_script

from pipeline.config import Config

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "params_doc.py"


def _module():
    return load_script(SCRIPT)


def test_docs_params_md_is_current():
    mod = _module()
    committed = (ROOT / "docs" / "params.md").read_text(encoding="utf-8")
    assert committed == mod.build(), (
        f"docs/params.md is not current (params.yaml or pipeline/config.py changed); regenerate it with: {mod.COMMAND}"
    )


def test_every_key_of_the_schema_has_a_row_with_a_description():
    text = _module().build()
    cells = [re.split(r"(?<!\\)\|", line)[1:-1] for line in text.splitlines() if line.startswith("| `")]
    rows = {c[0].strip().strip("`"): c for c in cells}
    keys = set()
    for name, field in Config.model_fields.items():
        sub = getattr(field.annotation, "model_fields", None)
        keys |= {f"{field.alias or name}.{f.alias or n}" for n, f in sub.items()} if sub else {field.alias or name}
    assert set(rows) == keys and set(Config().flat()) <= keys, set(rows) ^ keys
    assert all(len(c) == 5 for c in cells), [c for c in cells if len(c) != 5]
    undescribed = [k for k, c in rows.items() if not c[-1].strip()]
    assert not undescribed, f"keys without a description (comment them in params.yaml): {undescribed}"


def test_the_check_mode_fails_on_a_stale_file_and_names_the_command(tmp_path):
    stale = tmp_path / "params.md"
    stale.write_text("# Params reference\n\nold\n")
    res = subprocess.run([sys.executable, str(SCRIPT), "--check", "--out", str(stale)], capture_output=True, text=True)
    assert res.returncode == 1 and "scripts/params_doc.py" in res.stderr
    assert subprocess.run([sys.executable, str(SCRIPT), "--out", str(stale)], capture_output=True).returncode == 0
    res = subprocess.run([sys.executable, str(SCRIPT), "--check", "--out", str(stale)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
