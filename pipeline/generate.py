"""Images from a trained generator, one per seed: the same image for a seed whichever way it is asked for
(`artgan generate`, the MLflow pyfunc model behind `mlflow models serve`, a registry download).

A generator file is an artgan checkpoint (`models/checkpoint.pt`, or the generator-only copy evaluate puts
in the registered model); `pipeline.artifacts.read_checkpoint` checks it and names the file when it is not one.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np

from pipeline.artifacts import generator_from, read_checkpoint
from pipeline.errors import ArtganError, first_line
from pipeline.imaging import to_uint8


class Sampler:
    """A generator in eval mode with what it needs to draw: z_dim, classes, image size."""

    def __init__(self, ckpt: dict, ema: bool = True):
        self.G = generator_from(ckpt, ema)
        self.z_dim = int(ckpt["config"]["model"]["z_dim"])
        self.classes = [str(c) for c in (ckpt.get("classes") or [])]
        self.image_size = int(ckpt["config"]["data"]["image_size"])
        self.step = int(ckpt.get("step") or 0)

    @classmethod
    def from_file(cls, path: Path, ema: bool = True) -> "Sampler":
        ckpt = read_checkpoint(path)
        try:
            return cls(ckpt, ema=ema)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ArtganError(
                f"{path}: its generator weights do not fit the architecture it records "
                f"({first_line(exc)}); re-run `artgan train`"
            ) from None

    def latents(self, seeds: list[int]):
        """One latent per seed, each from its own generator: seed k draws the same z in any batch."""
        import torch

        return torch.cat([torch.randn(1, self.z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds])

    def labels(self, seeds: list[int], labels: list | None = None):
        """Class indices for a conditional generator: given (index or class name) or `seed mod n_classes`."""
        import torch

        if not self.classes:
            if labels is not None:
                raise ArtganError(
                    f"label {labels[0]!r}: this generator is unconditional (trained without data.label); "
                    "leave the label out"
                )
            return None
        n = len(self.classes)
        if labels is None:
            return torch.tensor([int(s) % n for s in seeds])
        out = []
        for value in labels:
            if isinstance(value, str) and value in self.classes:
                out.append(self.classes.index(value))
            elif str(value).lstrip("-").isdigit() and 0 <= int(value) < n:
                out.append(int(value))
            else:
                raise ArtganError(
                    f"label {value!r} is not a class of this generator (0..{n - 1} or one of: "
                    f"{', '.join(self.classes[:20])}{' ...' if n > 20 else ''})"
                )
        return torch.tensor(out)

    def images(self, seeds: list[int], labels: list | None = None, batch_size: int = 64) -> np.ndarray:
        """uint8 N×S×S×3, one image per seed."""
        import torch

        seeds = [int(s) for s in seeds]
        y = self.labels(seeds, labels)
        out = []
        with torch.no_grad():
            for i in range(0, len(seeds), batch_size):
                z = self.latents(seeds[i : i + batch_size])
                out.append(to_uint8(self.G(z, None if y is None else y[i : i + batch_size])).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.image_size, self.image_size, 3), np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def png_base64(image: np.ndarray) -> str:
    return base64.b64encode(png_bytes(image)).decode("ascii")
