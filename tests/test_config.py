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
