"""Task translate's two domains: which files pair, and the held-out split (fetch and preprocess use it).

fetch writes both domains into data.raw_dir (the style as for task generate, the input under `inputs/`) with a
`domain` column in the manifest; preprocess turns the style into images.npy + manifest.parquet as usual and the input
into inputs.npy + inputs.parquet (`plan` below says which rows). Every later stage reads them through
pipeline/translation/pairs.py.

- The pairing key of a file is its path inside its domain without the suffix (`images/1F600` for both
  `images/1F600.png` and `inputs/images/1F600.png`). Paired: an input whose key is not in the style set, or a style
  image whose key no input has, is listed in reports/unmatched.csv and left out of the pairs.
- The held-out split is by content: an input is held out when a hash of (translate.split_seed, its sha256) falls
  below translate.holdout, so the split of a file never changes as the set grows or is reordered. Under pairing its
  target is held out with it: training never sees either.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from pipeline.errors import ArtganError

STYLE, INPUT = "style", "input"
INPUT_DIR = "inputs"  # the input domain's folder inside data.raw_dir
TRAIN, HOLDOUT = "train", "holdout"
UNMATCHED_FIELDS = ["domain", "path", "key"]
PAIRED_WHEN = 0.5  # pairing auto: paired when at least this fraction of the inputs' keys are in the style set


def pairing_key(path: str, domain: str) -> str:
    p = PurePosixPath(str(path))
    if domain == INPUT and p.parts[:1] == (INPUT_DIR,):
        p = PurePosixPath(*p.parts[1:])
    return str(p.with_suffix(""))


def keys(df: pd.DataFrame, domain: str) -> list[str]:
    return [pairing_key(p, domain) for p in df["path"].astype(str)]


def is_held_out(sha256: str, split_seed: int, holdout: float) -> bool:
    """The content-keyed split: the first 8 bytes of sha256("<seed>:<file sha256>") as a fraction of 2^64."""
    h = hashlib.sha256(f"{split_seed}:{sha256}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < holdout


def decide_paired(pairing: str, input_keys: list[str], style_keys: list[str]) -> bool:
    if pairing != "auto":
        return pairing == "paired"
    shared = len(set(input_keys) & set(style_keys))
    return bool(input_keys) and shared >= PAIRED_WHEN * len(set(input_keys))


@dataclass
class Plan:
    """Which rows of each domain preprocess keeps, and how they are split and paired."""

    paired: bool
    style: pd.DataFrame  # style rows kept, with `key` and `split`
    inputs: pd.DataFrame  # input rows kept, with `key`, `split` and `target` (the style row, -1 when unpaired)
    unmatched: list[dict]


def plan(style_df: pd.DataFrame, input_df: pd.DataFrame, tr, where: str) -> Plan:
    """The pairing of the two (processed, deduplicated) domains and the held-out split. `tr` is cfg.translate;
    `where` names the manifest in errors."""
    style_df = style_df.reset_index(drop=True).assign(key=keys(style_df, STYLE))
    input_df = input_df.reset_index(drop=True).assign(key=keys(input_df, INPUT))
    paired = decide_paired(tr.pairing, input_df["key"].tolist(), style_df["key"].tolist())
    split = [HOLDOUT if is_held_out(s, tr.split_seed, tr.holdout) else TRAIN for s in input_df["sha256"].astype(str)]
    input_df["split"] = split
    unmatched: list[dict] = []
    if not paired:
        input_df["target"] = -1
        style_df["split"] = TRAIN
        return Plan(False, style_df, input_df, unmatched)

    # a key may repeat in a domain only through a bad source; keep the first, as validate keeps the first copy
    style_df = style_df.drop_duplicates("key", keep="first").reset_index(drop=True)
    input_df = input_df.drop_duplicates("key", keep="first").reset_index(drop=True)
    row_of = {k: i for i, k in enumerate(style_df["key"])}
    has_input = set(input_df["key"])
    for domain, df, other in ((INPUT, input_df, row_of), (STYLE, style_df, has_input)):
        for path, key in zip(df["path"].astype(str), df["key"]):
            if key not in other:
                unmatched.append({"domain": domain, "path": path, "key": key})
    input_df = input_df[input_df["key"].isin(row_of)].reset_index(drop=True)
    if input_df.empty:
        raise ArtganError(
            f"{where}: translate.pairing is paired but no input shares a file name with the style set; name the "
            "pairs alike in both folders, or set translate.pairing to unpaired"
        )
    style_df = style_df[style_df["key"].isin(set(input_df["key"]))].reset_index(drop=True)
    row_of = {k: i for i, k in enumerate(style_df["key"])}
    input_df["target"] = [row_of[k] for k in input_df["key"]]
    style_split = np.full(len(style_df), TRAIN, dtype=object)
    style_split[input_df["target"].to_numpy()[input_df["split"].to_numpy() == HOLDOUT]] = HOLDOUT
    style_df["split"] = style_split
    return Plan(True, style_df, input_df, unmatched)
