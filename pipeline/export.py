"""`artgan export --onnx`: the trained generator (or translator) as an ONNX model, checked against torch with onnxruntime.

The model has the input `z` (N×z_dim float32) and, for a class-conditional generator, `y` (N int64 class
indices in [0, n_classes)); its output `images` is N×3×S×S float32 in [-1, 1] (the generator's tanh), the
batch dimension N dynamic. What a consumer needs to drive it is in the model's metadata_props: z_dim,
n_classes, classes (a JSON list, index = label), image_size, arch, step, weights (ema | raw), mlflow_run_id.
A translator checkpoint (task translate) exports its input -> style generator: input `image` (N×3×S×S float32 in
[-1, 1]), output `translated` (the same), metadata task, model, image_size, step, weights, resize, background.

Exporter: torch.export + onnxscript (`torch.onnx.export(dynamo=True)`, torch's default since 2.9) for the
default opset and any opset >= 18; the TorchScript exporter (`dynamo=False`, deprecated in torch but the
only one that writes older opsets) for `--opset` below 18, for runtimes that predate opset 18.

The file is written to a temporary sibling, run with onnxruntime (CPU) on seeded batches of several sizes
and compared with the torch generator; only when every output is within TOLERANCE is it renamed into
place, so a failed export or check never leaves a complete-looking .onnx.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.artifacts import generator_from, read_checkpoint
from pipeline.errors import ArtganError
from pipeline.errors import first_line as _first_line
from pipeline.io import atomic_path

# Max abs difference allowed between onnxruntime and torch on [-1, 1] outputs. Measured differences are
# ~3e-8 (mlp, dcgan, vae) to ~2.5e-6 (resnet, 32 to 128 px); one uint8 level is 1/127.5 ≈ 7.8e-3.
TOLERANCE = 1e-4
EXPORT_BATCH = 2  # the example batch traced; the check runs other sizes too, so the dynamic axis is exercised
CHECK_BATCHES = (1, 2, 7)
CHECK_SEED = 0
DYNAMO_MIN_OPSET = 18  # below this the torch.export-based exporter cannot write the opset
TRANSLATED = "translated"  # a translator's output name (its input is `image`)


def load_generator(ckpt: dict, path: Path, ema: bool = True):
    """(G in eval mode, which weights: "ema" | "raw")."""
    weights = "ema" if ema and ckpt.get("generator_ema") is not None else "raw"
    try:
        G = generator_from(ckpt, ema)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise ArtganError(
            f"{path}: its generator weights do not fit the architecture it records "
            f"({_first_line(exc)}); re-run `artgan train`"
        ) from None
    return G, weights


def _example(z_dim: int, n_classes: int, n: int, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, z_dim, generator=g)
    if not n_classes:
        return (z,)
    return z, torch.randint(0, n_classes, (n,), generator=g)


def _export(G, z_dim: int, n_classes: int, opset: int | None):
    """(onnx ModelProto, exporter name) of a generator: z[, y] -> images."""
    args = _example(z_dim, n_classes, EXPORT_BATCH, seed=12345)
    return _export_module(G, args, ["z", "y"][: len(args)], "images", opset)


def _export_module(G, args: tuple, names: list[str], output: str, opset: int | None):
    """(onnx ModelProto, exporter name) of `G` traced on `args`, inputs `names` and the output `output`, batch dynamic."""
    import contextlib
    import io
    import logging
    import warnings

    import onnx
    import torch

    dynamo = opset is None or opset >= DYNAMO_MIN_OPSET
    buf = io.BytesIO()
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    with contextlib.ExitStack() as stack:
        # deprecation / tracer warnings about the shape checks, axis naming, version-conversion tracebacks:
        # the outcome is checked below and any failure is one line
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        stack.callback(lambda: [lg.setLevel(level) for lg, level in zip(loggers, levels)])
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
        if dynamo:
            batch = torch.export.Dim("batch")
            program = torch.onnx.export(
                G,
                args,
                None,
                input_names=names,
                output_names=[output],
                dynamo=True,
                opset_version=opset,
                dynamic_shapes=tuple({0: batch} for _ in args),
                verbose=False,
            )
            return program.model_proto, "torch.export"
        torch.onnx.export(
            G,
            args,
            buf,
            input_names=names,
            output_names=[output],
            dynamo=False,
            opset_version=opset,
            dynamic_axes={n: {0: "batch"} for n in [*names, output]},
        )
    return onnx.load_from_string(buf.getvalue()), "torchscript"


def _opset(proto) -> int:
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _checked_export(checkpoint, opset: int | None, export):
    """`export()`'s (ONNX proto, exporter name), or one line: the export failed, or wrote another opset than asked."""
    try:
        proto, exporter = export()
    except Exception as exc:
        raise ArtganError(
            f"{checkpoint}: ONNX export failed{f' at opset {opset}' if opset else ''} ({_first_line(exc)})"
        ) from None
    got_opset = _opset(proto)
    if opset is not None and got_opset != opset:
        raise ArtganError(
            f"--opset {opset}: the exporter could not write that opset (it wrote {got_opset}); "
            "leave --opset out for the exporter's default"
        )
    return proto, exporter


