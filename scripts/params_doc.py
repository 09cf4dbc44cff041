"""Write docs/params.md, the params reference, from the config schema (pipeline/config.py) and params.yaml.

    .venv/bin/python scripts/params_doc.py            # rewrite docs/params.md
    .venv/bin/python scripts/params_doc.py --check    # exit 1 if docs/params.md is not current

Every key of the schema is listed with its type and allowed values (from the pydantic models: annotations,
bounds, Literal choices, and the registries of losses, architectures and data sources), its schema default
(what a key missing from params.yaml gets) and its value in the repository's params.yaml. The description is,
in this order of preference, the field's pydantic `description`, the key's comment in params.yaml (with its
continuation lines), the field's trailing comment in pipeline/config.py, or a short fallback below for the
few keys that have none. tests/test_params_doc.py fails when the committed file differs from a fresh one.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import io
import re
import sys
import tokenize
import types
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OUT = ROOT / "docs" / "params.md"
COMMAND = ".venv/bin/python scripts/params_doc.py"

# keys that neither params.yaml nor pipeline/config.py comments
FALLBACK = {
    "data.raw_dir": "fetched images and their manifest (a stage output, replaced whole)",
    "data.processed_dir": "the training array `images.npy`, its manifest and the real FID statistics",
    "preprocess.fid_batch_size": "images per batch through TF-Inception for the real statistics",
    "model.z_dim": "latent dimension of the generator",
    "model.g_channels": "width (channels) of the generator",
    "model.d_channels": "width (channels) of the discriminator",
    "train.seed": "seed of weights, latents, data order and augmentation",
    "train.lr_d": "discriminator (critic) learning rate",
    "train.beta1": "Adam β1",
    "train.beta2": "Adam β2",
    "train.checkpoint_dir": "resumable checkpoints, one sub-folder per configuration and data",
    "train.out_dir": "checkpoint.pt, snapshots.pt and mlflow_run.json (DVC outputs)",
    "eval.batch_size": "generated images per batch",
    "eval.seed": "seed of the evaluation latents",
    "eval.kid_subsets": "KID: number of subsets (mean ± std over them)",
    "eval.kid_subset_size": "KID: images per subset",
    "render.seed": "seed of the grids' latents (the same seed gives the same picture across runs)",
    "render.nrow": "the sample grids are nrow × nrow",
    "reports_dir": "metrics, curves, validation result, render/ and index.html",
}

SECTION_TITLES = {
    "data": "the dataset, shared by every stage",
    "fetch": "`artgan fetch`",
    "validate": "`artgan validate`",
    "preprocess": "`artgan preprocess`",
    "model": "the architecture, shared by train, evaluate and render",
    "train": "`artgan train`",
    "eval": "`artgan evaluate`",
    "render": "`artgan render`",
    "registry": "`artgan evaluate`",
    "translate": "read by fetch, preprocess, train, evaluate and render under task translate (docs/translation.md)",
}


# --------------------------------------------------------------------------------- comments in the sources
def yaml_comments(text: str) -> dict[str, str]:
    """{dotted key: comment} from params.yaml: a key's trailing comment plus the comment-only lines right
    below it that are indented past the key (continuations); a section line's comment under the section's name."""
    out: dict[str, str] = {}
    section, last = None, None
    for line in text.splitlines():
        m = re.match(r"^(\s*)([A-Za-z_][\w]*):(.*)$", line)
        if m:
            indent, key, rest = len(m.group(1)), m.group(2), m.group(3)
            comment = _trailing_comment(rest)
            if indent == 0:
                section = key if not rest.strip() or rest.strip().startswith("#") else None
                dotted = key
            else:
                dotted = f"{section}.{key}" if section else key
            if comment:
                out[dotted] = comment
            last = dotted
            continue
        stripped = line.strip()
        if stripped.startswith("#") and last and line.startswith(" ") and last in out:
            more = stripped.lstrip("#").strip()
            # a continuation that starts a new case ("hf: a dataset column") is a new clause, else the same sentence
            joint = "; " if re.match(r"^[\w/:]+:\s", more) and not out[last].endswith(("|", ",")) else " "
            out[last] += joint + more
        elif not stripped.startswith("#") or not line.startswith(" "):
            last = None
    return out


def _trailing_comment(rest: str) -> str:
    """The comment after a YAML value (a `#` outside quotes, after a space)."""
    quote = None
    for i, ch in enumerate(rest):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or rest[i - 1].isspace()):
            return rest[i + 1 :].strip()
    return ""


def config_comments(source: str) -> dict[tuple[str, str], str]:
    """{(class name, field): comment} from pipeline/config.py: the trailing comment of a field's line and the
    comment-only lines right above it."""
    comments: dict[int, str] = {}
    full_line: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
            if not tok.line[: tok.start[1]].strip():
                full_line.add(tok.start[0])
    out: dict[tuple[str, str], str] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                parts = []
                above = item.lineno - 1
                while above in full_line:
                    parts.insert(0, comments[above])
                    above -= 1
                if item.end_lineno in comments and item.end_lineno not in full_line:
                    parts.append(comments[item.end_lineno])
                if parts:
                    out[(node.name, item.target.id)] = " ".join(parts)
    return out


# ------------------------------------------------------------------------------------------- the schema
def _bounds(metadata: list) -> str:
    parts = []
    for m in metadata:
        for attr, sym in (
            ("ge", "≥"),
            ("gt", ">"),
            ("le", "≤"),
            ("lt", "<"),
            ("min_length", "length ≥"),
            ("max_length", "length ≤"),
        ):
            v = getattr(m, attr, None)
            if v is not None:
                parts.append(f"{sym} {v:g}" if isinstance(v, float) else f"{sym} {v}")
    return ", ".join(parts)


def describe_type(ann: object, metadata: list | None = None) -> str:
    """A short human type: `int ≥ 0`, `one of a, b`, `list of str`, `[float > 0, float > 0]`."""
    metadata = list(metadata or [])
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Annotated:
        return describe_type(args[0], [*args[1:], *metadata])
    bounds = _bounds(metadata)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {describe_type(args[0])}"
        return "[" + ", ".join(describe_type(a) for a in args) + "]"
    if origin is dict:
        return "mapping of column → value"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in args)
    if any(getattr(getattr(m, "func", None), "__name__", "") == "_folder" for m in metadata):
        return "folder path (not `.` or `/`)"
    name = getattr(ann, "__name__", str(ann))
    return f"{name} {bounds}".strip()


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`' if value == "" else f"`{value}`"
    if isinstance(value, (tuple, list)):
        return "`[" + ", ".join(str(v) for v in value) + "]`"
    if isinstance(value, dict):
        return "`{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}`"
    if isinstance(value, float):
        return f"`{value!r}`"
    return f"`{value}`"


def _cell(text: str, html: bool = False) -> str:
    """A table cell; with `html`, < > & outside `code` spans are escaped (`folder:<path>` is not a tag)."""
    text = text.replace("|", "\\|").replace("\n", " ")
    if html:
        parts = text.split("`")
        text = "`".join(
            p if i % 2 else p.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            for i, p in enumerate(parts)
        )
    return text


def registry_choices() -> dict[str, str]:
    from pipeline.data.sources import SOURCES
    from pipeline.losses import LOSSES
    from pipeline.models import MODELS

    return {
        "train.loss": "one of " + ", ".join(f"`{k}`" for k in LOSSES),
        "model.arch": "one of " + ", ".join(f"`{k}`" for k in MODELS),
        "data.source": "`" + "` or `".join(f"{k}:…" if k != "openmoji" else k for k in SOURCES) + "`",
    }


def build() -> str:
    from pydantic import BaseModel

    from pipeline.config import PARAMS_FILE, Config, read_yaml

    params_path = ROOT / PARAMS_FILE
    yaml_text = params_path.read_text(encoding="utf-8")
    in_file = read_yaml(params_path) or {}
    ycom = yaml_comments(yaml_text)
    ccom = config_comments((ROOT / "pipeline" / "config.py").read_text(encoding="utf-8"))
    choices = registry_choices()

    lines = [
        "# Params reference",
        "",
        "<!-- Generated by scripts/params_doc.py from pipeline/config.py and params.yaml; do not edit by hand.",
        f"     Regenerate with: {COMMAND} -->",
        "",
        "Every key of `params.yaml`, generated from the config schema (`pipeline/config.py`), so it cannot drift:",
        f"`{COMMAND}` rewrites this page and a test fails when it is not current. **default** is what a key",
        "missing from `params.yaml` gets; **params.yaml** is the value in the repository's file (bold where it",
        "differs). Try a value without editing the file: `dvc exp run -S train.loss=hinge`. An unknown key, a wrong",
        "type or a value out of range stops every stage with one line naming the key and what is allowed.",
        "",
    ]
    sections: list[tuple[str, type[BaseModel]]] = []
    top: list[tuple[str, object]] = []
    for name, field in Config.model_fields.items():
        key = field.alias or name
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            sections.append((key, ann))
        else:
            top.append((key, field))
    lines += [
        "Sections: "
        + ", ".join(f"[`{k}`](#{k})" for k, _ in sections)
        + (", " + ", ".join(f"[`{k}`](#top-level)" for k, _ in top) if top else "")
        + ".",
        "",
    ]

    def row(dotted: str, cls_name: str, fname: str, field, file_value: object, present: bool) -> str:
        desc = field.description or ycom.get(dotted) or ccom.get((cls_name, fname)) or FALLBACK.get(dotted, "")
        typ = choices.get(dotted) or describe_type(field.annotation, field.metadata)
        default = field.get_default(call_default_factory=True)
        default = default.model_dump() if isinstance(default, BaseModel) else default
        shown = _fmt(file_value) if present else "(not set)"
        if present and file_value != (list(default) if isinstance(default, tuple) else default):
            shown = f"**{shown}**"
        return f"| `{dotted}` | {_cell(typ)} | {_cell(_fmt(default))} | {_cell(shown)} | {_cell(desc, html=True)} |"

    head = ["| key | type / allowed | default | params.yaml | description |", "|---|---|---|---|---|"]
    for key, model in sections:
        lines += [f"## {key}", ""]
        title = SECTION_TITLES.get(key)
        comment = ycom.get(key, "")
        comment = f"{comment[0].upper()}{comment[1:]}." if comment else ""
        intro = " ".join(
            filter(
                None,
                [
                    f"Read by {title}."
                    if title and title.startswith("`")
                    else (f"{title[0].upper()}{title[1:]}." if title else ""),
                    comment,
                ],
            )
        )
        if intro:
            lines += [intro, ""]
        lines += head
        section_values = in_file.get(key) or {}
        for fname, field in model.model_fields.items():
            fkey = field.alias or fname
            lines.append(
                row(f"{key}.{fkey}", model.__name__, fname, field, section_values.get(fkey), fkey in section_values)
            )
        lines.append("")
    if top:
        lines += ["## top level", ""] + head
        for key, field in top:
            fname = next(n for n, f in Config.model_fields.items() if f is field)
            lines.append(row(key, "Config", fname, field, in_file.get(key), key in in_file))
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/params.md is not current (writes nothing)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    text = build()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
        if current != text:
            sys.stdout.writelines(
                difflib.unified_diff(current.splitlines(True), text.splitlines(True), str(args.out), "generated")
            )
            print(f"{args.out} is not current; regenerate it with: {COMMAND}", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
