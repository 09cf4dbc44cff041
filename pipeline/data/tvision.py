"""torchvision:<Name> — the datasets of the seed tutorials (MNIST, FashionMNIST, CIFAR10, CelebA).

The torchvision class reads its usual layout under `<data.download_dir>/torchvision`; it downloads
only when the files are not there. The training split is used; labels are the class names.
Array datasets become PNG files (lossless); CelebA's JPEG files are copied as they are.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

from pipeline.errors import ArtganError

DATASETS = ("MNIST", "FashionMNIST", "CIFAR10", "CelebA")


def _open(name: str, root: Path, timeout: float, what: str):
    try:
        import torchvision.datasets as tvd
    except ImportError:
        raise ArtganError(f"{what}: the `torchvision` package is missing; pip install torchvision") from None
    cls = getattr(tvd, name)
    kwargs = {"split": "train", "target_type": []} if name == "CelebA" else {"train": True}
    try:
        return cls(str(root), download=False, **kwargs)
    except RuntimeError:  # not there (or incomplete): download it once
        pass
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        return cls(str(root), download=True, **kwargs)
    except Exception as exc:  # noqa: BLE001 - network, checksum and archive errors all end here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtganError(
            f"{what}: the files are not under {root} and downloading them failed "
            f"({type(exc).__name__}: {first}); check the network, or put the files there "
            "in torchvision's layout"
        ) from None
    finally:
        socket.setdefaulttimeout(old)


def fetch_torchvision(cfg, out_dir: Path) -> list[dict]:
    spec = cfg.data.source
    what = f"data.source {spec!r}"
    name = spec.split(":", 1)[1]
    if name not in DATASETS:
        raise ArtganError(f"{what}: unknown torchvision dataset {name!r}; known: {', '.join(DATASETS)}")
    root = Path(cfg.data.download_dir) / "torchvision"
    ds = _open(name, root, cfg.data.timeout, what)
    n = len(ds)
    limit = min(n, cfg.data.max_images) if cfg.data.max_images else n
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True)
    rows: list[dict] = []
    if name == "CelebA":
        folder = Path(ds.root) / ds.base_folder / "img_align_celeba"
        for filename in ds.filename[:limit]:
            rel = Path("images") / filename
            shutil.copyfile(folder / filename, out_dir / rel)
            rows.append({"path": rel.as_posix(), "name": Path(filename).stem, "label": None})
        return rows

    import numpy as np
    from PIL import Image

    data = ds.data.numpy() if hasattr(ds.data, "numpy") else np.asarray(ds.data)
    targets = [int(t) for t in ds.targets[:limit]]
    width = len(str(n - 1))
    for i in range(limit):
        rel = Path("images") / f"{i:0{width}d}.png"
        Image.fromarray(np.ascontiguousarray(data[i])).save(out_dir / rel, format="PNG")
        rows.append({"path": rel.as_posix(), "name": f"{i:0{width}d}", "label": str(ds.classes[targets[i]])})
    return rows
