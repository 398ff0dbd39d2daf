"""Models through mlx-lm: load by name, hub id or local path (the shipped default, packaged models imported on first
use), dequantized where the backend wants float weights; weights saved, hashed and compared.

Everything written by yourai.models is a directory that `mlx_lm.load()` reads unchanged (config.json,
model.safetensors, tokenizer.json + tokenizer_config.json), so users can leave our code at any point
and keep working with mlx-lm's own tools.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from yourai.hardware import mlx_backend
from yourai.models.cpu_blocks import use_power_exponentials
from yourai.models.dequantize import dequantize_model, needs_float32, should_dequantize
from yourai.models.registry import PACKAGED_MODELS, ensure_packaged_model
from yourai.paths import default_model_dir, sample_corpus_path


DEFAULT_MODEL = "default"  # the alias for the embedded model; never written into an artifact
ADAPTER_CONFIG = "adapter_config.json"
ADAPTERS_SUBDIR = "adapters"  # where `yourai train` puts them inside its --out
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(?:/[\w.-]+)?$")  # owner/name, or a canonical name like gpt2


_REFETCH = "an interrupted download, copy or save? fetch, copy or train it again"


class ModelError(ValueError):
    """A model or adapter that cannot be used; the message names the path and what to do."""


def resolve_model(path_or_id: str | None = DEFAULT_MODEL) -> str:
    """What mlx-lm should load: the embedded default's or a packaged model's cached directory, an existing
    local directory (absolute), or a hub id. Anything else is refused here, with a message, before mlx-lm
    tries the hub."""
    if path_or_id in (DEFAULT_MODEL, "", None):
        return str(ensure_default_model())
    if path_or_id in PACKAGED_MODELS:
        return str(ensure_packaged_model(path_or_id))
    path = Path(str(path_or_id)).expanduser()
    if path.exists():
        check_model_dir(path)
        return str(path.resolve())
    if _HUB_ID_RE.match(str(path_or_id)) and not str(path_or_id).startswith((".", "~")):
        return str(path_or_id)
    raise ModelError(f"{path_or_id}: no such model directory, and not a hub id (owner/name, e.g. "
                     "mlx-community/SmolLM2-135M-Instruct); `yourai doctor` lists models for this machine")


def check_model_dir(path: Path) -> None:
    """A local model directory must hold config.json and whole safetensors files."""
    if not path.is_dir():
        raise ModelError(f"{path}: a model is a directory (config.json, *.safetensors, tokenizer files), not a file")
    if not (path / "config.json").is_file():
        raise ModelError(f"{path}: no config.json: not an mlx-lm / Hugging Face model directory")
    for weights in sorted(path.glob("*.safetensors")):
        check_safetensors(weights)


def check_safetensors(path: Path) -> None:
    """Refuse a truncated or corrupt safetensors file by its header, before a loader fails without naming it.

    Layout: an 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}},
    then the tensor bytes; the largest end offset must equal the bytes after the header.
    """
    size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            (header_bytes,) = struct.unpack("<Q", handle.read(8))
            if header_bytes > size - 8:
                raise ValueError(f"header of {header_bytes} bytes in a {size}-byte file")
            header = json.loads(handle.read(header_bytes))
        ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    except (struct.error, ValueError, KeyError, TypeError, IndexError) as err:
        raise ModelError(f"{path}: truncated or corrupt: not a readable safetensors file ({err}); {_REFETCH}") from err
    expected = 8 + header_bytes + max(ends, default=0)
    if size != expected:
        raise ModelError(f"{path}: truncated or corrupt: its header describes {expected:,} bytes, the file has "
                         f"{size:,}; {_REFETCH}")


def resolve_adapter_dir(path: str | Path) -> Path:
    """An mlx-lm adapter directory, or a `yourai train` run directory holding one in adapters/."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelError(f"{path}: adapter directory not found")
    for candidate in (path, path / ADAPTERS_SUBDIR):
        if (candidate / ADAPTER_CONFIG).is_file():
            for weights in sorted(candidate.glob("*.safetensors")):
                check_safetensors(weights)
            return candidate
    raise ModelError(f"{path}: no {ADAPTER_CONFIG} here or in {ADAPTERS_SUBDIR}/: not an adapter or training run directory")


