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

from yourai.models import cpu_blocks, cpu_math


def test_power_exp_is_exp_to_float32_rounding():
    x = mx.array(np.linspace(-80.0, 30.0, 20001, dtype=np.float32))
    got, want = np.array(cpu_math.power_exp(x)), np.exp(np.array(x, dtype=np.float64))
    np.testing.assert_allclose(got, want, rtol=6e-6, atol=0)  # ln 2 * |x log2 e| * 2^-24 = 4.8e-6 at |x| = 80
    assert np.array(cpu_math.power_exp(mx.array([-200.0, 0.0, 100.0]))).tolist() == [0.0, 1.0, float("inf")]


def test_power_swiglu_is_silu_times_x_including_the_tails():
    gate = mx.array(np.concatenate([np.linspace(-30, 30, 6001), [-1e4, 1e4, 0.0]]).astype(np.float32))
    x = mx.array(np.random.default_rng(0).normal(size=gate.shape).astype(np.float32))
    np.testing.assert_allclose(np.array(cpu_math.power_swiglu(gate, x)), np.array(nn.silu(gate) * x), rtol=2e-6, atol=1e-7)
    weights = mx.array(np.random.default_rng(1).normal(size=gate.shape).astype(np.float32))
    grads = [mx.grad(lambda g, v: (fn(g, v) * weights).sum(), argnums=(0, 1))(gate, x)
             for fn in (cpu_math.power_swiglu, lambda g, v: nn.silu(g) * v)]
    for ours, mlx in zip(*grads):  # d/dgate (finite at -1e4 too) and d/dx
        np.testing.assert_allclose(np.array(ours), np.array(mlx), rtol=2e-5, atol=1e-6)


def _model() -> nn.Module:
    mx.random.seed(0)
    args = llama.ModelArgs(model_type="llama", hidden_size=32, num_hidden_layers=2, intermediate_size=64,
                           num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=100)
    return llama.Model(args)


def test_the_swap_changes_the_mlp_class_only_and_keeps_the_outputs():
    model, plain, inputs = _model(), _model(), mx.array([[1, 5, 9, 2, 7]])
    assert cpu_blocks.use_power_exponentials(model) == 6  # 2 MLP, 2 attention and the 2 blocks holding them
    assert all(type(layer.mlp).__name__ == "PowerMLP" and isinstance(layer.mlp, llama.MLP) for layer in model.layers)
    assert all(type(layer.self_attn).__name__ == "PowerAttention" for layer in model.layers)
    assert all(type(layer).__name__ == "PowerBlock" and isinstance(layer, llama.TransformerBlock) for layer in model.layers)
    assert cpu_blocks.use_power_exponentials(model) == 0  # a second call finds nothing left to swap
    np.testing.assert_allclose(np.array(model(inputs)), np.array(plain(inputs)), rtol=1e-5, atol=1e-5)
    for each in (model, plain):  # LoRA wraps the same projections under the same names
        linear_to_lora_layers(each, 2, {"rank": 4, "scale": 10.0, "dropout": 0.0})
    assert [n for n, _ in tree_flatten(model.parameters())] == [n for n, _ in tree_flatten(plain.parameters())]
    assert "model.layers.1.mlp.gate_proj.lora_a" in dict(tree_flatten(model.trainable_parameters()))


def test_off_the_cpu_nothing_changes(monkeypatch):
    monkeypatch.setattr(cpu_math, "on_cpu", lambda: False)
    model = _model()
    assert cpu_blocks.use_power_exponentials(model) == 0 and all(type(layer.mlp) is llama.MLP for layer in model.layers)
    assert all(type(layer.self_attn) is llama.Attention and type(layer) is llama.TransformerBlock for layer in model.layers)
    x = mx.array([0.5, -3.0])
    assert np.array(cpu_math.exp(x)).tolist() == np.array(mx.exp(x)).tolist()


@pytest.mark.skipif(not cpu_math.on_cpu(), reason="the swap is made only where arrays run on the CPU")
def test_models_users_load_get_the_swap():
    from yourai.models import load_model

    model, _ = load_model("default")
    assert {type(layer.mlp).__name__ for layer in model.model.layers} == {"PowerMLP"}
    assert {type(layer.self_attn).__name__ for layer in model.model.layers} == {"PowerAttention"}
    assert {type(layer).__name__ for layer in model.model.layers} == {"PowerBlock"}


