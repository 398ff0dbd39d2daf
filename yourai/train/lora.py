"""The one LoRA builder: a frozen base with mlx-lm's LoRA/DoRA layers, and the adapter_config that describes it.

`yourai train`, notebook 03's gradient check and notebook 05's memory sweep all build their adapters
here, so they train exactly the same layers with the same settings.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from yourai.config import Config, ConfigError, LoraConfig


def lora_parameters(lora: LoraConfig) -> dict:
    """mlx-lm's `lora_parameters` block (keys only when the user chose them)."""
    params = {"rank": lora.rank, "scale": lora.scale, "dropout": lora.dropout}
    if lora.keys is not None:
        params["keys"] = list(lora.keys)
    return params


def attach_lora(model: nn.Module, lora: LoraConfig, model_name: str) -> dict:
    """Freeze the base, put LoRA (or DoRA) on the last `num_layers` blocks; returns adapter_config.json's content.

    `model_name` is what mlx-lm should load the adapters onto (a path or hub id, never an alias).
    """
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model.freeze()
    num_layers = len(model.layers) if lora.num_layers == -1 else min(lora.num_layers, len(model.layers))
    params = lora_parameters(lora)
    linear_to_lora_layers(model, num_layers, params, use_dora=lora.dora)
    if not tree_flatten(model.trainable_parameters()):
        raise ConfigError(f"train.lora.keys {lora.keys!r} matched no layer of {model_name}: nothing to train")
    return {
        "fine_tune_type": "dora" if lora.dora else "lora",
        "num_layers": num_layers,
        "lora_parameters": params,
        "model": model_name,
        "trainer": "yourai",
    }


def build_lora_model(model_path: str, lora: LoraConfig, seed: int | None = None,
                     dequantize: str = "auto") -> tuple[nn.Module, Any, dict]:
    """(model, tokenizer, adapter_config): the base loaded by name or path (model.dequantize applied), LoRA attached.

    With `seed`, mx.random is seeded after loading and before the LoRA init, so the initial adapters are a
    function of the seed alone: loading may draw random numbers (building the default model on first use does).
    On a quantized base mlx-lm's LoRA layers wrap QuantizedLinear (QLoRA); on a dequantized one, Linear; the
    adapters have the same paths and shapes either way, so they load onto the quantized base unchanged.
    adapter_config.json records the resolved model (the embedded default's directory, an absolute local
    path, or the hub id), so `mlx_lm.generate --model "$(jq -r .model adapter_config.json)"` works.
    """
    from yourai.models import load_model, resolve_model

    resolved = resolve_model(model_path)
    model, tokenizer = load_model(resolved, dequantize=dequantize)
    if seed is not None:
        mx.random.seed(seed)
    return model, tokenizer, attach_lora(model, lora, resolved)


def model_event(config: Config, model: nn.Module, adapter_config: dict) -> dict:
    """metrics.jsonl's record of the base a run trained on: what was asked, what was loaded, quantized or not."""
    from yourai.models.dequantize import is_quantized

    return {"event": "model", "path": config.model.path, "loaded_from": adapter_config["model"],
            "dequantize": config.model.dequantize, "quantized": is_quantized(model)}


@contextmanager
def grad_checkpointing(layer: nn.Module, enabled: bool = True) -> Iterator[None]:
    """mlx-lm's gradient checkpointing, undone on exit.

    mlx-lm's `grad_checkpoint` replaces `__call__` on the layer's *class*, so it would stay on
    for every later model of that class in the process (and wrap twice if applied again).
    """
    from mlx_lm.tuner.trainer import grad_checkpoint

    cls = type(layer)
    original = cls.__call__
    if enabled:
        grad_checkpoint(layer)
    try:
        yield
    finally:
        cls.__call__ = original
