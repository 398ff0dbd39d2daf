"""Base models in, mlx-lm directories out: loading by name or path, the embedded default, converters."""

from yourai.models.load import ensure_default_model, load_model, save_mlx_model, weight_differences, weights_sha256

__all__ = ["ensure_default_model", "load_model", "save_mlx_model", "weight_differences", "weights_sha256"]
