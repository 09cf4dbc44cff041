"""params.yaml -> Config: defaults, one-line errors naming the key, and the CLI that prints them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest
from helpers import REPO, write_params

from pipeline.config import Config, load, parse
from pipeline.errors import ArtganError

ARTGAN = Path(sys.executable).parent / "artgan"


def parse_error(raw) -> str:
    with pytest.raises(ArtganError) as info:
        parse(raw)
    msg = str(info.value)
    assert "\n" not in msg, f"error message is not one line: {msg!r}"
    return msg


# ---- defaults --------------------------------------------------------------------------------------


def test_empty_params_parse_to_the_documented_defaults():
    cfg = parse({})
    assert isinstance(cfg, Config)
    assert cfg.data.source == "openmoji"
    assert cfg.data.image_size == 32
    assert cfg.train.loss == "ns"
    assert cfg.model.arch == "dcgan"
    assert cfg.validate_cfg.min_images == 1000
    assert cfg.reports_dir == "reports"


def test_the_repository_params_file_parses():
    cfg = load(REPO / "params.yaml")
    assert cfg.data.image_size & (cfg.data.image_size - 1) == 0


def test_validate_section_is_read_by_its_yaml_name():
    cfg = parse({"validate": {"min_images": 7, "modes": ["RGB"]}})
    assert cfg.validate_cfg.min_images == 7
    assert cfg.validate_cfg.modes == ("RGB",)


@pytest.mark.parametrize(
    "validate, needles",
    [
        ({"on_bad_file": "delete"}, ("'validate.on_bad_file'", "quarantine", "fail")),
        ({"aspect_ratio": [4.0, 0.25]}, ("'validate.aspect_ratio'", "min <= max")),
        ({"formats": ["PNG", "JPG"]}, ("'validate.formats'", "'JPG'", "JPEG")),
        ({"modes": ["RGB", "RGBB"]}, ("'validate.modes'", "'RGBB'")),
        ({"max_duplicate_fraction": 1.5}, ("'validate.max_duplicate_fraction'",)),
    ],
)
def test_bad_validate_values_are_one_line_naming_the_key(validate, needles):
    msg = parse_error({"validate": validate})
    for needle in needles:
        assert needle in msg, msg


def test_validate_formats_are_pillow_names_in_any_case():
    assert parse({"validate": {"formats": ["png", "Jpeg"]}}).validate_cfg.formats == ("PNG", "JPEG")


def test_config_is_frozen():
    cfg = parse({})
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        cfg.train.steps = 3  # type: ignore[misc]


# ---- unknown keys ----------------------------------------------------------------------------------


def test_unknown_top_level_key_is_named_with_the_allowed_sections():
    msg = parse_error({"trian": {"steps": 3}})
    assert "'trian'" in msg
    for key in ("data", "fetch", "validate", "preprocess", "model", "train", "eval", "render", "reports_dir"):
        assert key in msg.split("allowed keys:")[1]


def test_unknown_nested_key_is_named_dotted_with_the_allowed_keys():
    msg = parse_error({"train": {"lossx": 1}})
    assert "train.lossx" in msg
    allowed = msg.split("allowed keys:")[1]
    for key in ("loss", "steps", "batch_size", "seed", "out_dir"):
        assert key in allowed


def test_unknown_key_under_validate_lists_the_validate_keys():
    msg = parse_error({"validate": {"min_image": 10}})
    assert "validate.min_image" in msg
    allowed = msg.split("allowed keys:")[1]
    for key in ("min_images", "min_side", "max_side", "modes"):
        assert key in allowed


# ---- wrong types and ranges ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"train": {"steps": "many"}}, "train.steps"),
        ({"data": {"image_size": -32}}, "data.image_size"),
        ({"train": {"steps": 0}}, "train.steps"),
        ({"data": {"image_size": 48}}, "data.image_size"),
        ({"train": {"lr_g": -1.0}}, "train.lr_g"),
        ({"train": {"beta1": 1.0}}, "train.beta1"),
        ({"preprocess": {"background": [0, 0, 256]}}, "preprocess.background"),
        ({"train": {"batch_size": 1}}, "train.batch_size"),
        ({"data": {"raw_dir": {"a": 1}}}, "data.raw_dir"),
        ({"eval": {"device": "tpu"}}, "eval.device"),
        ({"eval": {"fid_precision": "bf16"}}, "eval.fid_precision"),
        ({"eval": {"kid_subset_size": 1}}, "eval.kid_subset_size"),
        ({"eval": {"curve_samples": 1}}, "eval.curve_samples"),
    ],
)
def test_ill_typed_or_out_of_range_value_names_the_key(raw, key):
    msg = parse_error(raw)
    assert f"'{key}'" in msg


@pytest.mark.parametrize(
    "section, key, value",
    [("train", "steps", True), ("train", "lr_g", False), ("eval", "n_samples", True), ("data", "timeout", True)],
)
def test_a_boolean_for_a_number_is_an_error_not_one_or_zero(section, key, value):
    with pytest.raises(ArtganError) as e:
        parse({section: {key: value}})
    assert str(e.value) == (
        f"params.yaml: '{section}.{key}': must be a number, got the boolean {value!r} "
        "(YAML reads true/false/yes/no/on/off as one)"
    )


@pytest.mark.parametrize(
    "section, key, value, item",
    [("validate", "aspect_ratio", [0.5, True], 1), ("preprocess", "background", [False, 0, 0], 0)],
)
def test_a_boolean_inside_a_list_of_numbers_is_an_error(section, key, value, item):
    with pytest.raises(ArtganError) as e:
        parse({section: {key: value}})
    assert str(e.value) == (
        f"params.yaml: '{section}.{key}': item {item} must be a number, got the boolean "
        f"{value[item]!r} (YAML reads true/false/yes/no/on/off as one)"
    )


def test_non_power_of_two_image_size_says_so():
    msg = parse_error({"data": {"image_size": 48}})
    assert "power of two" in msg and "48" in msg


def test_params_that_are_not_a_mapping_are_rejected():
    msg = parse_error([1, 2, 3])
    assert "mapping" in msg


# ---- unknown names in the registries ---------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, key, known",
    [
        ({"train": {"loss": "wasserstein"}}, "train.loss", ["bce", "ns", "wgan", "wgan-gp", "lsgan", "hinge"]),
        ({"model": {"arch": "stylegan"}}, "model.arch", ["mlp", "dcgan", "resnet", "fastgan", "vae"]),
        ({"data": {"source": "kaggle:someone/art"}}, "data.source", ["openmoji"]),
    ],
)
def test_unknown_registry_name_names_the_key_and_lists_known_values(raw, key, known):
    msg = parse_error(raw)
    assert f"'{key}'" in msg
    listed = msg.split("known:")[1]
    for name in known:
        assert name in listed


@pytest.mark.parametrize("arch", ["mlp", "resnet", "fastgan", "vae"])
def test_a_minibatch_std_group_on_an_arch_without_the_layer_is_one_line(arch):
    msg = parse_error({"model": {"arch": arch, "mbstd_group": 4}})
    assert "'model.mbstd_group'" in msg and arch in msg and "dcgan" in msg and "set model.mbstd_group to 0" in msg
    assert parse({"model": {"arch": "dcgan", "mbstd_group": 4}}).model.mbstd_group == 4


@pytest.mark.parametrize("train", [{"augment": []}, {"augment_p": 0.0}], ids=["no policy", "p 0"])
def test_consistency_regularisation_without_augmentation_is_one_line(train):
    msg = parse_error({"train": {"cr": 10.0, **train}})
    assert "'train.cr'" in msg and "train.augment" in msg and "\n" not in msg
    assert parse({"train": {"cr": 10.0}}).train.cr == 10.0  # with the default's augmentations it is accepted
    # bCR with its own T needs no train.augment
    assert parse({"train": {"cr": 10.0, "cr_augment": ["translation"], **train}}).train.cr_augment == ("translation",)


@pytest.mark.parametrize("loss", ["bce", "ns", "wgan", "wgan-gp", "lsgan", "hinge"])
def test_every_registered_loss_is_accepted(loss):
    assert parse({"train": {"loss": loss}}).train.loss == loss


# ---- the params file -------------------------------------------------------------------------------


def test_load_reads_a_yaml_file(tmp_path):
    p = write_params(tmp_path / "p.yaml", {"train": {"steps": 7, "loss": "hinge"}})
    cfg = load(p)
    assert cfg.train.steps == 7 and cfg.train.loss == "hinge"


def test_load_of_an_empty_file_gives_defaults(tmp_path):
    p = write_params(tmp_path / "p.yaml", "")
    assert load(p) == parse({})


def test_load_error_names_the_file_and_the_key(tmp_path):
    p = write_params(tmp_path / "p.yaml", {"train": {"lossx": 1}})
    with pytest.raises(ArtganError) as info:
        load(p)
    msg = str(info.value)
    assert str(p) in msg and "train.lossx" in msg and "\n" not in msg


def test_missing_params_file_names_the_path(tmp_path):
    p = tmp_path / "nowhere" / "params.yaml"
    with pytest.raises(ArtganError) as info:
        load(p)
    msg = str(info.value)
    assert str(p) in msg and "not found" in msg and "\n" not in msg


def test_invalid_yaml_says_so_in_one_line(tmp_path):
    p = write_params(tmp_path / "p.yaml", "train:\n  steps: [1, 2\n  loss: ns\n")
    with pytest.raises(ArtganError) as info:
        load(p)
    msg = str(info.value)
    assert "not valid YAML" in msg and str(p) in msg and "\n" not in msg


@pytest.mark.parametrize(
    "text, kind", [("[]\n", "list"), ("- train\n", "list"), ("steps: 3\n---\n", None), ("6000\n", "int")]
)
def test_a_params_file_that_is_not_a_mapping_is_one_line(tmp_path, text, kind):
    p = write_params(tmp_path / "p.yaml", text)
    with pytest.raises(ArtganError) as info:
        load(p)
    msg = str(info.value)
    assert str(p) in msg and "\n" not in msg
    if kind:
        assert f"holds a {kind}, not a mapping of sections" in msg


def test_an_empty_params_file_is_every_default(tmp_path):
    assert load(write_params(tmp_path / "p.yaml", "")) == load(write_params(tmp_path / "q.yaml", "{}\n"))


@pytest.mark.parametrize(
    "text, needle",
    [
        ("train:\n  steps: 3\ntrain:\n  loss: ns\n", "line 3 (duplicate key 'train')"),
        ("train:\n  steps: 3\n  steps: 5\n", "line 3 (duplicate key 'steps')"),
    ],
)
def test_a_key_given_twice_is_an_error_not_the_last_one_winning(tmp_path, text, needle):
    p = write_params(tmp_path / "p.yaml", text)
    with pytest.raises(ArtganError, match=rf"^{p}: not valid YAML at {re.escape(needle)}; fix the syntax$"):
        load(p)


def test_a_params_file_that_is_not_utf8_is_one_line(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_bytes(b"\xff\xfe\x00t\x00r\x00a\x00i\x00n")
    with pytest.raises(
        ArtganError, match=rf"^{p}: cannot be read as UTF-8 text \(UnicodeDecodeError\); save it as UTF-8$"
    ):
        load(p)


@pytest.mark.parametrize(
    "key",
    ["data.raw_dir", "data.processed_dir", "data.download_dir", "train.checkpoint_dir", "train.out_dir", "reports_dir"],
)
@pytest.mark.parametrize("value", ["", ".", "./", "/"])
def test_a_stage_folder_cannot_be_the_working_directory_or_the_root(key, value):
    *section, name = key.split(".")
    raw = {section[0]: {name: value}} if section else {name: value}
    msg = parse_error(raw)
    assert msg.startswith(f"params.yaml: '{key}': {value!r} is the working directory or the root")


# ---- flat() ----------------------------------------------------------------------------------------


def test_flat_gives_dotted_keys_for_mlflow():
    flat = parse({"train": {"loss": "hinge"}, "validate": {"min_images": 12}}).flat()
    assert flat["train.loss"] == "hinge"
    assert flat["validate.min_images"] == 12
    assert flat["reports_dir"] == "reports"
    assert flat["validate.modes"] == ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "I;16", "I;16B", "I"]
    assert flat["validate.aspect_ratio"] == [0.25, 4.0]
    assert flat["preprocess.background"] == [255, 255, 255]
    assert not any(k.startswith("validate_") for k in flat)
    assert all(not isinstance(v, dict) for v in flat.values())


# ---- the CLI ---------------------------------------------------------------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def _assert_one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:")
    for needle in needles:
        assert needle in lines[0]


def test_cli_bad_key_is_one_error_line_without_traceback(tmp_path):
    p = write_params(tmp_path / "bad.yaml", {"train": {"lossx": 1}})
    _assert_one_error_line(_cli("train", "--params", str(p), cwd=tmp_path), "train.lossx")


@pytest.mark.skipif(not ARTGAN.exists(), reason="the artgan console script is not installed beside python")
def test_console_script_bad_type_is_one_error_line(tmp_path):
    p = write_params(tmp_path / "bad.yaml", {"train": {"steps": "many"}})
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb"}
    proc = subprocess.run(
        [str(ARTGAN), "train", "--params", str(p)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    _assert_one_error_line(proc, "train.steps")


def test_cli_missing_params_file_is_one_error_line(tmp_path):
    _assert_one_error_line(_cli("validate", "-p", "missing.yaml", cwd=tmp_path), "missing.yaml")


def test_cli_invalid_yaml_is_one_error_line(tmp_path):
    p = write_params(tmp_path / "bad.yaml", "train: [\n")
    _assert_one_error_line(_cli("fetch", "-p", str(p), cwd=tmp_path), "not valid YAML")


def test_cli_help_exits_zero_and_lists_the_stages(tmp_path):
    proc = _cli("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for stage in ("fetch", "validate", "preprocess", "train", "evaluate", "render"):
        assert stage in proc.stdout


def test_importing_the_cli_does_not_import_heavy_libraries(tmp_path):
    code = (
        "import sys, pipeline.cli\n"
        "heavy = [m for m in ('torch', 'mlflow', 'great_expectations') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_the_repository_params_file_spells_out_the_defaults():
    # params.yaml documents every default: a key the code changes without the file (or back) is caught here
    assert load(REPO / "params.yaml") == parse({})


# ------------------------------------------------------------------------------------------------ task translate
def test_translate_defaults_to_the_built_in_line_art_as_input():
    cfg = parse({"task": "translate", "data": {"source": "openmoji:color"}})
    assert cfg.task == "translate" and cfg.translate.input == "openmoji:line"
    assert cfg.translate.registry_name != cfg.registry.name  # the translator is registered apart


@pytest.mark.parametrize(
    "raw, needles",
    [
        ({"translate": {"input": ""}}, ["translate.input", "input domain"]),
        ({"translate": {"input": "nosuch:x"}}, ["translate.input", "unknown source"]),
        ({"data": {"source": "openmoji:line"}}, ["translate.input", "data.source", "two image sets"]),
        ({"translate": {"model": "pix2pix", "pairing": "unpaired"}}, ["translate.model", "cyclegan"]),
        ({"data": {"label": "label"}}, ["data.label", "not class-conditional"]),
        ({"model": {"arch": "vae"}}, ["model.arch", "pix2pix"]),
        ({"train": {"lecam": 0.3}}, ["train.lecam", "task generate"]),
        ({"train": {"cr": 10.0}}, ["train.cr", "task generate"]),
        ({"model": {"mbstd_group": 4}}, ["model.mbstd_group", "translate"]),
        ({"train": {"topk": 0.5}}, ["train.topk", "task generate"]),
        ({"train": {"xflip": True}}, ["train.xflip", "task generate"]),
        ({"model": {"d_batch_norm": False}}, ["model.d_batch_norm", "task generate", "to true"]),
        ({"translate": {"holdout": 1.0}}, ["translate.holdout"]),
    ],
)
def test_a_translate_task_missing_a_source_or_contradicting_itself_is_one_line(raw, needles):
    with pytest.raises(ArtganError) as err:
        parse({"task": "translate", **raw})
    msg = str(err.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg


def test_translate_keys_are_ignored_by_task_generate():
    # the translate section's defaults must not stop a generation run (its input source is only read under translate)
    assert parse({"translate": {"input": ""}}).task == "generate"
