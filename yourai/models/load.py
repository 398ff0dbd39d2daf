"""Models through mlx-lm: load by name, hub id or local path (the embedded default and packaged models are built or
imported on first use), dequantized where the backend wants float weights; weights saved and hashed.

Everything written by yourai.models is a directory that `mlx_lm.load()` reads unchanged (config.json,
model.safetensors, tokenizer.json + tokenizer_config.json), so users can leave our code at any point
and keep working with mlx-lm's own tools.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from yourai.hardware import mlx_backend
from yourai.models.dequantize import dequantize_model, is_quantized, should_dequantize
from yourai.models.registry import PACKAGED_MODELS, ensure_packaged_model
from yourai.paths import default_model_dir, sample_corpus_path


def resolve_model(path_or_id: str | None = "default") -> str:
    """What mlx_lm.load should open: "default" and packaged names become their cached directories."""
    if path_or_id in ("default", "", None):
        return str(ensure_default_model())
    if path_or_id in PACKAGED_MODELS:
        return str(ensure_packaged_model(path_or_id))
    return str(path_or_id)


def load_model(path_or_id: str = "default", adapter_path: str | None = None, dequantize: str = "auto"):
    """(model, tokenizer): the one loader training, evaluation, notebooks and commands share.

    `dequantize` is model.dequantize (auto | never | always, see yourai/models/dequantize.py); it is
    applied before the adapters, which wrap float and quantized layers alike.
    """
    from mlx_lm import load
    from mlx_lm.tuner.utils import load_adapters

    model, tokenizer = load(resolve_model(path_or_id))
    if should_dequantize(dequantize, mlx_backend()) and is_quantized(model):
        dequantize_model(model)
    if adapter_path:
        load_adapters(model, str(adapter_path))
        model.eval()
    return model, tokenizer


def ensure_default_model(out_dir: Path | None = None) -> Path:
    """The embedded default model directory, built once from the sample corpus and cached."""
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