def _check(path: Path, G, z_dim: int, n_classes: int) -> float:
    """The max abs difference between onnxruntime on `path` and torch over seeded batches of CHECK_BATCHES."""
    import numpy as np
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for i, n in enumerate(CHECK_BATCHES):
        args = _example(z_dim, n_classes, n, seed=CHECK_SEED + i)
        with torch.no_grad():
            ref = G(*args)
        feeds = {name: a.numpy() for name, a in zip(["z", "y"], args)}
        got = session.run(["images"], feeds)[0]
        if got.shape != tuple(ref.shape):
            raise ArtganError(f"ONNX output has shape {got.shape} for a batch of {n}, torch {tuple(ref.shape)}")
        worst = max(worst, float(np.abs(got - ref.numpy()).max()))
    return worst


def _write_checked(out: Path, data: bytes, check) -> float | None:
    """Write the model bytes to `out` atomically, after `check(temp path)` (the max abs difference) is within
    TOLERANCE; None when not checked."""
    diff = None
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
        if check is not None:
            diff = check(tmp)
            if not diff <= TOLERANCE:  # NaN fails too
                raise ArtganError(
                    f"{out}: onnxruntime output differs from torch by {diff:.3g} (tolerance "
                    f"{TOLERANCE:g}); the ONNX model was not written"
                )
    return diff


def _images(size: int, n: int, seed: int):
    """A seeded batch of N×3×S×S images in [-1, 1], as a translator takes them."""
    import torch

    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)).mul(2).sub(1)


def _check_translator(path: Path, G, size: int) -> float:
    """The max abs difference between onnxruntime on `path` and torch over seeded image batches of CHECK_BATCHES."""
    import numpy as np
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for i, n in enumerate(CHECK_BATCHES):
        x = _images(size, n, CHECK_SEED + i)
        with torch.no_grad():
            ref = G(x)
        got = session.run([TRANSLATED], {"image": x.numpy()})[0]
        if got.shape != tuple(ref.shape):
            raise ArtganError(f"ONNX output has shape {got.shape} for a batch of {n}, torch {tuple(ref.shape)}")
        worst = max(worst, float(np.abs(got - ref.numpy()).max()))
    return worst


