"""Config loading: unknown keys, wrong types, out-of-range values and overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from yourai.config import Config, ConfigError, load_config, parse_overrides, to_dict
from yourai.paths import configs_dir


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_default_config_loads_with_documented_defaults():
    config = load_config()
    assert isinstance(config, Config)
    assert config.loss.alpha == 2.7
    assert config.model.path == "default"


def test_unknown_key_names_file_and_dotted_key(tmp_path):
    path = _write(tmp_path, "train:\n  lora:\n    rnak: 16\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml.*unknown key 'train\.lora\.rnak'"):
        load_config(path)


def test_wrong_type_names_file_and_dotted_key(tmp_path):
    path = _write(tmp_path, "train:\n  steps: many\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml: train\.steps: expected int, got str 'many'"):
        load_config(path)


def test_bool_is_not_accepted_as_int(tmp_path):
    path = _write(tmp_path, "train:\n  batch_size: true\n")
    with pytest.raises(ConfigError, match=r"train\.batch_size: expected int"):
        load_config(path)


def test_out_of_range_names_the_range(tmp_path):
    path = _write(tmp_path, "loss:\n  alpha: 3.5\n")
    with pytest.raises(ConfigError, match=r"loss\.alpha: 3\.5 is outside the allowed range \[2\.3, 3\.0\]"):
        load_config(path)


def test_choice_lists_the_allowed_values(tmp_path):
    path = _write(tmp_path, "loss:\n  scheme: linear\n")
    with pytest.raises(ConfigError, match=r"loss\.scheme: 'linear' is not one of"):
        load_config(path)


def test_section_must_be_a_mapping(tmp_path):
    path = _write(tmp_path, "train: 5\n")
    with pytest.raises(ConfigError, match=r"train\.: expected a mapping"):
        load_config(path)


def test_invalid_yaml_names_the_file(tmp_path):
    path = _write(tmp_path, "train: [unclosed\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml: invalid YAML"):
        load_config(path)


def test_int_is_accepted_for_float_fields(tmp_path):
    config = load_config(_write(tmp_path, "train:\n  learning_rate: 1\n"))
    assert config.train.learning_rate == 1.0 and isinstance(config.train.learning_rate, float)


def test_cli_overrides_are_typed_by_yaml():
    config = load_config(overrides=["train.lora.rank=16", "loss.scheme=roemmele", "train.learning_rate=2e-4"])
    assert config.train.lora.rank == 16
    assert config.loss.scheme == "roemmele"
    assert config.train.learning_rate == pytest.approx(2e-4)


def test_papermill_style_mapping_overrides():
    config = load_config(overrides={"train.steps": 7, "curate.tiers.primary": 0.5})
    assert config.train.steps == 7 and config.curate.tiers.primary == 0.5


def test_bad_override_is_validated_like_the_file():
    with pytest.raises(ConfigError, match=r"with overrides train\.lora\.rank.*train\.lora\.rank: 0 is outside"):
        load_config(overrides=["train.lora.rank=0"])
    with pytest.raises(ConfigError, match=r"unknown key 'train\.nope'"):
        load_config(overrides=["train.nope=1"])


def test_override_without_equals_sign_is_an_error():
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["train.steps"])


def test_config_is_frozen():
    config = load_config()
    with pytest.raises(Exception):
        config.train.steps = 3  # type: ignore[misc]


def test_to_dict_round_trips_through_overrides():
    config = load_config(overrides=["train.steps=11"])
    assert to_dict(config)["train"]["steps"] == 11


@pytest.mark.parametrize("path", sorted((configs_dir() / "hardware").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_hardware_profile_loads(path):
    from yourai.config import load_hardware_profile

    profile = load_hardware_profile(path)
    assert profile.name == path.stem
    memory = profile.memory
    assert memory.clear_cache_fraction <= memory.pause_fraction <= memory.shrink_fraction <= memory.abort_fraction


# ---------------------------------------------------------------- what a user can get wrong


@pytest.mark.parametrize("key, value", [
    ("train.learning_rate", ".nan"), ("train.learning_rate", ".inf"), ("loss.alpha", ".nan"),
    ("train.lora.scale", ".inf"), ("memory.max_pause_s", ".inf"), ("curate.near_dup_threshold", "-.inf"),
])
def test_every_float_setting_rejects_nan_and_inf(key, value):
    with pytest.raises(ConfigError, match=rf"{key}: must be a finite number"):
        load_config(overrides=[f"{key}={value}"])


def test_nan_in_a_file_is_rejected_too(tmp_path):
    with pytest.raises(ConfigError, match=r"exp\.yaml: train\.learning_rate: must be a finite number, got nan"):
        load_config(_write(tmp_path, "train:\n  learning_rate: .NaN\n"))


def test_non_utf8_config_names_the_file_and_byte(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"model:\n  path: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not valid UTF-8 \(byte 18"):
        load_config(path)


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_override_that_is_bad_yaml_names_the_override():
    with pytest.raises(ConfigError, match=r"override 'train\.steps=\[': the value is not valid YAML"):
        parse_overrides(["train.steps=["])
    with pytest.raises(ConfigError, match="the key before '=' is empty"):
        parse_overrides(["=3"])


def test_list_elements_are_type_checked():
    with pytest.raises(ConfigError, match=r"curate\.sources\[0\]: expected str or a mapping, got int 1"):
        load_config(overrides=["curate.sources=[1,2]"])
    with pytest.raises(ConfigError, match=r"eval\.modes\[1\]: expected str, got int 2"):
        load_config(overrides=["eval.modes=[mc1, 2]"])
    assert load_config(overrides=["curate.sources=[{path: a.jsonl}]"]).curate.sources == [{"path": "a.jsonl"}]


def test_curate_defaults_and_fields_must_be_mappings():
    with pytest.raises(ConfigError, match=r"curate\.defaults: expected a mapping, got str"):
        load_config(overrides=["curate.defaults=CC0"])
    config = load_config(overrides={"curate.defaults.license": "CC0-1.0", "curate.fields.origin": "url"})
    assert config.curate.defaults == {"license": "CC0-1.0"} and config.curate.fields == {"origin": "url"}
