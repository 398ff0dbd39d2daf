"""Models through mlx-lm: load by hub id or local path, the embedded default, weights saved, hashed and compared.

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

from yourai.paths import default_model_dir, sample_corpus_path


def load_model(path_or_id: str = "default", adapter_path: str | None = None):
    """(model, tokenizer) via mlx_lm.load; "default" is the shipped embedded model (or YOURAI_DEFAULT_MODEL)."""
    from mlx_lm import load

    if path_or_id in ("default", "", None):
        path_or_id = str(ensure_default_model())
    return load(str(path_or_id), adapter_path=str(adapter_path) if adapter_path else None)


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
