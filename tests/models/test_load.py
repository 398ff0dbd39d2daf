"""Loading by name or path: what mlx-lm gets is never an alias, and bad paths or files are named before it fails."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import yourai  # noqa: F401  (preloads OpenBLAS before mlx)
import mlx.core as mx

from yourai.models import ModelError, ensure_default_model, load_model, resolve_adapter_dir, resolve_model
from yourai.models.load import check_safetensors


def _safetensors(path: Path) -> Path:
    mx.save_safetensors(str(path), {"a": mx.arange(10, dtype=mx.float32), "b": mx.ones((3, 4))})
    return path


def test_default_resolves_to_the_built_directory_and_hub_ids_pass_through():
    assert resolve_model("default") == str(ensure_default_model())
    assert resolve_model("mlx-community/SmolLM2-135M-Instruct") == "mlx-community/SmolLM2-135M-Instruct"


def test_a_local_directory_resolves_to_its_absolute_path(tmp_path, monkeypatch):
    model = tmp_path / "m"
    shutil.copytree(ensure_default_model(), model)
    monkeypatch.chdir(tmp_path)
    assert resolve_model("m") == str(model.resolve())


@pytest.mark.parametrize("name", ["/nonexistent/model", "./missing", "~/nope/model", "models/a/b"])
def test_a_path_that_does_not_exist_is_refused_before_the_hub(name):
    with pytest.raises(ModelError, match="no such model directory, and not a hub id"):
        resolve_model(name)


def test_a_directory_without_config_is_not_a_model(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_whole_safetensors_pass_and_truncated_ones_are_named(tmp_path):
    path = _safetensors(tmp_path / "w.safetensors")
    check_safetensors(path)
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(size - 5)
    with pytest.raises(ModelError, match=rf"w\.safetensors: truncated or corrupt: its header describes {size:,} bytes"):
        check_safetensors(path)
    path.write_bytes(b"\x00" * 4)
    with pytest.raises(ModelError, match=r"w\.safetensors: truncated or corrupt: not a readable safetensors file"):
        check_safetensors(path)


def test_corrupt_model_weights_fail_naming_the_file(tmp_path):
    model = tmp_path / "m"
    shutil.copytree(ensure_default_model(), model)
    weights = model / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.truncate(weights.stat().st_size // 2)
    with pytest.raises(ModelError, match=r"model\.safetensors: truncated or corrupt"):
        load_model(str(model))


def test_adapter_dir_or_a_run_dir_holding_adapters(tmp_path):
    adapters = tmp_path / "run" / "adapters"
    adapters.mkdir(parents=True)
    (adapters / "adapter_config.json").write_text(json.dumps({"fine_tune_type": "lora"}))
    _safetensors(adapters / "adapters.safetensors")
    assert resolve_adapter_dir(adapters) == adapters
    assert resolve_adapter_dir(tmp_path / "run") == adapters
    with pytest.raises(ModelError, match="no adapter_config.json here or in adapters/"):
        resolve_adapter_dir(tmp_path)
    with pytest.raises(ModelError, match="adapter directory not found"):
        resolve_adapter_dir(tmp_path / "nope")
