"""yourai's fused CPU kernels (yourai.models.native): built here, equal to float64 references and to the MLX
ops they replace (kept as the fallback), and every reason not to use them reported instead of raised."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import yourai  # noqa: F401  (preloads OpenBLAS before mlx)
import mlx.core as mx
import mlx.nn as nn

from yourai.models import cpu_math, head, native

RNG = np.random.default_rng(0)


def _kernels():
    state = native.status()
    if state.module is None and not sys.platform.startswith("linux"):
        pytest.skip(f"the kernels are built on Linux only: {state.reason}")
    assert state.module is not None, f"the kernels should build on this machine: {state.reason}"
    return state.module


def _array(*shape: int, scale: float = 1.0) -> mx.array:
    return mx.array((RNG.normal(size=shape) * scale).astype(np.float32))


def _f64(a: mx.array) -> np.ndarray:
    return np.array(a).astype(np.float64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))  # float64: exact in the tails where float32 (and tanh's form) give 0


def test_swiglu_and_its_gradients_equal_float64():
    k = _kernels()
    gate = mx.array(np.concatenate([np.linspace(-100, 100, 4001), [-1e4, 1e4, 0.0]]).astype(np.float32))
    x, d_out = _array(*gate.shape), _array(*gate.shape)
    g, v, d = _f64(gate), _f64(x), _f64(d_out)
    s = _sigmoid(g)
    value, d_gate, d_x = g * s * v, d * v * (s + g * s * (1 - s)), d * g * s
    np.testing.assert_allclose(np.array(k.swiglu(gate, x)), value, rtol=2e-6, atol=1e-30)
    got = k.swiglu_grads(gate, x, d_out, True)
    for ours, want in zip(got, (value, d_gate, d_x)):
        np.testing.assert_allclose(np.array(ours), want, rtol=5e-6, atol=1e-30)
    assert len(k.swiglu_grads(gate, x, d_out, False)) == 2


@pytest.mark.parametrize("width", [1, 7, 16, 129, 256])
def test_softmax_rows_and_their_backward_equal_float64(width):
    k = _kernels()
    scores = _array(3, 5, width, scale=6.0)
    scores = mx.where(mx.array(RNG.random(scores.shape) < 0.3) & (mx.arange(width) > 0), mx.finfo(mx.float32).min, scores)
    probs, lse = k.softmax_rows(scores)
    s = _f64(scores)
    want_lse = np.log(np.exp(s - s.max(-1, keepdims=True)).sum(-1, keepdims=True)) + s.max(-1, keepdims=True)
    np.testing.assert_allclose(np.array(lse), want_lse, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.array(probs), np.exp(s - want_lse), rtol=2e-6, atol=1e-9)
    assert (np.array(probs)[np.array(scores) == np.finfo(np.float32).min] == 0).all()  # masked keys weigh exactly 0
    d_weights, delta = _array(3, 5, width), _array(3, 5, 1)
    weights, d_scores = k.softmax_grad_rows(scores, lse, d_weights, delta)
    w = np.exp(s - _f64(lse))
    np.testing.assert_allclose(np.array(weights), w, rtol=2e-6, atol=1e-9)
    np.testing.assert_allclose(np.array(d_scores), w * (_f64(d_weights) - _f64(delta)), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("queries, keys", [(5, 5), (4, 9), (1, 3), (64, 256)])
def test_a_causal_softmax_masks_by_row_and_takes_no_exponential_of_a_masked_key(queries, keys):
    k = _kernels()
    scores = _array(2, 3 * queries, keys, scale=4.0)  # 3 heads of a group share a key head: rows repeat the queries
    position = np.arange(3 * queries) % queries + (keys - queries)
    visible = np.arange(keys)[None, :] <= position[:, None]
    s = np.where(visible, _f64(scores), -np.inf)
    want_lse = np.log(np.exp(s - s.max(-1, keepdims=True)).sum(-1, keepdims=True)) + s.max(-1, keepdims=True)
    probs, lse = k.softmax_rows(scores, queries)
    np.testing.assert_allclose(np.array(lse), want_lse, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.array(probs), np.exp(s - want_lse), rtol=2e-6, atol=1e-9)
    assert (np.array(probs)[:, ~visible] == 0).all()
    d_weights, delta = _array(*scores.shape), _array(2, 3 * queries, 1)
    weights, d_scores = k.softmax_grad_rows(scores, lse, d_weights, delta, queries)
    np.testing.assert_allclose(np.array(weights), np.exp(s - _f64(lse)), rtol=2e-6, atol=1e-9)
    assert (np.array(d_scores)[:, ~visible] == 0).all()
    fallback = cpu_math.softmax_rows
    with native.disabled():
        for ours, mlx in zip((probs, lse), fallback(scores, queries)):
            np.testing.assert_allclose(np.array(ours), np.array(mlx), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="causal_queries"):
        k.softmax_rows(scores, keys + 1)


def test_the_exponential_is_float32_exact_to_an_ulp_and_keeps_its_tails():
    k = _kernels()
    x = mx.array(np.concatenate([np.linspace(-87.3, 88.7, 400001), [-1e4, -88.0, 89.0, np.inf, -np.inf, np.nan]])
                 .astype(np.float32))[:, None]
    zero = mx.zeros_like(x)
    got = np.array(k.softmax_grad_rows(x, zero, zero, zero)[0])[:, 0]  # e^(x - 0)
    want = np.exp(np.array(x, dtype=np.float64)[:, 0])
    finite = (want < np.finfo(np.float32).max) & (want > np.finfo(np.float32).tiny)  # float32 normals
    np.testing.assert_allclose(got[finite], want[finite], rtol=2.5e-7)
    assert got[-6:-1].tolist() == [0.0, 0.0, np.inf, np.inf, 0.0] and np.isnan(got[-1])


def test_row_cross_entropy_equals_float64_and_flags_targets_out_of_range():
    k = _kernels()
    logits, targets = _array(37, 1000, scale=5.0), mx.array(RNG.integers(0, 1000, 37).astype(np.int32))
    z, t = _f64(logits), np.array(targets)
    lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    grad = np.exp(z - lse[:, None])
    grad[np.arange(37), t] -= 1
    ce, d_logits = k.cross_entropy_rows(logits, targets, True)
    np.testing.assert_allclose(np.array(ce), lse - z[np.arange(37), t], rtol=1e-6, atol=2e-6)
    np.testing.assert_allclose(np.array(d_logits), grad, rtol=1e-5, atol=1e-7)
    (alone,) = k.cross_entropy_rows(logits, targets.astype(mx.uint32), False)
    np.testing.assert_array_equal(np.array(alone), np.array(ce))
    assert np.isnan(np.array(k.cross_entropy_rows(logits[:1], mx.array([1000]), False)[0])).all()


def test_log_softmax_over_a_real_vocabulary_is_float64_close_with_the_kernels():
    _kernels()
    logits = _array(6, 49152, scale=8.0)
    z = _f64(logits)
    want = z - (np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) + z.max(1, keepdims=True))
    assert np.abs(np.array(cpu_math.log_softmax(logits)) - want).max() < 2e-5
    with native.disabled():  # mx.logsumexp: float32 rounding over 49,152 terms
        np.testing.assert_allclose(np.array(cpu_math.log_softmax(logits)), want, atol=1e-3)


def _attention_f64(q, k, v, scale, causal):
    """(out [B, L, Hq * D], lse [B, Hq, L], and the vjp for a cotangent of out) in float64, grouped heads repeated."""
    q, k, v = _f64(q), _f64(k), _f64(v)
    group = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    length, span = q.shape[2], k.shape[2]
    scores = q @ k.transpose(0, 1, 3, 2) * scale
    if causal:
        scores = np.where(np.arange(span)[None, :] <= np.arange(length)[:, None] + span - length, scores, -np.inf)
    lse = np.log(np.exp(scores - scores.max(-1, keepdims=True)).sum(-1)) + scores.max(-1)
    weights = np.exp(scores - lse[..., None])
    out = weights @ v

    def vjp(d_tokens):
        d_out = _f64(d_tokens).reshape(q.shape[0], length, q.shape[1], -1).transpose(0, 2, 1, 3)
        d_weights = d_out @ v.transpose(0, 1, 3, 2)
        d_scores = weights * (d_weights - (d_out * out).sum(-1, keepdims=True))
        d_k = (d_scores.transpose(0, 1, 3, 2) @ q * scale).reshape(k.shape[0], -1, group, span, k.shape[3]).sum(2)
        d_v = (weights.transpose(0, 1, 3, 2) @ d_out).reshape(v.shape[0], -1, group, span, v.shape[3]).sum(2)
        return d_scores @ k * scale, d_k, d_v

    return out.transpose(0, 2, 1, 3).reshape(q.shape[0], length, -1), lse, vjp


@pytest.mark.parametrize("shape", [
    (2, 9, 3, 70, 70, 64, True),    # SmolLM2's heads (grouped 3:1), a causal sequence over two query tiles
    (1, 4, 4, 5, 23, 32, True),     # queries the last 5 of 23 positions (a cache before them)
    (2, 2, 1, 9, 9, 24, False),     # no mask; a head width that is not a multiple of the vector width
    (1, 2, 2, 130, 130, 128, True),
])
def test_whole_head_attention_and_its_gradients_equal_float64(shape):
    k = _kernels()
    batch, heads, kv_heads, length, span, dim, causal = shape
    q, keys, values = _array(batch, heads, length, dim), _array(batch, kv_heads, span, dim), _array(batch, kv_heads, span, dim)
    d_out = _array(batch, length, heads * dim)
    scale = dim ** -0.5 * 2  # sharper than usual: weights far from uniform
    out, lse = k.attention(q, keys, values, scale, causal)
    want_out, want_lse, vjp = _attention_f64(q, keys, values, scale, causal)
    np.testing.assert_allclose(np.array(out), want_out, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(np.array(lse), want_lse, rtol=2e-6, atol=2e-6)
    grads = k.attention_grads(q, keys, values, out, lse, d_out, scale, causal)
    for ours, want in zip(grads, vjp(d_out)):
        np.testing.assert_allclose(np.array(ours), want, rtol=5e-5, atol=5e-5)


def test_rms_norm_and_its_input_gradient_equal_float64():
    k = _kernels()
    x, weight, d_out = _array(3, 7, 37, scale=3.0), _array(37), _array(3, 7, 37)
    xs, w, d = _f64(x), _f64(weight), _f64(d_out)
    r = 1 / np.sqrt((xs**2).mean(-1, keepdims=True) + 1e-5)
    value = xs * r * w
    d_x = r * w * d - xs * r**3 * (xs * w * d).mean(-1, keepdims=True)
    np.testing.assert_allclose(np.array(k.rms_norm(x, weight, 1e-5)), value, rtol=2e-6, atol=1e-6)
    got_value, got_d_x = k.rms_norm_grads(x, weight, d_out, 1e-5, True)
    np.testing.assert_allclose(np.array(got_value), value, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(np.array(got_d_x), d_x, rtol=1e-5, atol=1e-5)
    assert len(k.rms_norm_grads(x, weight, d_out, 1e-5, False)) == 1


def test_cpu_math_rms_norm_and_its_gradients_match_mlx_with_and_without_kernels():
    x, weight, d_out = _array(2, 9, 40, scale=2.0), _array(40), _array(2, 9, 40)
    normed = cpu_math.NormedInput(nn.RMSNorm(40))
    normed.weight = weight

    def run():
        value, grads = mx.vjp(lambda a, w: cpu_math.rms_norm(a, w, 1e-5), [x, weight], [d_out])
        return [value, *grads, *normed.vjp([x], d_out)[1]]

    fused, plain = _with_and_without(run)
    _, want = mx.vjp(lambda a, w: mx.fast.rms_norm(a, w, 1e-5), [x, weight], [d_out])
    for ours, mlx in zip(fused, plain):
        np.testing.assert_allclose(np.array(ours), np.array(mlx), rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(np.array(fused[2]), np.array(want[1]), rtol=2e-5, atol=2e-5)  # the weight's gradient


@pytest.mark.parametrize("dims, traditional, base, scale, offset, width", [
    (64, False, 100000.0, 1.0, 0, 64),  # SmolLM2's
    (64, True, 10000.0, 1.0, 7, 64),    # pairs of neighbours; positions after a cache of 7
    (32, False, 500.0, 0.5, 3, 48),     # a partial rotation: the last 16 features pass through
])
def test_rope_on_heads_and_its_gradient_equal_mlx_rope(dims, traditional, base, scale, offset, width):
    _kernels()
    rope = nn.RoPE(dims, traditional=traditional, base=base, scale=scale)
    tokens, cotangent = _array(2, 37, 3, width), _array(2, 3, 37, width)
    ours = mx.vjp(lambda t: cpu_math.rope_heads(rope, t, offset), [tokens], [cotangent])
    want = mx.vjp(lambda t: rope(t.transpose(0, 2, 1, 3), offset=offset), [tokens], [cotangent])
    for a, b in zip(ours, want):
        assert a[0].shape == b[0].shape
        np.testing.assert_allclose(np.array(a[0]), np.array(b[0]), rtol=1e-5, atol=2e-5)
    positions = (offset + np.arange(37)) * scale
    angle = positions[:, None] * base ** (-2.0 * np.arange(dims // 2) / dims)  # float64: the first pair by hand
    x = _f64(tokens)[:, :, :, [0, 1] if traditional else [0, dims // 2]]
    first = x[..., 0] * np.cos(angle[:, :1]) - x[..., 1] * np.sin(angle[:, :1])
    np.testing.assert_allclose(np.array(ours[0][0])[:, :, :, 0], first.transpose(0, 2, 1), rtol=1e-5, atol=2e-5)


def test_inputs_that_are_views_are_read_as_their_values():
    k = _kernels()
    a = _array(64, 48)
    view = a.T  # not row-contiguous: the op copies it first
    np.testing.assert_allclose(np.array(k.softmax_rows(view)[0]), np.array(mx.softmax(view, axis=-1)), rtol=2e-6, atol=1e-8)
    broadcast = mx.broadcast_to(_array(1, 48), (64, 48))
    np.testing.assert_allclose(np.array(k.swiglu(broadcast, a)), np.array(nn.silu(broadcast) * a), rtol=2e-6, atol=1e-7)


def test_wrong_inputs_are_refused_with_the_op_named():
    k = _kernels()
    with pytest.raises(ValueError, match="swiglu.*float32"):
        k.swiglu(_array(4).astype(mx.float16), _array(4).astype(mx.float16))
    with pytest.raises(ValueError, match="swiglu.*shape"):
        k.swiglu(_array(4), _array(5))
    with pytest.raises(ValueError, match="cross_entropy_rows"):
        k.cross_entropy_rows(_array(4, 5), mx.array([1, 2]), True)
    with pytest.raises(ValueError, match="attention.*multiple of Hkv"):
        k.attention(_array(1, 3, 4, 8), _array(1, 2, 4, 8), _array(1, 2, 4, 8), 1.0, True)
    with pytest.raises(ValueError, match="attention.*S >= L"):
        k.attention(_array(1, 2, 6, 8), _array(1, 2, 4, 8), _array(1, 2, 4, 8), 1.0, True)
    with pytest.raises(ValueError, match="attention_grads.*lse"):
        k.attention_grads(_array(1, 2, 4, 8), _array(1, 2, 4, 8), _array(1, 2, 4, 8), _array(1, 4, 16), _array(1, 2), _array(1, 4, 16), 1.0, True)
    with pytest.raises(ValueError, match="rope.*even"):
        k.rope(_array(1, 4, 2, 8), 3, False, 10000.0, 1.0, 0, False)
    with pytest.raises(ValueError, match="rms_norm.*weight"):
        k.rms_norm(_array(3, 5), _array(4), 1e-5)


def _with_and_without(fn):
    """fn() traced with the kernels and again with MLX's ops."""
    _kernels()
    fused = fn()
    with native.disabled():
        assert cpu_math.kernels() is None
        plain = fn()
    return fused, plain


