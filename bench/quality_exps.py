"""Write the `dvc exp run --queue` sweep into docs/quality.md: the `dvc exp show` table and each experiment's grid.

    dvc exp run --queue -n NAME -S train.threads=1 -S eval.curve_samples=0 -S registry.enabled=false -S ...
    dvc queue start -j 1            # one training at a time
    python bench/quality_exps.py --rev <the commit the experiments were queued on> [--rev ...] [--sweep NAME]

For each finished experiment of the given baseline commits it reads the params and reports/metrics.json that
`dvc exp show --json` lists, the params it changed against its baseline, and its grid (render/grid.png, from
the MLflow run named after the experiment in the repository's store). It replaces the part of docs/quality.md
between the sweep markers, and leaves the rest of the page alone. Experiments that share the tried params and
differ only in `train.seed` are summarised as a mean over their seeds too.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def markers(sweep: str) -> tuple[str, str]:
    """The comments around one sweep's section; each sweep (a repository the experiments ran in) keeps its own."""
    tag = f"dvc-exp-sweep {sweep}" if sweep else "dvc-exp-sweep"
    return f"<!-- {tag}: written by bench/quality_exps.py -->", f"<!-- /{tag} -->"


PROTOCOL = {
    "train.threads",
    "train.snapshot_every",
    "eval.curve_samples",
    "registry.enabled",
}  # how a row ran, not what it tried
METRICS = ("fid", "kid_mean", "kid_std", "precision", "recall")


def flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("filter",):
            out |= flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


@functools.cache
def _defaults() -> dict:
    """Every param's default, flattened like the params (from the typed config, read once)."""
    sys.path.insert(0, str(REPO))
    from pipeline.config import Config

    return flat(Config().model_dump())


def _new_default(key: str, value, base_params: dict) -> bool:
    """A param the baseline's params.yaml did not have yet, at the value every run had before it existed (its
    default): not something the experiment tried."""
    return key not in base_params and _defaults().get(key, object()) == value


def _data(rev: dict) -> tuple[dict, dict]:
    data = rev.get("data") or {}
    params = flat(((data.get("params") or {}).get("params.yaml") or {}).get("data") or {})
    metrics = ((data.get("metrics") or {}).get("reports/metrics.json") or {}).get("data") or {}
    return params, metrics


def experiments(revs: list[str]) -> list[dict]:
    dvc = Path(sys.executable).parent / "dvc"
    args = [str(dvc), "exp", "show", "--json", "--no-pager"] + [a for r in revs for a in ("--rev", r)]
    show = json.loads(subprocess.run(args, cwd=REPO, check=True, capture_output=True, text=True).stdout)
    rows = []
    for commit in show:
        if commit["rev"] == "workspace":
            continue
        base_params, base_metrics = _data(commit)
        rows.append(
            {
                "name": f"baseline {commit['rev'][:7]}",
                "changed": {},
                "params": base_params,
                "metrics": base_metrics,
                "baseline": True,
            }
        )
        for exp in commit.get("experiments") or []:
            if (exp.get("executor") or {}).get("state", "success") != "success":
                continue  # queued, running or failed: its metrics are not its own yet
            for rev in exp.get("revs") or []:
                params, metrics = _data(rev)
                if not metrics.get("fid"):
                    continue  # queued, running or failed
                if params.get("task", "generate") != "generate":
                    continue  # a translate experiment queued beside the sweep: docs/translation.md's, not this page's
                changed = {
                    k: v
                    for k, v in params.items()
                    if base_params.get(k) != v and k not in PROTOCOL and not _new_default(k, v, base_params)
                }
                rows.append(
                    {
                        "name": rev.get("name") or rev["rev"][:7],
                        "changed": changed,
                        "params": params,
                        "metrics": metrics,
                        "baseline": False,
                    }
                )
    return rows


def grid_of(name: str, dst: Path) -> bool:
    """The experiment's render/grid.png from the MLflow run named after it (the repository's store). An experiment
    that resumed an earlier run's checkpoint logs into that run instead: copy its reports/render/grid.png to `dst`
    by hand (`dvc exp apply NAME` brings it back)."""
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{REPO / 'mlflow.db'}")
    from mlflow import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name("artgan")
    runs = client.search_runs([exp.experiment_id], f"attributes.run_name = '{name}'") if exp else []
    for run in runs:
        try:
            path = client.download_artifacts(run.info.run_id, "render/grid.png", str(dst.parent))
        except Exception:
            continue
        shutil.move(path, dst)
        return True
    return False


def tried(changed: dict) -> str:
    items = {k: v for k, v in changed.items() if k != "train.seed"}
    return ", ".join(f"`{k}={v}`" for k, v in items.items()) or "the baseline's params"


def how_run(rows: list[dict], workers: int = 2) -> str:
    """How the experiments ran, from their params: up to `workers` one-thread queue workers side by side, or one
    at a time."""
    exps = [r for r in rows if not r["baseline"]] or rows
    queued = [r["name"] for r in exps if r["params"].get("train.threads") == 1]
    alone = [r["name"] for r in exps if r["params"].get("train.threads") != 1]
    pair = (
        f"run by at most {workers} queue workers (`dvc queue start -j {workers}`), one torch thread each "
        "(`train.threads=1`)"
    )
    if not alone:
        return f"Queued with `dvc exp run --queue` and {pair}"
    if not queued:
        return "Run one at a time with `dvc exp run` on all cores (`train.threads=0`)"
    return (
        f"{', '.join(queued)}: queued with `dvc exp run --queue` and {pair}; {', '.join(alone)}: run one at a time "
        "on all cores (`train.threads=0`)"
    )


