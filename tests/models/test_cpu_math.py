"""CPU exponentials (yourai.models.cpu_math): the same numbers as mx.exp / silu, the llama MLP swap, the device rule."""

from __future__ import annotations

import numpy as np
import pytest

import yourai  # noqa: F401  (preloads OpenBLAS before mlx)
import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from mlx_lm.models import llama
from mlx_lm.tuner.utils import linear_to_lora_layers

from yourai.models import cpu_math


def test_power_exp_is_exp_to_float32_rounding():
    x = mx.array(np.linspace(-80.0, 30.0, 20001, dtype=np.float32))
    got, want = np.array(cpu_math.power_exp(x)), np.exp(np.array(x, dtype=np.float64))
    np.testing.assert_allclose(got, want, rtol=6e-6, atol=0)  # ln 2 * |x log2 e| * 2^-24 = 4.8e-6 at |x| = 80
    assert np.array(cpu_math.power_exp(mx.array([-200.0, 0.0, 100.0]))).tolist() == [0.0, 1.0, float("inf")]


def test_power_swiglu_is_silu_times_x_including_the_tails():
    gate = mx.array(np.concatenate([np.linspace(-30, 30, 6001), [-1e4, 1e4, 0.0]]).astype(np.float32))
    x = mx.array(np.random.default_rng(0).normal(size=gate.shape).astype(np.float32))
    np.testing.assert_allclose(np.array(cpu_math.power_swiglu(gate, x)), np.array(nn.silu(gate) * x), rtol=2e-6, atol=1e-7)
    grads = [mx.grad(lambda g: fn(g, x).sum())(gate) for fn in (cpu_math.power_swiglu, lambda g, v: nn.silu(g) * v)]
    np.testing.assert_allclose(np.array(grads[0]), np.array(grads[1]), rtol=2e-5, atol=1e-6)  # finite at -1e4 too


def _model() -> nn.Module:
    mx.random.seed(0)
    args = llama.ModelArgs(model_type="llama", hidden_size=32, num_hidden_layers=2, intermediate_size=64,
                           num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=100)
    return llama.Model(args)


def test_the_swap_changes_the_mlp_class_only_and_keeps_the_outputs():
    model, plain, inputs = _model(), _model(), mx.array([[1, 5, 9, 2, 7]])
    assert cpu_math.use_power_swiglu(model) == 2
    assert all(type(layer.mlp).__name__ == "PowerMLP" and isinstance(layer.mlp, llama.MLP) for layer in model.layers)
    np.testing.assert_allclose(np.array(model(inputs)), np.array(plain(inputs)), rtol=1e-5, atol=1e-5)
    for each in (model, plain):  # LoRA wraps the same projections under the same names
        linear_to_lora_layers(each, 2, {"rank": 4, "scale": 10.0, "dropout": 0.0})
    assert [n for n, _ in tree_flatten(model.parameters())] == [n for n, _ in tree_flatten(plain.parameters())]
    assert "model.layers.1.mlp.gate_proj.lora_a" in dict(tree_flatten(model.trainable_parameters()))


def test_off_the_cpu_nothing_changes(monkeypatch):
    monkeypatch.setattr(cpu_math, "on_cpu", lambda: False)
    model = _model()
    assert cpu_math.use_power_swiglu(model) == 0 and all(type(layer.mlp) is llama.MLP for layer in model.layers)
    x = mx.array([0.5, -3.0])
    assert np.array(cpu_math.exp(x)).tolist() == np.array(mx.exp(x)).tolist()


@pytest.mark.skipif(not cpu_math.on_cpu(), reason="the swap is made only where arrays run on the CPU")
def test_models_users_load_get_the_swap():
    from yourai.models import load_model

    model, _ = load_model("default")
    assert {type(layer.mlp).__name__ for layer in model.model.layers} == {"PowerMLP"}
