"""yourai: a notebook-first workbench for Empirical Distrust fine-tuning on MLX."""

from yourai._blas import preload_openblas

__version__ = "0.1.0"

# Before anything imports mlx: see yourai/_blas.py for why and how to opt out.
preload_openblas()
