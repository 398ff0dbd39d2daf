"""`model.dequantize`: swap a quantized base's layers for float32 ones (and half-precision weights for float32)
where quantized and half-precision matmuls are slow.

MLX's quantized matmul is fast on Metal and CUDA but slow on the CPU backend. Measured on this project's
busy 2-core Linux box (SmolLM2-135M, one forward of batch 4 × 128, one OpenBLAS thread):

    4-bit (Q4_1 + Q8_0 embedding)  73.7 s     float32   3.3 s     bfloat16  38.8 s     float16  56.2 s

So on CPU the base is dequantized once, at load, to float32 (22× faster than 4-bit, 12× faster than
bfloat16; OpenBLAS has no half-precision GEMM). LoRA layers wrap the float Linear exactly as they wrap a
QuantizedLinear (same module paths, same adapter shapes), so adapters trained on the dequantized base load
onto the quantized one unchanged.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from yourai.config import DEQUANTIZE_MODES

CPU_FLOAT_DTYPE = mx.float32  # the fastest dtype for CPU matmuls, measured above
QUANTIZED_LAYERS = (nn.QuantizedLinear, nn.QuantizedEmbedding)


def should_dequantize(mode: str, backend: str) -> bool:
    """auto: dequantize on the CPU backend only (Metal/CUDA keep the 4-bit base); always/never as named."""
    if mode not in DEQUANTIZE_MODES:
        raise ValueError(f"model.dequantize must be one of {list(DEQUANTIZE_MODES)}, got {mode!r}")
    return mode == "always" or (mode == "auto" and backend == "cpu")


def is_quantized(model: nn.Module) -> bool:
    """Whether any layer holds packed weights."""
    return any(isinstance(module, QUANTIZED_LAYERS) for _, module in model.named_modules())


def needs_float32(model: nn.Module) -> bool:
    """Whether dequantize_model would change the model: packed layers, or half-precision float parameters.

    A float16 / bfloat16 base on the CPU is as slow as the timings above say, and even float16 weights
    beside float32 activations cost a cast per matmul: a SmolLM2 [2048, 576] x [576, 1536] product
    took 27.4 ms with float16 weights, 22.4 ms with float32 (min of 20, this machine).
    """
    return is_quantized(model) or any(mx.issubdtype(value.dtype, mx.floating) and value.dtype != CPU_FLOAT_DTYPE
                                      for _, value in tree_flatten(model.parameters()))


def dequantized_weight(layer: nn.Module, dtype: mx.Dtype) -> mx.array:
    """A quantized layer's weight matrix, computed in float32 first.

    Dequantizing in float16 loses bits when scales and biases nearly cancel (Q8_0's `(q + 128)·d − 128·d`).
    """
    if layer.mode != "affine":
        raise ValueError(f"only affine quantization can be dequantized, got mode {layer.mode!r}")
    weight = mx.dequantize(layer.weight, layer.scales.astype(mx.float32), layer.biases.astype(mx.float32),
                           group_size=layer.group_size, bits=layer.bits)
    return weight.astype(dtype)


def _float_layer(layer: nn.Module, dtype: mx.Dtype) -> nn.Module:
    """The float Embedding or Linear that computes what the quantized `layer` computes."""
    weight = dequantized_weight(layer, dtype)
    if isinstance(layer, nn.QuantizedEmbedding):
        replacement = nn.Embedding(*weight.shape)
    else:
        replacement = nn.Linear(weight.shape[1], weight.shape[0], bias="bias" in layer)
        if "bias" in layer:
            replacement.bias = layer.bias
    replacement.weight = weight
    return replacement


def dequantize_model(model: nn.Module, dtype: mx.Dtype = CPU_FLOAT_DTYPE) -> nn.Module:
    """Replace every quantized layer by its float twin and cast all parameters to `dtype`, in place."""
    swaps = [(name, _float_layer(module, dtype)) for name, module in model.named_modules()
             if isinstance(module, QUANTIZED_LAYERS)]
    if swaps:
        model.update_modules(tree_unflatten(swaps))
    floats = [(name, value.astype(dtype)) for name, value in tree_flatten(model.parameters())
              if mx.issubdtype(value.dtype, mx.floating)]
    model.update(tree_unflatten(floats))
    mx.eval(model.parameters())
    return model
