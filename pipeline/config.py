"""params.yaml -> a typed, frozen config. An unknown key or an ill-typed value is one clear error line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from pipeline.errors import ArtganError

Policy = Literal["color", "translation", "cutout"]  # DiffAugment's policies (pipeline/augment.py applies them)

PARAMS_FILE = "params.yaml"

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Beta = Annotated[float, Field(ge=0, lt=1)]
Channel = Annotated[int, Field(ge=0, le=255)]


def _folder(v: str) -> str:
    if os.path.normpath(v or ".") in (".", os.sep):
        raise ValueError(
            f"{v!r} is the working directory or the root, which a stage would replace whole; "
            "name a folder of its own (e.g. data/raw)"
        )
    return v


Folder = Annotated[str, AfterValidator(_folder)]  # a folder a stage writes (and may replace whole)


def _numbers(args: tuple) -> bool:
    """True when every element type of a tuple annotation is a number (Annotated[float, ...] counts)."""
    return bool(args) and all((get_args(a)[0] if get_origin(a) is Annotated else a) in (int, float) for a in args)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, v: object, info: ValidationInfo) -> object:
        # lax mode reads true/yes as 1: `steps: yes` would train one step, silently; `[0.25, yes]` likewise
        ann = cls.model_fields[info.field_name].annotation
        if isinstance(v, bool) and ann in (int, float):
            raise ValueError(f"must be a number, got the boolean {v!r} (YAML reads true/false/yes/no/on/off as one)")
        if isinstance(v, (list, tuple)) and get_origin(ann) is tuple and _numbers(get_args(ann)):
            for i, x in enumerate(v):
                if isinstance(x, bool):
                    raise ValueError(
                        f"item {i} must be a number, got the boolean {x!r} (YAML reads true/false/yes/no/on/off as one)"
                    )
        return v


class DataCfg(Section):
    source: str = "openmoji"
    image_size: Annotated[int, Field(ge=8, le=1024)] = 32
    max_images: NonNegInt = 0  # 0 = all; a deterministic prefix (by sorted name) for quick runs
    raw_dir: Folder = "data/raw"
    validated_dir: Folder = "data/validated"
    processed_dir: Folder = "data/processed"
    label: str = ""  # a manifest column whose values become classes (conditional training); "" = none
    sha256: str = ""  # url: the archive's SHA-256 (a mismatch is an error); "" = not pinned (a warning)
    filter: dict[str, str | int | float | bool] = Field(default_factory=dict)  # hf: keep rows where column == value
    timeout: PosFloat = 60.0  # url/hf/torchvision downloads: seconds to wait for the server before giving up
    download_dir: Folder = ".artgan/downloads"  # downloads and dataset caches; outside DVC's outputs

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, v: str) -> str:
        v = v.strip().lower()
        if v and (len(v) != 64 or any(c not in "0123456789abcdef" for c in v)):
            raise ValueError(f"must be 64 hexadecimal digits (the output of `sha256sum FILE`) or '', got {v!r}")
        return v

    @field_validator("image_size")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError(f"must be a power of two (8, 16, 32, 64, ...), got {v}")
        return v


class FetchCfg(Section):
    render_size: Annotated[int, Field(ge=16, le=1024)] = 128


class ValidateCfg(Section):
    min_images: PosInt = 1000  # images left after quarantine (status ok) the dataset must keep
    min_side: PosInt = 16  # narrower or lower images are quarantined
    max_side: PosInt = 8192  # wider or taller images are quarantined
    formats: tuple[str, ...] = ("PNG", "JPEG", "MPO", "GIF", "WEBP", "BMP", "TIFF")  # Pillow format names
    # Pillow modes preprocess converts faithfully to RGB (16-bit greyscale I;16 / I;16B / I is scaled by 1/257)
    modes: tuple[str, ...] = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "I;16", "I;16B", "I")
    aspect_ratio: tuple[PosFloat, PosFloat] = (0.25, 4.0)  # [min, max] of width / height
    max_duplicate_fraction: Annotated[float, Field(ge=0, le=1)] = 0.05  # byte-identical copies / all images
    min_images_per_class: PosInt = 10  # ok images of every data.label class (only when data.label is set)
    on_bad_file: Literal["quarantine", "fail"] = "quarantine"  # a bad file is set aside with its reason, or stops

    @field_validator("formats")
    @classmethod
    def _formats(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from PIL import Image

        Image.init()
        v = tuple(f.upper() for f in v)
        known = set(Image.OPEN) | {"MPO"}  # MPO (multi-picture JPEG from cameras) opens through JPEG's opener
        bad = [f for f in v if f not in known]
        if bad:
            raise ValueError(f"unknown Pillow format {bad[0]!r}; known: {', '.join(sorted(known))}")
        return v

    @field_validator("modes")
    @classmethod
    def _modes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from PIL import ImageMode

        for mode in v:
            try:
                ImageMode.getmode(mode)
            except KeyError:
                raise ValueError(f"unknown Pillow mode {mode!r} (e.g. RGB, RGBA, L, LA, P, CMYK, I;16)") from None
        return v

    @field_validator("aspect_ratio")
    @classmethod
    def _ratio_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] > v[1]:
            raise ValueError(f"must be [min, max] with min <= max, got {list(v)}")
        return v


class PreprocessCfg(Section):
    background: tuple[Channel, Channel, Channel] = (
        255,
        255,
        255,
    )  # alpha is composited onto this colour (and pad fills with it)
    resize: Literal["center-crop", "pad", "stretch"] = "center-crop"  # how a non-square image becomes square
    near_duplicate_distance: Annotated[int, Field(ge=0, le=16)] = (
        4  # max Hamming distance of 64-bit pHashes; 0 = identical hash only
    )
    near_duplicate_max_diff: Annotated[float, Field(ge=-1, le=255)] = (
        1.0  # and max mean |difference| of 16×16 RGB thumbnails (0..255); -1 = no near-duplicate removal
    )
    workers: NonNegInt = 0  # decode/resize processes; 0 = all cores, 1 = in-process
    fid_real_images: NonNegInt = 0  # real images in the FID reference statistics; 0 = all (the protocol)
    fid_batch_size: PosInt = 50


class ModelCfg(Section):
    arch: str = "dcgan"
    z_dim: PosInt = 100
    g_channels: PosInt = 32
    d_channels: PosInt = 32
    spectral_norm: bool = False  # spectral normalisation of every discriminator layer (no batch norm in D)
    d_batch_norm: bool = True  # batch norm in D (dcgan, fastgan); false: R1 and the loss alone keep D in check
    mbstd_group: NonNegInt = 0  # minibatch standard deviation over groups of this many images in D; 0 = off


class TrainCfg(Section):
    seed: NonNegInt = 0
    steps: PosInt = 11700
    batch_size: Annotated[int, Field(ge=2)] = 16  # batch norm needs two samples
    loss: str = "ns"
    n_critic: PosInt = 1  # discriminator steps per generator step
    clip_value: PosFloat = 0.01  # WGAN weight clipping (loss wgan)
    gp_weight: NonNegFloat = 10.0  # gradient-penalty weight lambda (loss wgan-gp)
    r1_gamma: NonNegFloat = 0.1  # R1 penalty weight gamma; 0 = off
    r1_every: PosInt = 16  # lazy R1: on the D updates of every N-th training step, scaled by N
    lecam: NonNegFloat = 0.0  # LeCam regulariser weight (Tseng et al. 2021; task generate); 0 = off
    # balanced consistency regularisation (bCR, Zhao et al. 2021; task generate): λ × mean squared difference of
    # D's logits on two augmentations of the same real, and of the same fake, images; 0 = off
    cr: NonNegFloat = 0.0
    cr_every: PosInt = 1  # lazy bCR: on the D updates of every N-th training step, scaled by N
    # bCR's T, applied on top of the images D was shown (the paper's T is a few pixels' shift); () = a second,
    # independent draw of train.augment in place of D's own
    cr_augment: tuple[Policy, ...] = ()
    # top-k training (Sinha et al. 2020; task generate): G learns from the k fakes D rates most real, k falling
    # from the batch by 0.99 an epoch down to topk × batch; 1 = off
    topk: Annotated[float, Field(gt=0, le=1)] = 1.0
    ema_decay: Annotated[float, Field(ge=0, lt=1)] = 0.999  # EMA generator; 0 = off
    augment: tuple[Policy, ...] = ("translation", "cutout")  # DiffAugment policies: color, translation, cutout
    augment_p: Annotated[float, Field(ge=0, le=1)] = 1.0  # probability per sample and policy
    xflip: bool = False  # mirror each real image left-right with probability 1/2 (StyleGAN2-ADA's --mirror)
    vae_beta: NonNegFloat = 1.0  # KL weight of the vae baseline's ELBO
    lr_g: PosFloat = 1.6e-3  # different lr_g / lr_d = TTUR
    lr_d: PosFloat = 8e-4
    # both rates fall linearly towards 0 from this fraction of train.steps to the last step (1 = constant)
    lr_decay_start: Annotated[float, Field(ge=0, le=1)] = 1.0
    beta1: Beta = 0.5
    beta2: Beta = 0.999
    log_every: PosInt = 1
    sample_every: PosInt = 100
    checkpoint_every: PosInt = 100  # resumable checkpoint interval (steps)
    # stop (last good checkpoint kept, run FAILED) when a loss or gradient norm, or a weight norm at a checkpoint,
    # is this many times beyond its early median (healthy default runs stay below 40); 0 = off
    divergence_factor: NonNegFloat = 1e4
    saturation_steps: NonNegInt = (
        500  # bce/ns: stop when D(x) > 0.99 and D(G(z)) < 0.01 this many steps in a row; 0 = off
    )
    snapshot_every: NonNegInt = (
        1000  # keep the sampling generator every K steps (FID curve, progress strip); 0 = final only
    )
    checkpoint_dir: Folder = ".artgan/checkpoints"  # one sub-folder per configuration; outside DVC's outputs
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"  # auto: cuda -> mps -> cpu, at run time
    amp: Literal["auto", "off", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, off elsewhere; bf16: on the CPU too
    compile: bool = False  # torch.compile G and D (GPU; slow to start on CPU)
    cuda_graphs: bool = (
        False  # CUDA, one process: each step captured once as a CUDA graph and replayed; ignored elsewhere
    )
    threads: NonNegInt = 0  # 0 = all cores; every stage's torch threads, and fetch's SVG rendering processes
    out_dir: Folder = "models"

    @field_validator("cuda_graphs")
    @classmethod
    def _graphs_or_compile(cls, v: bool, info: ValidationInfo) -> bool:
        if v and info.data.get("compile"):
            raise ValueError(
                "cannot be true with train.compile: true (torch.compile captures its own graphs with "
                "mode='reduce-overhead'); set one of them to false"
            )
        return v


class EvalCfg(Section):
    n_samples: Annotated[int, Field(ge=2)] = (
        2048  # generated images for FID, KID, precision/recall, memorisation; below 2,048 FID warns
    )
    batch_size: PosInt = 50
    seed: NonNegInt = 12345
    kid_subsets: PosInt = 10
    kid_subset_size: Annotated[int, Field(ge=2)] = 1000  # capped at the smaller set; evaluate warns when it is
    pr_k: PosInt = 3  # k of the k-NN manifolds of precision and recall
    curve_samples: NonNegInt = 256  # generated images per training snapshot for the FID curve; 0 = no curve, else >= 2
    memorisation_pairs: PosInt = 8  # closest generated/training pairs drawn in reports/memorisation.png
    device: Literal["auto", "cpu", "cuda"] = (
        "auto"  # FID features (preprocess's real ones too) and samples; auto = cuda -> cpu
    )
    fid_precision: Literal["fp32", "fp16"] = (
        "fp32"  # FID features: fp32 exact; fp16 autocast (GPU tensor cores), FID ~3e-4 off
    )

    @field_validator("curve_samples")
    @classmethod
    def _curve_samples(cls, v: int) -> int:
        if v == 1:
            raise ValueError("a covariance needs at least 2 samples: use 0 (no FID curve) or 2 or more (256 is usual)")
        return v


class RenderCfg(Section):
    seed: NonNegInt = 0
    nrow: Annotated[int, Field(ge=1, le=32)] = 8


def _model_name(v: str) -> str:
    if v != v.strip() or "/" in v or "@" in v or ":" in v:
        raise ValueError(f"a registered model name without '/', '@', ':' or surrounding spaces, got {v!r}")
    return v


class RegistryCfg(Section):
    name: Annotated[str, Field(min_length=1, max_length=256)] = "artgan-generator"  # MLflow registered model
    enabled: bool = True  # evaluate registers the generator (and moves @champion when its FID is better)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _model_name(v)


class TranslateCfg(Section):
    """task: translate — an image-to-image GAN from the input domain (`input`) to the style (`data.source`)."""

    input: Annotated[str, StringConstraints(strip_whitespace=True)] = (
        "openmoji:line"  # the input domain's source, any data.source scheme; data.source is the style
    )
    pairing: Literal["auto", "paired", "unpaired"] = "auto"  # auto: paired when both sets share relative names
    model: Literal["auto", "pix2pix", "cyclegan"] = "auto"  # auto: pix2pix for paired data, cyclegan for unpaired
    # how the input -> style generator's output becomes the image: none (it is the image, the papers') | multiply
    # (a colour layer multiplied with the input, as a colourist fills line art: the ink and paper stay as drawn)
    blend: Literal["none", "multiply"] = "none"
    lambda_l1: NonNegFloat = 100.0  # pix2pix: weight of the L1 distance to the target
    lambda_cycle: NonNegFloat = 10.0  # cyclegan: weight of the cycle-consistency L1 (both directions)
    lambda_identity: NonNegFloat = 0.5  # cyclegan: identity L1, as a fraction of lambda_cycle; 0 = off
    pool_size: NonNegInt = 50  # cyclegan: history buffer of generated images D sees; 0 = none
    holdout: Annotated[float, Field(gt=0, lt=1)] = 0.1  # fraction of the inputs held out for evaluate
    split_seed: NonNegInt = 0  # the held-out split: a hash of (split_seed, name), stable as the set grows
    triplets: Annotated[int, Field(ge=1, le=64)] = 8  # held-out input | translated | target rows render draws
    registry_name: Annotated[str, Field(min_length=1, max_length=256)] = "artgan-translator"  # MLflow model name

    @field_validator("registry_name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _model_name(v)


class Config(Section):
    task: Literal["generate", "translate"] = "generate"  # generate: noise -> image; translate: image -> image
    data: DataCfg = DataCfg()
    fetch: FetchCfg = FetchCfg()
    validate_: ValidateCfg = Field(default=ValidateCfg(), alias="validate")
    preprocess: PreprocessCfg = PreprocessCfg()
    model: ModelCfg = ModelCfg()
    train: TrainCfg = TrainCfg()
    eval: EvalCfg = EvalCfg()
    render: RenderCfg = RenderCfg()
    registry: RegistryCfg = RegistryCfg()
    translate: TranslateCfg = TranslateCfg()
    reports_dir: Folder = "reports"

    model_config = ConfigDict(extra="forbid", frozen=True)

    @property
    def validate_cfg(self) -> ValidateCfg:
        return self.validate_

    def flat(self) -> dict[str, object]:
        """All params as dotted keys (`train.loss`), for MLflow."""
        out: dict[str, object] = {}

        def walk(prefix: str, value: object) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = list(value) if isinstance(value, tuple) else value

        walk("", self.model_dump(by_alias=True))
        return out


def _describe(err: dict) -> str:
    keys = [p for p in err["loc"] if not isinstance(p, int)]
    items = [p for p in err["loc"] if isinstance(p, int)]
    if items and err["type"] != "extra_forbidden":  # an item of a list: the key, then which item
        loc = ".".join(str(p) for p in keys)
        msg = err["msg"].removeprefix("Value error, ")
        return f"'{loc}': item {items[-1]}: {msg} (got {err.get('input')!r})"
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        parent = ".".join(str(p) for p in err["loc"][:-1])
        allowed = _allowed_keys(err["loc"][:-1])
        where = f" in '{parent}'" if parent else ""
        return f"unknown key '{loc}'{where}; allowed keys: {', '.join(allowed)}"
    if err["type"] == "value_error":  # our own validators already quote the value
        return f"'{loc}': {err['msg'].removeprefix('Value error, ')}"
    return f"'{loc}': {err['msg']} (got {err.get('input')!r})"


def _allowed_keys(loc: tuple) -> list[str]:
    model: type[BaseModel] = Config
    for part in loc:
        field = next((f for n, f in model.model_fields.items() if (f.alias or n) == part), None)
        if field is None or not isinstance(field.annotation, type):
            return []
        model = field.annotation
    return sorted(f.alias or n for n, f in model.model_fields.items())


def parse(raw: dict, source: str = PARAMS_FILE) -> Config:
    """Validate a params mapping; raise ArtganError naming the first bad key."""
    if not isinstance(raw, dict):
        raise ArtganError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ArtganError(f"{source}: {_describe(first)}") from None
    _check_names(cfg, source)
    return cfg


def _check_names(cfg: Config, source: str) -> None:
    from pipeline.data.sources import SOURCES, source_scheme
    from pipeline.losses import LOSSES
    from pipeline.models import MBSTD
    from pipeline.models import MODELS as ARCHS

    if cfg.train.loss not in LOSSES:
        raise ArtganError(f"{source}: 'train.loss': unknown loss {cfg.train.loss!r}; known: {', '.join(LOSSES)}")
    if cfg.model.arch not in ARCHS:
        raise ArtganError(f"{source}: 'model.arch': unknown architecture {cfg.model.arch!r}; known: {', '.join(ARCHS)}")
    if cfg.model.mbstd_group and cfg.model.arch not in MBSTD:
        raise ArtganError(
            f"{source}: 'model.mbstd_group': model.arch {cfg.model.arch} has no minibatch standard deviation layer "
            f"(it is in {', '.join(sorted(MBSTD))}); set model.mbstd_group to 0"
        )
    if cfg.train.cr > 0 and not cfg.train.cr_augment and (not cfg.train.augment or cfg.train.augment_p == 0):
        raise ArtganError(
            f"{source}: 'train.cr': consistency regularisation compares two augmentations of each image, but "
            "train.augment is off; set train.augment (e.g. [translation, cutout]) and train.augment_p > 0, or "
            "train.cr_augment (e.g. [translation]), or train.cr to 0"
        )
    if source_scheme(cfg.data.source) not in SOURCES:
        raise ArtganError(f"{source}: 'data.source': unknown source {cfg.data.source!r}; known: {', '.join(SOURCES)}")
    if cfg.task == "translate":
        _check_translate(cfg, source, SOURCES, source_scheme)


def _check_translate(cfg: Config, source: str, sources: dict, scheme_of) -> None:
    """task: translate needs two sources (the input domain and the style) and models that fit the pairing."""
    tr = cfg.translate
    if not tr.input:
        raise ArtganError(
            f"{source}: 'translate.input': task translate needs the input domain's source (e.g. folder:photos/ "
            "or the built-in openmoji:line); data.source is the style"
        )
    if not cfg.data.source.strip():
        raise ArtganError(f"{source}: 'data.source': task translate needs the style domain's source")
    if scheme_of(tr.input) not in sources:
        raise ArtganError(f"{source}: 'translate.input': unknown source {tr.input!r}; known: {', '.join(sources)}")
    if tr.input == cfg.data.source:
        raise ArtganError(
            f"{source}: 'translate.input' and 'data.source' are both {tr.input!r}; translation needs two image sets"
        )
    if tr.model == "pix2pix" and tr.pairing == "unpaired":
        raise ArtganError(
            f"{source}: 'translate.model': pix2pix learns from pairs, but translate.pairing is unpaired; "
            "set translate.model to cyclegan (or auto), or translate.pairing to paired"
        )
    if cfg.data.label:
        raise ArtganError(f"{source}: 'data.label': task translate is not class-conditional; set data.label to ''")
    if cfg.model.arch == "vae":
        raise ArtganError(f"{source}: 'model.arch': task translate trains GANs (pix2pix / cyclegan), not the vae")
    # the generation trainer's options that the translators do not have: (key, value, what it is, its "off")
    for key, value, what, off in (
        ("train.lecam", cfg.train.lecam, "LeCam", 0),
        ("train.cr", cfg.train.cr, "consistency regularisation", 0),
        ("train.topk", cfg.train.topk, "top-k training", 1),
        ("train.xflip", cfg.train.xflip, "mirroring", False),
        ("model.mbstd_group", cfg.model.mbstd_group, "the minibatch standard deviation layer", 0),
        ("model.d_batch_norm", cfg.model.d_batch_norm, "a discriminator without batch norm", True),
    ):
        if value != off:
            shown = str(off).lower()  # as params.yaml writes it
            raise ArtganError(f"{source}: '{key}': {what} is for task generate; set {key} to {shown} to translate")


class _UniqueKeys(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error (plain YAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(p: Path) -> object:
    """A params file's YAML (duplicate keys refused); a file that is not UTF-8 text is a one-line error."""
    try:
        return yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeys)
    except (UnicodeDecodeError, OSError) as exc:
        raise ArtganError(f"{p}: cannot be read as UTF-8 text ({exc.__class__.__name__}); save it as UTF-8") from None


def load(path: str | os.PathLike = PARAMS_FILE) -> Config:
    p = Path(path)
    if not p.is_file():
        raise ArtganError(f"{p}: params file not found; run from the repository root or pass --params PATH")
    try:
        raw = read_yaml(p)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        what = f" ({exc.problem})" if str(getattr(exc, "problem", "")).startswith("duplicate key") else ""
        raise ArtganError(f"{p}: not valid YAML{where}{what}; fix the syntax") from None
    raw = {} if raw is None else raw  # an empty file: every default
    if not isinstance(raw, dict):  # `[]`, `- x` or a bare value
        raise ArtganError(
            f"{p}: holds a {type(raw).__name__}, not a mapping of sections (data:, train:, ...); "
            "start from the repository's params.yaml"
        )
    return parse(raw, str(p))


def set_threads(cfg: Config) -> None:
    """Bound torch's CPU threads by `train.threads` (0 leaves torch's default: all cores)."""
    if cfg.train.threads:
        import torch

        torch.set_num_threads(cfg.train.threads)