def test_cpu_math_gives_the_same_swiglu_and_gradients_with_and_without_kernels():
    gate, x, d_out = _array(2, 9, 40, scale=3.0), _array(2, 9, 40), _array(2, 9, 40)
    fused, plain = _with_and_without(lambda: [cpu_math.power_swiglu(gate, x),
                                              *mx.vjp(cpu_math.power_swiglu, [gate, x], [d_out])[1],
                                              *cpu_math.swiglu_vjp([gate, x], d_out)[1]])
    for ours, mlx in zip(fused, plain):
        np.testing.assert_allclose(np.array(ours), np.array(mlx), rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("mask", ["causal", None])
def test_attention_gives_the_same_outputs_and_gradients_with_and_without_kernels(mask):
    q, k, v = _array(2, 4, 150, 16), _array(2, 2, 150, 16), _array(2, 2, 150, 16)
    cotangent = _array(2, 4, 150, 16)

    def run():
        out, grads = mx.vjp(lambda *a: [cpu_math.power_attention(*a, 0.25, mask)], [q, k, v], [cotangent])
        return [*out, *grads]

    fused, plain = _with_and_without(run)
    for ours, mlx in zip(fused, plain):
        np.testing.assert_allclose(np.array(ours), np.array(mlx), rtol=1e-4, atol=2e-5)


def test_the_chunked_loss_gives_the_same_ce_and_gradient_with_and_without_kernels():
    weight = _array(300, 24, scale=0.5)
    split = head.HeadSplit(body=None, head=lambda h: h @ weight.T, vocab_size=300)
    hidden, targets = _array(2, 70, 24), mx.array(RNG.integers(0, 300, (2, 70)).astype(np.int32))
    per_token = _array(2, 70)

    def run():
        loss = lambda h: (head.chunked_cross_entropy(split, h, targets) * per_token).sum()
        value, grad = mx.value_and_grad(loss)(hidden)
        return [value, grad, head.chunked_cross_entropy(split, hidden, targets, differentiable=False)]

    fused, plain = _with_and_without(run)
    for ours, mlx in zip(fused, plain):
        np.testing.assert_allclose(np.array(ours), np.array(mlx), rtol=2e-5, atol=2e-6)


def test_yourai_native_0_turns_them_off_and_doctor_says_so():
    code = ("from yourai.models import native, cpu_math; s = native.status(); "
            "print(s.module is None, cpu_math.kernels() is None, s.reason)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**__import__("os").environ, "YOURAI_NATIVE": "0"})
    assert done.stdout.split()[:2] == ["True", "True"] and "YOURAI_NATIVE=0" in done.stdout
    doctor = subprocess.run([sys.executable, "-m", "yourai", "doctor"], capture_output=True, text=True, check=True,
                            env={**__import__("os").environ, "YOURAI_NATIVE": "0"})
    assert "CPU kernels      not in use: off (YOURAI_NATIVE=0)" in doctor.stdout


def test_yourai_native_threads_sets_the_threads_a_kernel_uses():
    _kernels()
    code = "from yourai.models import native; print(native.module().threads())"
    env = {**__import__("os").environ, "YOURAI_NATIVE_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert done.stdout.strip() == "1"


def test_each_reason_not_to_build_is_reported_not_raised(monkeypatch, tmp_path):
    monkeypatch.setattr(native.sys, "platform", "darwin")
    assert native._load().reason == "not built on darwin: MLX's own CPU kernels are used"
    monkeypatch.undo()
    monkeypatch.setattr(native.shutil, "which", lambda tool: None if tool == "cmake" else "/usr/bin/" + tool)
    assert native._load().reason == "not built: `cmake` is not on PATH"
    monkeypatch.undo()
    monkeypatch.setattr(native, "_mlx_internals", lambda: 7)
    assert "internals ABI" in native._load().reason and native._load().module is None
    monkeypatch.undo()
    broken = tmp_path / "kernels.cpp"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(native, "SOURCE", broken)
    monkeypatch.setenv("YOURAI_CACHE", str(tmp_path / "cache"))
    state = native._load()
    assert state.module is None and state.reason.startswith("build failed: `cmake --build` exited")
    assert sorted(p.name for p in (tmp_path / "cache" / "native").iterdir()) == [f"{native._build_key()}.lock"]  # no half build left
