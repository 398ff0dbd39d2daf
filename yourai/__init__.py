"""yourai: a notebook-first workbench for Empirical Distrust fine-tuning on MLX."""

__version__ = "0.1.0"