def export_translator(
    checkpoint: Path, out: Path, ema: bool = True, opset: int | None = None, check: bool = True
) -> dict:
    """Export the input -> style generator of a translator checkpoint to ONNX at `out` (input `image`, N×3×S×S float32
    in [-1, 1]; output `translated`, the same shape and range); checked against torch like a generator's."""
    import onnx

    from pipeline.translation.translator import Translator, read_translator

    ckpt = read_translator(checkpoint, "pass a translator or generator checkpoint")
    tr = Translator.from_checkpoint(ckpt, checkpoint, ema)
    proto, exporter = _checked_export(
        checkpoint,
        opset,
        lambda: _export_module(tr.G, (_images(tr.image_size, EXPORT_BATCH, 12345),), ["image"], TRANSLATED, opset),
    )
    meta = {
        "task": "translate",
        "model": tr.model,
        "image_size": tr.image_size,
        "step": tr.step,
        "weights": tr.weights,
        "mlflow_run_id": ckpt.get("mlflow_run_id") or "",
        "resize": tr.resize,
        "background": json.dumps(list(tr.background)),
        "inputs": f"image: N×3×{tr.image_size}×{tr.image_size} float32 in [-1, 1] (RGB; x / 127.5 - 1 of 0..255, "
        "made square by `resize` onto `background` as artgan preprocess does)",
        "outputs": f"{TRANSLATED}: N×3×S×S float32 in [-1, 1] (RGB; (x + 1) * 127.5 gives 0..255)",
    }
    onnx.helper.set_model_props(proto, {k: str(v) for k, v in meta.items()})
    proto.doc_string = f"artgan {tr.model} translator ({tr.weights} weights, step {tr.step})"
    data = proto.SerializeToString()
    diff = _write_checked(out, data, (lambda p: _check_translator(p, tr.G, tr.image_size)) if check else None)
    return {
        "path": str(out),
        "bytes": len(data),
        "opset": _opset(proto),
        "exporter": exporter,
        "weights": tr.weights,
        "model": tr.model,
        "image_size": tr.image_size,
        "max_abs_diff": diff,
        "tolerance": TOLERANCE,
        "check_batches": list(CHECK_BATCHES) if check else [],
    }


def export_onnx(checkpoint: Path, out: Path, ema: bool = True, opset: int | None = None, check: bool = True) -> dict:
    """Export the generator of an artgan checkpoint to ONNX at `out`; with `check`, verify it with onnxruntime
    against torch first (ArtganError above TOLERANCE, `out` then left as it was). Returns the figures."""
    checkpoint, out = Path(checkpoint), Path(out)
    if opset is not None and opset < 7:
        raise ArtganError(f"--opset {opset}: ONNX opsets start at 7; leave it out for the exporter's default")
    if out.is_dir():
        raise ArtganError(f"{out}: a directory; pass the file to write with --out (e.g. models/generator.onnx)")
    ckpt = read_checkpoint(checkpoint)
    from pipeline.translation.translator import made_by

    if made_by(ckpt) == "translate":
        return export_translator(checkpoint, out, ema, opset, check)
    G, weights = load_generator(ckpt, checkpoint, ema)
    m = ckpt["config"]["model"]
    z_dim, classes = int(m["z_dim"]), [str(c) for c in (ckpt.get("classes") or [])]
    n_classes = len(classes)
    proto, exporter = _checked_export(checkpoint, opset, lambda: _export(G, z_dim, n_classes, opset))
    meta = {
        "z_dim": z_dim,
        "n_classes": n_classes,
        "classes": json.dumps(classes),
        "image_size": int(ckpt["config"]["data"]["image_size"]),
        "arch": m["arch"],
        "step": int(ckpt.get("step") or 0),
        "weights": weights,
        "mlflow_run_id": ckpt.get("mlflow_run_id") or "",
        "inputs": "z: N×z_dim float32 ~ N(0, 1)" + ("; y: N int64 class indices" if n_classes else ""),
        "outputs": "images: N×3×S×S float32 in [-1, 1] (RGB; (x + 1) * 127.5 gives 0..255)",
    }
    import onnx

    onnx.helper.set_model_props(proto, {k: str(v) for k, v in meta.items()})
    proto.doc_string = f"artgan {m['arch']} generator ({weights} weights, step {meta['step']})"
    data = proto.SerializeToString()
    diff = _write_checked(out, data, (lambda p: _check(p, G, z_dim, n_classes)) if check else None)
    return {
        "path": str(out),
        "bytes": len(data),
        "opset": _opset(proto),
        "exporter": exporter,
        "weights": weights,
        "arch": m["arch"],
        "z_dim": z_dim,
        "n_classes": n_classes,
        "image_size": meta["image_size"],
        "max_abs_diff": diff,
        "tolerance": TOLERANCE,
        "check_batches": list(CHECK_BATCHES) if check else [],
    }
