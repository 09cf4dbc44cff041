"""What the two render stages share (generation: stages/render.py; translation: translation/render.py): the
training curves read from CSV, and the render folder, written whole into a temp folder, logged to MLflow, and
followed by the report."""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import dvclock
from pipeline.config import Config
from pipeline.io import atomic_dir
from pipeline.layout import MEMORISATION, RENDER


def read_csv(path: Path) -> list[dict[str, float]]:
    """A curve CSV's rows as floats (empty cells left out; a row that is not numbers skipped); [] without the file."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = []
        for row in csv.DictReader(f):
            try:
                rows.append({k: float(v) for k, v in row.items() if v not in ("", None)})
            except ValueError:
                continue
        return rows


def fid_figure(path: Path, each: str):
    """The FID-over-training figure from the FID curve CSV at `path` (None without one); `each` names what
    every point scored, e.g. "samples" or "held-out inputs"."""
    rows = read_csv(path)
    if not rows:
        return None
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([r["step"] for r in rows], [r["fid"] for r in rows], "o-")
    ax.set(xlabel="step", ylabel="FID", title=f"FID over training ({int(rows[0].get('n_samples', 0))} {each} each)")
    fig.tight_layout()
    return fig


@dataclass
class Render:
    """The render folder being written: `save` a PIL image or a matplotlib figure under a name."""

    tmp: Path
    written: list[str] = field(default_factory=list)
    report: Path | None = None

    def save(self, img, name: str, **kw) -> None:
        (self.tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (img.savefig if hasattr(img, "savefig") else img.save)(self.tmp / name, **kw)  # a figure or a PIL image
        self.written.append(name)


@contextlib.contextmanager
def render_dir(cfg: Config, mlrun, signature: str, curves: Callable[[Path], tuple]) -> Iterator[Render]:
    """Yield a Render into a temp folder. After the caller's pictures it draws `curves(reports_dir)` (the loss and
    FID figures, None where there is no data) and the upscaled copies the report shows; then the folder replaces
    <reports_dir>/render whole, is logged to `mlrun`, and the report is written (`Render.report`)."""
    import matplotlib.pyplot as plt

    from pipeline.report import upscale_pictures, write_report

    reports = Path(cfg.reports_dir)
    with atomic_dir(reports / RENDER, "reports_dir", signature, stage="render") as tmp:
        out = Render(tmp)
        yield out
        for fig, name in zip(curves(reports), ("loss_curves.png", "fid_curve.png")):
            if fig is not None:
                out.save(fig, name, dpi=100)
                plt.close(fig)
        out.written.extend(upscale_pictures(tmp, reports / MEMORISATION))  # what the report shows
    mlrun.log_artifacts(reports / RENDER, artifact_path=RENDER)
    out.report = write_report(cfg)
    mlrun.log_artifact(out.report)
    dvclock.log_dvc_lock(mlrun)  # under DVC: the stage hashes of this run + dvc.lock