def load_model(path_or_id: str = DEFAULT_MODEL, adapter_path: str | Path | None = None, dequantize: str = "auto"):
    """(model, tokenizer): the one loader training, evaluation, notebooks and commands share.

    "default" builds the embedded model on first use; `dequantize` is model.dequantize (auto | never |
    always, see yourai/models/dequantize.py), applied before the adapters, which wrap float and quantized
    layers alike. Bad paths, truncated weights and unloadable adapters raise ModelError naming the file.
    """
    from mlx_lm import load
    from mlx_lm.tuner.utils import load_adapters

    name = resolve_model(path_or_id)
    adapters = resolve_adapter_dir(adapter_path) if adapter_path else None
    try:
        model, tokenizer = load(name)
        if should_dequantize(dequantize, mlx_backend()) and needs_float32(model):
            dequantize_model(model)
        use_power_exponentials(model)  # on the CPU only: SwiGLU and attention without mx.exp (models/cpu_blocks.py)
        if adapters:
            load_adapters(model, str(adapters))
            model.eval()
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        what = f"{name} with adapters {adapters}" if adapters else name
        raise ModelError(f"{what}: cannot be loaded: {type(err).__name__}: {err}") from err
    return model, tokenizer


def ensure_default_model(out_dir: Path | None = None) -> Path:
    """The embedded default model directory; built from the sample corpus only where none is there yet.

    The shipped weights are always there in a checkout; a build happens when YOURAI_DEFAULT_MODEL (or
    `out_dir`) names a directory without a model, e.g. to evaluate this platform's own build.
    """
    out_dir = Path(out_dir) if out_dir else default_model_dir()
    if not (out_dir / "config.json").exists():
        from yourai.models.tiny import build_tiny_model  # tiny imports this module: import on use

        build_tiny_model(out_dir, sample_corpus_path(), seed=0)
    return out_dir


def save_mlx_model(model: nn.Module, config: dict, out_dir: Path) -> None:
    """Weights and config in the layout mlx_lm.load() reads."""
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(out_dir / "model.safetensors"), weights, metadata={"format": "mlx"})
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def weights_sha256(model_dir: str | Path) -> str:
    """Hash of every tensor's name, dtype, shape and bytes: equal hashes ⇔ equal weights."""
    weights = mx.load(str(Path(model_dir) / "model.safetensors"))
    digest = hashlib.sha256()
    for name in sorted(weights):
        array = np.array(weights[name])
        digest.update(f"{name}:{array.dtype}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def weight_differences(model_dir: str | Path, reference_dir: str | Path) -> dict:
    """How far one build's weights lie from another's, tensor by tensor.

    `max_relative_l2` is the largest ‖a − b‖ / ‖b‖ over tensors (float64): the scale-free distance a
    change of BLAS or backend leaves after training; `identical` says every byte agrees.
    """
    ours = mx.load(str(Path(model_dir) / "model.safetensors"))
    reference = mx.load(str(Path(reference_dir) / "model.safetensors"))
    if sorted(ours) != sorted(reference):
        raise ValueError(f"{model_dir} and {reference_dir} hold different tensors: "
                         f"{sorted(set(ours) ^ set(reference))[:5]}")
    relative, identical = {}, True
    for name in sorted(ours):
        a, b = np.array(ours[name], dtype=np.float64), np.array(reference[name], dtype=np.float64)
        if a.shape != b.shape:
            raise ValueError(f"{model_dir}: tensor {name} has shape {a.shape}, {reference_dir} has {b.shape}")
        identical = identical and np.array_equal(a, b)
        relative[name] = float(np.linalg.norm(a - b) / max(np.linalg.norm(b), np.finfo(np.float64).tiny))
    worst = max(relative, key=relative.get)
    return {"identical": identical, "max_relative_l2": relative[worst], "worst_tensor": worst, "relative_l2": relative}
