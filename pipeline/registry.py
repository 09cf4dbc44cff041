"""The Model Registry side of artgan: which version is `@champion`, and where a model URI's checkpoint lives.

evaluate logs every trained generator as an MLflow model (pyfunc: seeds -> PNG) and registers it as a new
version of `registry.name`; under task translate, the translator (pyfunc: image bytes -> PNG bytes) as a version of
`translate.registry_name`, tagged artgan=translator. Each version carries its FID, the digest of the training images and the
evaluation protocol (network, sample counts, resolution) as tags. `@champion` moves to the new version only
when the champion's FID was measured on the same data digest under the same protocol and the new FID is
lower (or there is no champion yet): FIDs of different datasets or sample counts are not comparable.
`artgan promote` moves it by hand. The MLflow Model Registry calls are at the end of this module; runs are
pipeline/tracking.py's.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from pathlib import Path
from typing import Iterator

from pipeline import tracking
from pipeline.errors import ArtganError, first_line

CHAMPION = "champion"
OWNER_TAG = "artgan"  # its value (generator | translator) marks registered models artgan made: collisions are refused
DESCRIPTIONS = {
    "generator": "artgan generators (pyfunc: seeds -> PNG images)",
    "translator": "artgan translators (pyfunc: images as PNG/JPEG bytes -> translated PNG bytes)",
}
FID_NETWORK = "tf-inception-2015-12-05"
MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))?/?$")


def protocol(metrics: dict, precision: str = "fp32") -> str:
    """What makes two FIDs comparable besides the data: network, sample counts, image size, and the features'
    precision when it is not fp32 (fp32 protocols read as they did before `eval.fid_precision` existed)."""
    return (
        f"{FID_NETWORK} n_fake={metrics['fid_n_fake']} n_real={metrics['fid_n_real']} "
        f"size={metrics['image_size']}" + ("" if precision == "fp32" else f" precision={precision}")
    )


def check_name(name: str, kind: str = "generator") -> dict | None:
    """Refuse a registered model another project made (a name collision), or artgan's registered model of the other
    kind (generators and translators do not share a name), before any work; returns the registered model (None when
    there is none yet)."""
    rm = registered_model(name)
    if rm is not None and rm["tags"].get(OWNER_TAG) != kind:
        param = "registry.name" if kind == "generator" else "translate.registry_name"
        made = rm["tags"].get(OWNER_TAG)
        why = f"holds artgan {made}s" if made in DESCRIPTIONS else f"was not made by artgan (no tag artgan={kind})"
        raise ArtganError(
            f"{param}: the registered model {name!r} at {tracking.tracking_uri()} {why}; "
            f"choose another {param} in params.yaml"
        )
    return rm


def _ensure_model(name: str, kind: str) -> None:
    if check_name(name, kind) is None:
        create_registered_model(
            name,
            {OWNER_TAG: kind},
            f"{DESCRIPTIONS[kind]}; @champion has the best FID on its dataset digest and protocol",
        )


def publish(
    name: str, model_uri: str, run_id: str, fid: float, digest: str, proto: str, kind: str = "generator"
) -> dict:
    """Register `model_uri` as a new version of `name` (a registered model of artgan `kind`s); move @champion when it
    is better. Returns figures."""
    _ensure_model(name, kind)
    tags = {"fid": f"{fid:.4f}", "data_digest": digest, "fid_protocol": proto, "run_id": run_id}
    version = register_version(name, model_uri, tags)
    champion = model_version(name, alias=CHAMPION)
    if champion is None:
        promote_to, why = True, "first version"
    elif champion["tags"].get("data_digest") != digest or champion["tags"].get("fid_protocol") != proto:
        promote_to, why = (
            False,
            (
                f"champion v{champion['version']} was scored on other data or another protocol; "
                f"not comparable (`artgan promote {version}` to choose it)"
            ),
        )
    else:
        best = float(champion["tags"].get("fid", "inf"))
        promote_to = fid < best
        why = f"FID {fid:.4f} {'<' if promote_to else '>='} champion v{champion['version']}'s {best:.4f}"
    if promote_to:
        set_alias(name, CHAMPION, version)
    return {
        "registered": f"{name}/{version}",
        "champion": version if promote_to else champion["version"],
        "champion_moved": promote_to,
        "champion_reason": why,
    }


def promote(name: str, version: str, alias: str = CHAMPION) -> dict:
    """Point `name@alias` at `version` (by hand), with one-line errors for a missing model or version."""
    if registered_model(name) is None:
        raise ArtganError(_no_model(name))
    if model_version(name, version=version) is None:
        raise ArtganError(_no_version(name, version))
    before = model_version(name, alias=alias)
    set_alias(name, alias, version)
    return {"model": name, "alias": alias, "version": str(version), "previous": before["version"] if before else None}


def _no_model(name: str) -> str:
    known = registered_model_names()
    return f"registered model {name!r} does not exist at {tracking.tracking_uri()}; " + (
        f"registered models: {', '.join(known)}" if known else "nothing is registered yet (run `dvc repro`)"
    )


def _no_version(name: str, version: str) -> str:
    versions = model_versions(name)
    return f"{name!r} has no version {version}; versions: {', '.join(versions) or 'none'}"


def check_models_uri(uri: str) -> None:
    """A one-line error when a models:/ URI names no model, version or alias (before any download)."""
    m = MODELS_URI.match(uri)
    if not m:
        raise ArtganError(
            f"model URI {uri!r}: expected models:/<name>@<alias>, models:/<name>/<version>, "
            "runs:/<run id>/generator or a checkpoint path"
        )
    name, alias, version = m["name"], m["alias"], m["version"]
    rm = registered_model(name)
    if rm is None:
        if name.startswith("m-") and not alias and not version:  # a logged model id: models:/m-...
            return
        raise ArtganError(_no_model(name))
    if alias and alias not in rm["aliases"]:
        have = ", ".join(f"@{a} (v{v})" for a, v in sorted(rm["aliases"].items())) or "none"
        raise ArtganError(f"{name!r} has no alias @{alias}; its aliases: {have} (`artgan promote` sets one)")
    if version and (not version.isdigit() or model_version(name, version=version) is None):
        raise ArtganError(_no_version(name, version))
    if not alias and not version:
        raise ArtganError(f"model URI {uri!r}: add a version or alias, e.g. models:/{name}@{CHAMPION}")


@contextlib.contextmanager
def local_checkpoint(model: str) -> Iterator[Path]:
    """A checkpoint on local disk (a generator's or a translator's) for a checkpoint path or an MLflow model URI
    (models:/, runs:/): a model is downloaded to a temporary folder, removed on exit."""
    import yaml

    from pipeline.layout import CHECKPOINT_ARTIFACT

    if not model.startswith(("models:/", "runs:/")) and "://" not in model:
        yield Path(model)
        return
    if model.startswith("models:/"):
        check_models_uri(model)
    with tempfile.TemporaryDirectory(prefix="artgan-model-") as tmp:
        local = download_model(model, Path(tmp))
        try:
            flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
            rel = flavor["artifacts"][CHECKPOINT_ARTIFACT]["path"]
        except (OSError, KeyError, TypeError, yaml.YAMLError):
            raise ArtganError(
                f"model {model}: not an artgan model (no {CHECKPOINT_ARTIFACT} artifact in its MLmodel)"
            ) from None
        yield local / rel


# --- the MLflow Model Registry ---------------------------------------------------------------------------------

MODEL_NAME = "generator"  # the logged model's name inside its run
TRANSLATOR_MODEL_NAME = "translator"


def _missing(exc: BaseException) -> bool:
    return (
        getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE")
        or "not found" in str(exc).lower()
        or "does not exist" in str(exc).lower()
    )


def _log_pyfunc(name: str, python_model: str, checkpoint: Path, signature, example, what: str) -> str:
    """Log a pyfunc model of artgan's code (`python_model`: a file under pipeline/) with the checkpoint as its
    artifact, its signature, an input example and pinned requirements into the active run; returns its URI."""
    import importlib.metadata as md

    import pipeline
    from pipeline.layout import CHECKPOINT_ARTIFACT

    mlflow = tracking._mlflow()
    code = Path(pipeline.__file__).parent
    reqs = [
        f"{pkg}=={md.version(pkg).split('+')[0]}"
        for pkg in ("mlflow", "torch", "torchvision", "numpy", "pandas", "pillow")
    ]
    try:
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(code / python_model),
            artifacts={CHECKPOINT_ARTIFACT: str(checkpoint)},
            code_paths=[str(code)],
            signature=signature,
            input_example=example,
            pip_requirements=reqs,
        )
    except Exception as exc:
        raise ArtganError(f"MLflow could not log the {what} model: {first_line(exc)}") from None
    return info.model_uri


def log_generator_model(checkpoint: Path, conditional: bool) -> str:
    """Log the generator as a pyfunc model (pipeline/pyfunc_model.py, seeds -> PNG) into the active run, with
    its signature, an input example and the artgan code it runs; returns the model URI."""
    import pandas as pd

    tracking._mlflow()
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    inputs = Schema([ColSpec("long", "seed"), ColSpec("string", "label", required=False)])
    outputs = Schema([ColSpec("long", "seed"), ColSpec("string", "label"), ColSpec("string", "png")])
    example = pd.DataFrame({"seed": [0, 1]})
    if conditional:
        example["label"] = ["", ""]
    return _log_pyfunc(MODEL_NAME, "pyfunc_model.py", checkpoint, ModelSignature(inputs, outputs), example, "generator")


def log_translator_model(checkpoint: Path, image_size: int) -> str:
    """Log a translator as a pyfunc model (pipeline/translation/pyfunc.py: a column `image` of PNG/JPEG bytes in,
    a column `image` of translated PNG bytes out) into the active run, with its signature, an input example and
    the artgan code it runs; returns the model URI."""
    import io

    import pandas as pd
    from PIL import Image

    tracking._mlflow()
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    signature = ModelSignature(Schema([ColSpec("binary", "image")]), Schema([ColSpec("binary", "image")]))
    buf = io.BytesIO()
    Image.new("RGB", (image_size, image_size), "white").save(buf, format="PNG")
    example = pd.DataFrame({"image": [buf.getvalue()]})
    return _log_pyfunc(TRANSLATOR_MODEL_NAME, "translation/pyfunc.py", checkpoint, signature, example, "translator")


def registered_model(name: str) -> dict | None:
    """{"tags": ..., "aliases": {alias: version}} of a registered model, or None when there is none."""
    mlflow = tracking._mlflow()
    try:
        rm = mlflow.MlflowClient().get_registered_model(name)
    except Exception as exc:
        if _missing(exc):
            return None
        raise ArtganError(f"MLflow registry at {tracking.tracking_uri()}: {first_line(exc)}") from None
    return {"tags": dict(rm.tags), "aliases": {a: str(v) for a, v in (rm.aliases or {}).items()}}


def registered_model_names(limit: int = 20) -> list[str]:
    client = tracking._mlflow().MlflowClient()
    try:
        return sorted(m.name for m in client.search_registered_models(max_results=limit))
    except Exception:
        return []


def create_registered_model(name: str, tags: dict[str, str], description: str) -> None:
    client = tracking._mlflow().MlflowClient()
    try:
        client.create_registered_model(name, tags=tags, description=description)
    except Exception as exc:
        if getattr(exc, "error_code", "") == "RESOURCE_ALREADY_EXISTS":  # a concurrent evaluate made it first
            return
        raise ArtganError(f"MLflow registry: could not create registered model {name!r}: {first_line(exc)}") from None


def register_version(name: str, model_uri: str, tags: dict[str, str]) -> str:
    """A new version of `name` from a logged model; returns the version number."""
    mlflow = tracking._mlflow()
    try:
        mv = mlflow.register_model(model_uri, name, tags=tags)
    except Exception as exc:
        raise ArtganError(f"MLflow registry: could not register {model_uri} as {name!r}: {first_line(exc)}") from None
    return str(mv.version)


def model_version(name: str, version: str | None = None, alias: str | None = None) -> dict | None:
    """{"version", "run_id", "tags", "source"} of a version (by number or alias), or None when it does not exist."""
    client = tracking._mlflow().MlflowClient()
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, str(version))
    except Exception as exc:
        if _missing(exc):
            return None
        raise ArtganError(f"MLflow registry at {tracking.tracking_uri()}: {first_line(exc)}") from None
    return {"version": str(mv.version), "run_id": mv.run_id, "tags": dict(mv.tags), "source": mv.source}


def model_versions(name: str) -> list[str]:
    client = tracking._mlflow().MlflowClient()
    try:
        return sorted((str(v.version) for v in client.search_model_versions(f"name = '{name}'")), key=int)
    except Exception:
        return []


def set_alias(name: str, alias: str, version: str) -> None:
    client = tracking._mlflow().MlflowClient()
    try:
        client.set_registered_model_alias(name, alias, str(version))
    except Exception as exc:
        raise ArtganError(
            f"MLflow registry: could not set {name}@{alias} to version {version}: {first_line(exc)}"
        ) from None


def download_model(uri: str, dst: Path) -> Path:
    """The files of a logged or registered model under `dst` (its MLmodel at the top)."""
    mlflow = tracking._mlflow()
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst))
    except Exception as exc:
        raise ArtganError(
            f"model {uri}: could not download it from {tracking.tracking_uri()}: {first_line(exc)}"
        ) from None
    return Path(local)
