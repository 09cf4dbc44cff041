"""What dvc.lock says about the stages that produced a model, as the MLflow run records it.

**Stage hash.** A stage's hash is DVC's own run-cache key for it: the SHA-256 of the stage's `dvc.lock`
entry as JSON (sorted keys), with the outputs reduced to their paths and every `size` / `nfiles` field
left out. It covers the command, every dependency's path and content hash (md5), the params the stage
reads and where it writes, so two runs of a stage share the hash exactly when they did the same
computation on the same inputs. It is the folder `.dvc/cache/runs/<hash[:2]>/<hash>/` where DVC files
the run in its run cache (from which `dvc repro` / `dvc exp run` restore a stage without running it;
DVC skips that cache for a stage with a `cache: false` output other than a metric or plot, such as
preprocess's reports/duplicates.csv, but the key is the same function of the lock entry). The outputs'
content hashes are left out of the key, as DVC leaves them out; they are in the lock file, which the run
keeps beside the tags (less the running stage's own entry, see below).

**When dvc.lock holds what.** `dvc repro` and `dvc exp run` (a queued experiment too, in its temporary
workspace) rewrite dvc.lock after each stage finishes. While a stage runs (DVC exports its name as
`DVC_STAGE`) the entries of the stages upstream of it describe this run, and its own entry, if any,
describes its previous run. render is the last stage and depends on every other stage, so from render
the record is every entry except render's own.

Functions over a file (and `log_dvc_lock`, over a pipeline.tracking.Run): no MLflow, no DVC import (the lock is parsed with ruamel.yaml's safe
loader, YAML 1.2, as DVC parses it, so values such as `1e-05` keep DVC's types).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

LOCK_FILE = "dvc.lock"
TAG_PREFIX = "dvc.stage."
_EXCLUDE = ("size", "nfiles")  # DVC's run-cache key leaves out Meta.PARAM_SIZE and Meta.PARAM_NFILES


def parse(text: str) -> dict:
    """A dvc.lock's text as DVC reads it (an empty file is an empty mapping)."""
    from ruamel.yaml import YAML

    return YAML(typ="safe").load(text) or {}


def load(path: str | os.PathLike = LOCK_FILE) -> dict | None:
    """The parsed lock file, or None where there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    return parse(path.read_text(encoding="utf-8"))


def _drop(value, exclude=_EXCLUDE):
    if isinstance(value, list):
        return [_drop(v, exclude) for v in value]
    if isinstance(value, dict):
        return {k: _drop(v, exclude) for k, v in value.items() if k not in exclude}
    return value


def stage_hash(entry: dict) -> str:
    """DVC's run-cache key of one stage's lock entry (see the module docstring)."""
    key = dict(entry)
    key["outs"] = [out["path"] for out in entry.get("outs", [])]
    data = json.dumps(_drop(key), sort_keys=True).encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def stage_hashes(lock: dict, exclude: str | None = None) -> dict[str, str]:
    """{stage name: stage hash} of every stage in a parsed lock file, in its order, but `exclude`."""
    stages = (lock or {}).get("stages") or {}
    return {name: stage_hash(entry) for name, entry in stages.items() if name != exclude}


def tags(hashes: dict[str, str]) -> dict[str, str]:
    """The stage hashes as MLflow tags: `dvc.stage.<name>` = hash."""
    return {f"{TAG_PREFIX}{name}": h for name, h in hashes.items()}


def current(path: str | os.PathLike = LOCK_FILE, running: str | None = None) -> tuple[dict[str, str], str] | None:
    """(stage hashes, lock text) that describe the stages of this run, seen from the stage `running`.

    None outside DVC (`running` None: a stage run by hand, where dvc.lock may describe another run) or
    where there is no dvc.lock. The running stage's own entry (its previous run) is left out of the
    hashes and of the returned text, so both say only what this run did."""
    if not running:
        return None
    path = Path(path)
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    lock = parse(text)
    stages = lock.get("stages") or {}
    if running in stages:
        text = _without_stage(lock, running)
    return stage_hashes(lock, exclude=running), text


def _without_stage(lock: dict, name: str) -> str:
    """The lock file without one stage's entry, in DVC's own YAML layout (order kept)."""
    import io

    from ruamel.yaml import YAML

    out = {k: v for k, v in lock.items() if k != "stages"}
    out["stages"] = {k: v for k, v in lock["stages"].items() if k != name}
    yaml = YAML()
    yaml.default_flow_style = False
    buf = io.StringIO()
    yaml.dump(out, buf)
    return buf.getvalue()


def project_root() -> Path:
    """The repository the runs belong to: DVC exports it as DVC_ROOT to every stage it runs, pointing at the
    user's repository even when a queued (`dvc exp run --queue`, `--temp`) experiment runs in a temporary
    copy under `.dvc/tmp/exps/` that is deleted afterwards; the working directory outside DVC."""
    return Path(os.environ.get("DVC_ROOT") or Path.cwd())


DVC_LOCK_ARTIFACT = "dvc/dvc.lock"


def log_dvc_lock(run, lock_file: str | os.PathLike = "dvc.lock") -> dict[str, str]:
    """Tag the run with the hash of every stage that dvc.lock records for this run (`dvc.stage.<name>`,
    above) and log the lock file as the artifact `dvc/dvc.lock`; returns the hashes.

    Only under DVC (DVC_STAGE names the running stage, whose own, previous entry is left out) and only
    where there is a dvc.lock: a stage run by hand logs nothing."""
    record = current(lock_file, running=os.environ.get("DVC_STAGE"))
    if record is None:
        return {}
    hashes, text = record
    run.set_tags(tags(hashes))
    run.log_text(text, DVC_LOCK_ARTIFACT)
    return hashes