def curve(rows: list[dict]) -> str:
    exps = [r for r in rows if not r["baseline"]] or rows
    with_curve = [r["name"] for r in exps if r["params"].get("eval.curve_samples")]
    if not with_curve:
        return " without the FID curve"
    if len(with_curve) == len(exps):
        return " with the FID curve"
    return f" (with the FID curve for {', '.join(with_curve)} only)"


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux; platform's guess elsewhere): the VM's machine can change."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def seed_groups(rows: list[dict]) -> dict[str, list[dict]]:
    """The recipes run at several seeds: what they tried -> their rows, by seed.

    A seed group is one recipe: the same params (all but the seed and the protocol's), whichever baseline each
    run was queued on (a run queued on a commit whose defaults are the recipe changes nothing against it). Runs of
    one recipe at the same seed are not seeds but other code (a fix between two baselines): such a recipe is
    not summarised."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if not r["baseline"]:
            recipe = {k: v for k, v in r["params"].items() if k != "train.seed" and k not in PROTOCOL}
            groups.setdefault(tuple(sorted((k, repr(v)) for k, v in recipe.items())), []).append(r)
    seed = lambda r: r["params"].get("train.seed", 0)  # noqa: E731
    return {
        max((tried(r["changed"]) for r in v), key=len): sorted(v, key=seed)
        for v in groups.values()
        if len(v) > 1 and len({seed(r) for r in v}) == len(v)
    }


def section(rows: list[dict], img_dir: Path, machine: str, date: str, sweep: str, workers: int = 2) -> list[str]:
    begin, end = markers(sweep)
    lines = [
        begin,
        "",
        f"## The `dvc exp` sweep{' ' + sweep if sweep else ''}",
        "",
        f"{how_run(rows, workers)}, on {machine}, {date}; the protocol is the default evaluate{curve(rows)}. The table is "
        "`dvc exp show`'s, less the columns every row shares. Each baseline row is the commit the experiments "
        "below it were queued on.",
        "",
        "| experiment | tried | seed | FID | KID ×1000 | precision | recall |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m = r["metrics"]
        kid = f"{1000 * m['kid_mean']:.1f} ± {1000 * m.get('kid_std', 0):.1f}" if "kid_mean" in m else "–"
        lines.append(
            f"| {r['name']} | {'–' if r['baseline'] else tried(r['changed'])} | "
            f"{r['params'].get('train.seed', 0)} | {m['fid']:.1f} | {kid} | {m['precision']:.3f} | "
            f"{m['recall']:.3f} |"
        )
    seeded = seed_groups(rows)
    if seeded:
        lines += [
            "",
            "Over seeds (mean ± standard deviation):",
            "",
            "| tried | seeds | FID | KID ×1000 | precision | recall |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for k, v in seeded.items():

            def ms(key: str, scale: float = 1.0) -> str:
                xs = [scale * r["metrics"][key] for r in v]
                return (
                    f"{statistics.mean(xs):.{1 if scale != 1 or key == 'fid' else 3}f} ± "
                    f"{statistics.stdev(xs):.{1 if scale != 1 or key == 'fid' else 3}f}"
                )

            seeds = ", ".join(str(r["params"].get("train.seed", 0)) for r in v)
            lines.append(
                f"| {k} | {seeds} | {ms('fid')} | {ms('kid_mean', 1000)} | {ms('precision')} | {ms('recall')} |"
            )
    lines += ["", "Grids (8×8, EMA generator, `render.seed` 0):", ""]
    for r in rows:
        if r["baseline"]:
            continue
        dst = img_dir / f"exp-{r['name']}.png"
        if dst.is_file() or grid_of(r["name"], dst):  # an experiment's grid, once written, is kept
            lines += [
                f"**{r['name']}**: {tried(r['changed'])}, seed {r['params'].get('train.seed', 0)} "
                f"(FID {r['metrics']['fid']:.1f})",
                "",
                f"![{r['name']}](img/quality/{dst.name})",
                "",
            ]
    return lines + [end]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", action="append", required=True, help="a baseline commit the experiments were queued on")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "quality.md")
    ap.add_argument("--machine", default=f"{cpu_name()}, {os.cpu_count()} cores")
    ap.add_argument("--date", default=__import__("datetime").date.today().isoformat())
    ap.add_argument(
        "--sweep", default="", help="the sweep's name: its own section, so sweeps run in other clones stay on the page"
    )
    ap.add_argument("--workers", type=int, default=2, help="the most queue workers that ran side by side")
    args = ap.parse_args()
    img_dir = args.out.parent / "img" / "quality"
    img_dir.mkdir(parents=True, exist_ok=True)
    new = section(experiments(args.rev), img_dir, args.machine, args.date, args.sweep, args.workers)
    begin, end = markers(args.sweep)
    text = args.out.read_text() if args.out.exists() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + "\n".join(new) + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + "\n".join(new) + "\n"
    tmp = args.out.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