def _qkv(batch: int, length: int, span: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    return (mx.array(rng.normal(size=(batch, 6, length, 8)).astype(np.float32)),
            mx.array(rng.normal(size=(batch, 2, span, 8)).astype(np.float32)),
            mx.array(rng.normal(size=(batch, 2, span, 8)).astype(np.float32)))


_RAGGED = np.arange(9)[None, None, None, :] < np.array([9, 6, 7])[:, None, None, None] + np.arange(4)[None, None, :, None] - 3


@pytest.mark.parametrize("mask", [None, "causal", "bool [L, S]", "bool [B, 1, L, S]", "additive [B, heads, L, S]"])
def test_power_attention_equals_mlx_attention_and_its_gradient(mask):
    queries, keys, values = _qkv(3, 4, 9)
    arrays = {"bool [L, S]": mx.array(np.tril(np.ones((4, 9), bool), 5)),
              "bool [B, 1, L, S]": mx.array(_RAGGED),
              "additive [B, heads, L, S]": mx.array(np.random.default_rng(2).normal(size=(3, 6, 4, 9)).astype(np.float32))}
    mask = arrays.get(mask, mask)
    ours = cpu_math.power_attention(queries, keys, values, 0.35, mask)
    mlx = mx.fast.scaled_dot_product_attention(queries, keys, values, scale=0.35, mask=mask)
    np.testing.assert_allclose(np.array(ours), np.array(mlx), rtol=2e-5, atol=2e-6)
    def loss(fn):
        return lambda q, k, v: (fn(q, k, v) * mx.arange(8)).sum()
    got = mx.grad(loss(lambda q, k, v: cpu_math.power_attention(q, k, v, 0.35, mask)), argnums=(0, 1, 2))(queries, keys, values)
    want = mx.grad(loss(lambda q, k, v: mx.fast.scaled_dot_product_attention(q, k, v, scale=0.35, mask=mask)),
                   argnums=(0, 1, 2))(queries, keys, values)
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-5)


def test_swapped_attention_matches_with_a_cache_and_a_prefix_cache():
    from mlx_lm.models.cache import make_prompt_cache

    from yourai.eval.kv_cache import layer_caches, ragged_mask
    from yourai.eval.loglik import prefill_prefix

    model, plain = _model(), _model()
    cpu_blocks.use_power_exponentials(model)
    prompt, step = mx.array([[3, 8, 1, 4, 4, 9]]), mx.array([[7, 2]])
    outputs = []
    for each in (model, plain):
        cache = make_prompt_cache(each)
        outputs.append((each(prompt, cache=cache), each(step, cache=cache)))
    for a, b in zip(*outputs):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-5, atol=1e-5)
    rows = mx.array([[5, 6, 1], [2, 9, 9]])
    joined = []
    for each in (model, plain):  # TruthfulQA's shared prefix, per-row middles and the ragged mask
        prefix = prefill_prefix(each, [1, 2, 3, 4])
        middle = [(k[:, :, :2], v[:, :, :2]) for k, v in (
            (mx.broadcast_to(k, (2, *k.shape[1:])), mx.broadcast_to(v, (2, *v.shape[1:]))) for k, v in prefix)]
        caches = layer_caches(prefix, middle, np.array([2, 1]))
        assert caches[0].make_mask(3).shape == ragged_mask(4, 2, np.array([2, 1]), 3).shape
        joined.append(each(rows, cache=caches))
    np.testing.assert_allclose(np.array(joined[0]), np.array(joined[1]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("length", [8, 10])  # whole blocks, and a short last block
def test_causal_attention_in_query_blocks_equals_mlx_attention(monkeypatch, length):
    """The MLX-ops path (no kernels: they take the whole head at once, tested in test_native.py)."""
    monkeypatch.setattr(cpu_math, "CAUSAL_BLOCK", 4)
    monkeypatch.setattr(cpu_math, "kernels", lambda *arrays: None)
    calls = []
    whole = cpu_math._attention_tokens
    monkeypatch.setattr(cpu_math, "_attention_tokens", lambda q, k, v, *rest: calls.append(k.shape[2]) or whole(q, k, v, *rest))
    queries, keys, values = _qkv(2, length, length, seed=7)
    weights = mx.array(np.random.default_rng(8).normal(size=queries.shape).astype(np.float32))
    def run(fn):
        return mx.value_and_grad(lambda q, k, v: (fn(q, k, v) * weights).sum(), argnums=(0, 1, 2))(queries, keys, values)
    (ours, grads) = run(lambda q, k, v: cpu_math.power_attention(q, k, v, 0.35, "causal"))
    assert calls == list(range(4, length, 4)) + [length]  # each block of queries against the keys up to its end
    (mlx, want) = run(lambda q, k, v: mx.fast.scaled_dot_product_attention(q, k, v, scale=0.35, mask="causal"))
    np.testing.assert_allclose(ours.item(), mlx.item(), rtol=1e-5)
    for a, b in zip(grads, want):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-5)
