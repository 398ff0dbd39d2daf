"""Base models in, mlx-lm directories out: loading by name or path, the embedded default, converters (llama2.c, GGUF)."""

from yourai.models.gguf import import_gguf
from yourai.models.load import (ModelError, ensure_default_model, load_model, resolve_adapter_dir, resolve_model,
                                save_mlx_model, weight_differences, weights_sha256)

__all__ = ["ModelError", "ensure_default_model", "import_gguf", "load_model", "resolve_adapter_dir", "resolve_model",
           "save_mlx_model", "weight_differences", "weights_sha256"]
