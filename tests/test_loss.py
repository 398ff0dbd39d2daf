"""Tests for yourai.loss: reference values, validation, weights, and gradients through a LoRA Llama."""

from __future__ import annotations

import itertools

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlx.utils import tree_flatten, tree_map
from mlx_lm.models import llama
from mlx_lm.tuner.trainer import default_loss
from mlx_lm.tuner.utils import linear_to_lora_layers

from yourai.loss import (
    auto_lambda,
    distrust_residual,
    distrust_term,
    distrust_weights,
    empirical_distrust_loss,
    max_gradient_difference,
    gradient_check,
    objective_gradients,
    objective_loss,
    per_sample_ce,
)

# (w_auth, H_prov bits) -> alpha = 2.7 value, from the issue (computed by hand from the formula).
REFERENCE_VALUES = [
    (0.05, 7.5, 149.8047),
    (0.9, 1.0, 4.5812),
    (0.99, 0.0, 57.2605),
    (0.3, 5.5, 71.4252),
    (0.5, 3.0, 14.3682),
]
SEED = 0
VOCAB = 256


# ---------------------------------------------------------------- faithful term


@pytest.mark.parametrize(("w_auth", "entropy_bits", "expected"), REFERENCE_VALUES)
def test_faithful_term_matches_reference_values(w_auth, entropy_bits, expected):
    assert empirical_distrust_loss(w_auth, entropy_bits, alpha=2.7) == pytest.approx(expected, abs=1e-3)


def test_array_reductions_agree_with_scalar_values():
    w_auth = np.array([row[0] for row in REFERENCE_VALUES])
    entropy = np.array([row[1] for row in REFERENCE_VALUES])
    expected = np.array([row[2] for row in REFERENCE_VALUES])
    per_sample = empirical_distrust_loss(w_auth, entropy, reduction="none")
    np.testing.assert_allclose(per_sample, expected, atol=1e-3)
    assert empirical_distrust_loss(w_auth, entropy, reduction="mean") == pytest.approx(expected.mean(), abs=1e-3)
    assert empirical_distrust_loss(w_auth, entropy, reduction="sum") == pytest.approx(expected.sum(), abs=1e-3)


def test_accepts_mx_arrays_and_lists():
    from_mx = empirical_distrust_loss(mx.array([0.05, 0.9]), mx.array([7.5, 1.0]))
    from_list = empirical_distrust_loss([0.05, 0.9], [7.5, 1.0])
    assert from_mx.item() == pytest.approx(from_list, rel=1e-6)
    assert from_list == pytest.approx((149.8047 + 4.5812) / 2, abs=1e-3)


def test_host_functions_answer_in_the_callers_type():
    """Code written for the reference's empirical_distrust_loss(mx.array, mx.array) gets an mx.array back."""
    w, h = [0.05, 0.9, 0.99], [7.5, 1.0, 0.0]
    mean_mx = empirical_distrust_loss(mx.array(w), mx.array(h))
    assert isinstance(mean_mx, mx.array) and mean_mx.shape == () and mean_mx.dtype == mx.float32
    none_mx = empirical_distrust_loss(mx.array(w, dtype=mx.bfloat16), mx.array(h, dtype=mx.bfloat16), reduction="none")
    assert isinstance(none_mx, mx.array) and none_mx.shape == (3,) and none_mx.dtype == mx.bfloat16
    mean_np = empirical_distrust_loss(np.array(w), np.array(h))
    assert isinstance(mean_np, np.float64) and not isinstance(mean_np, mx.array)
    assert isinstance(empirical_distrust_loss(np.array(w), np.array(h), reduction="none"), np.ndarray)
    assert type(empirical_distrust_loss(0.05, 7.5)) is float
    weights_mx = distrust_weights(mx.array(w), mx.array(h))
    assert isinstance(weights_mx, mx.array) and weights_mx.dtype == mx.float32
    np.testing.assert_array_equal(np.array(weights_mx), distrust_weights(np.array(w), np.array(h)))
    assert isinstance(distrust_residual(mx.array(w), mx.array(h)), mx.array)
    assert isinstance(distrust_residual(np.array(w), np.array(h)), np.ndarray)
    assert type(distrust_residual(0.5, 1.0)) is float
    assert isinstance(auto_lambda(mx.array(4.0), mean_mx, 0.3), mx.array)
    assert type(auto_lambda(4.0, float(mean_mx.item()), 0.3)) is float


def test_alpha_scales_the_term_linearly():
    assert empirical_distrust_loss(0.3, 5.5, alpha=3.0) == pytest.approx(71.4252 / 2.7 * 3.0, abs=1e-3)


def test_term_vanishes_on_the_valley():
    w_auth = 0.9
    assert empirical_distrust_loss(w_auth, -np.log(1 - w_auth + 1e-8)) == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("w_auth", "entropy_bits", "alpha", "message"),
    [
        (1.0, 1.0, 2.7, "w_auth must be in [0.0, 0.99], got 1.0"),
        (-0.1, 1.0, 2.7, "w_auth must be in [0.0, 0.99], got -0.1"),
        (0.5, -2.0, 2.7, "H_prov must be a finite number of bits >= 0, got -2.0"),
        (0.5, 1.0, 3.5, "alpha must be in [2.3, 3.0], got 3.5"),
        (0.5, 1.0, 2.0, "alpha must be in [2.3, 3.0], got 2.0"),
        ([0.1, 0.5, 1.2, 2.0], [1.0] * 4, 2.7, "w_auth[2] must be in [0.0, 0.99], got 1.2"),
        ([0.1, 0.5, 0.2], [1.0, float("nan"), -1.0], 2.7, "H_prov[1] must be a finite number of bits >= 0, got nan"),
        ([0.1, float("nan")], [1.0, 1.0], 2.7, "w_auth[1] must be in [0.0, 0.99], got nan"),
    ],
)
def test_rejects_out_of_range_values_naming_them(w_auth, entropy_bits, alpha, message):
    with pytest.raises(ValueError) as caught:
        empirical_distrust_loss(w_auth, entropy_bits, alpha=alpha)
    assert str(caught.value) == message


def test_rejects_unknown_reduction_and_mismatched_shapes():
    with pytest.raises(ValueError, match="reduction must be one of"):
        empirical_distrust_loss(0.5, 1.0, reduction="max")
    with pytest.raises(ValueError, match=r"same shape, got \(2,\) and \(3,\)"):
        empirical_distrust_loss([0.1, 0.2], [1.0, 2.0, 3.0])


def test_weights_validate_like_the_term():
    with pytest.raises(ValueError, match=r"w_auth\[1\] must be in"):
        distrust_weights([0.2, 0.995], [1.0, 1.0], "monotone")
    with pytest.raises(ValueError, match="scheme must be one of"):
        distrust_weights([0.2], [1.0], "inverse")
    with pytest.raises(ValueError, match="cap .* must be a finite number >= 1, got 0.5"):
        distrust_weights([0.2], [1.0], "monotone", cap=0.5)
    with pytest.raises(ValueError, match="at least one sample"):
        distrust_weights([], [], "monotone")


# ---------------------------------------------------------------- weights

metadata_rows = st.lists(
    st.tuples(st.floats(0.0, 0.99), st.floats(0.0, 12.0)),
    min_size=2,
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(rows=metadata_rows, cap=st.floats(1.0, 1000.0))
def test_monotone_never_rewards_authority_or_low_entropy(rows, cap):
    w_auth, entropy = np.array(rows).T
    weights = distrust_weights(w_auth, entropy, "monotone", cap=cap)
    for i, j in itertools.combinations(range(len(rows)), 2):
        if w_auth[i] <= w_auth[j] and entropy[i] >= entropy[j]:  # i is less trusted than j
            assert weights[i] >= weights[j], (rows[i], rows[j], weights[i], weights[j])
        if w_auth[j] <= w_auth[i] and entropy[j] >= entropy[i]:
            assert weights[j] >= weights[i], (rows[i], rows[j], weights[i], weights[j])


def test_roemmele_rewards_authority_where_monotone_does_not():
    # (0.99, 0.0) is more authoritative AND lower-entropy than (0.9, 1.0); the square still ranks it higher.
    w_auth, entropy = [0.99, 0.9, 0.05], [0.0, 1.0, 7.5]
    roemmele = distrust_weights(w_auth, entropy, "roemmele", cap=1e6)
    monotone = distrust_weights(w_auth, entropy, "monotone", cap=1e6)
    assert roemmele[0] > roemmele[1]
    assert monotone[0] < monotone[1]


@settings(max_examples=200, deadline=None)
@given(rows=metadata_rows, cap=st.floats(1.0, 1000.0), scheme=st.sampled_from(["roemmele", "monotone", "none"]))
def test_weights_have_dataset_mean_one_and_respect_the_cap(rows, cap, scheme):
    w_auth, entropy = np.array(rows).T
    weights = distrust_weights(w_auth, entropy, scheme, cap=cap)
    assert weights.dtype == np.float32 and weights.shape == (len(rows),)
    assert float(weights.mean(dtype=np.float64)) == pytest.approx(1.0, abs=1e-5)
    assert weights.min() > 0
    assert weights.max() / weights.min() <= cap * (1 + 1e-5)


def test_roemmele_weights_are_proportional_to_the_faithful_term_when_uncapped():
    w_auth = np.array([row[0] for row in REFERENCE_VALUES])
    entropy = np.array([row[1] for row in REFERENCE_VALUES])
    weights = distrust_weights(w_auth, entropy, "roemmele", cap=100.0)  # 149.8 / 4.58 = 32.7 > 30
    term = empirical_distrust_loss(w_auth, entropy, reduction="none")
    np.testing.assert_allclose(weights, term / term.mean(), rtol=1e-5)


def test_cap_floors_the_least_trusted_at_max_over_cap():
    # patent-like (huge term) vs on-the-valley sample (term 0): uncapped ratio is infinite.
    weights = distrust_weights([0.05, 0.9, 0.9], [7.5, -np.log(0.1 + 1e-8), 1.0], "roemmele", cap=30.0)
    assert weights.max() / weights.min() == pytest.approx(30.0, rel=1e-5)
    assert weights[1] == pytest.approx(weights.min())


def test_none_scheme_is_all_ones():
    np.testing.assert_array_equal(distrust_weights([0.1, 0.9], [5.0, 0.2], "none"), np.ones(2, np.float32))


def test_weights_on_the_valley_everywhere_fall_back_to_uniform():
    w_auth = np.array([0.5, 0.9])
    weights = distrust_weights(w_auth, -np.log(1 - w_auth + 1e-8), "roemmele")
    np.testing.assert_allclose(weights, [1.0, 1.0])


# ---------------------------------------------------------------- auto-lambda


def test_auto_lambda_hits_the_target_fraction_of_ce():
    lam = auto_lambda(ce_estimate=2.5, distrust_mean=50.0, target_ratio=0.3)
    assert lam * 50.0 == pytest.approx(0.3 * 2.5)
    with pytest.raises(ValueError, match="distrust_mean must be > 0"):
        auto_lambda(2.5, 0.0, 0.3)
    with pytest.raises(ValueError, match="ce_estimate must be a finite number >= 0"):
        auto_lambda(float("nan"), 1.0, 0.3)


# ---------------------------------------------------------------- the in-graph objective


def _batch(batch_size: int = 3, length: int = 12) -> dict[str, mx.array]:
    """Random tokens with ragged lengths (mask 1 on counted targets), weights and metadata."""
    rng = np.random.default_rng(SEED)
    tokens = rng.integers(0, VOCAB, size=(batch_size, length + 1))
    lengths = np.array([length, length // 2, length - 3][:batch_size])
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.float32)
    return {
        "inputs": mx.array(tokens[:, :-1].astype(np.int32)),
        "targets": mx.array(tokens[:, 1:].astype(np.int32)),
        "mask": mx.array(mask),
        "lengths": lengths,
        "weights": mx.array(np.array([2.5, 0.2, 0.3], np.float32)[:batch_size]),
        "authority_weight": mx.array(np.array([0.05, 0.9, 0.99], np.float32)[:batch_size]),
        "provenance_entropy": mx.array(np.array([7.5, 1.0, 0.0], np.float32)[:batch_size]),
    }


def _objective(logits, batch, mode, lambda_weight=0.6):
    return objective_loss(
        logits, batch["targets"], batch["mask"], batch["weights"], batch["authority_weight"], batch["provenance_entropy"],
        mode=mode, lambda_weight=lambda_weight, alpha=2.7,
    )


def test_plain_mode_equals_mlx_lm_default_loss():
    mx.random.seed(SEED)
    model = _lora_llama()
    batch = _batch()
    full = mx.concatenate([batch["inputs"], batch["targets"][:, -1:]], axis=1)
    # mlx-lm counts targets at steps 1..length (length = number of targets here, offset 0 -> start 1)
    lengths = mx.array(np.stack([np.ones_like(batch["lengths"]), batch["lengths"]], axis=1))
    peer, peer_tokens = default_loss(model, full, lengths)
    total, parts = _objective(model(batch["inputs"]), batch, "plain")
    assert total.item() == pytest.approx(peer.item(), rel=1e-6)
    assert parts["tokens"].item() == peer_tokens.item() == batch["lengths"].sum()


def test_objective_parts_are_consistent():
    mx.random.seed(SEED)
    logits = mx.random.normal((3, 12, VOCAB))
    batch = _batch()
    faithful, parts = _objective(logits, batch, "faithful", lambda_weight=0.6)
    expected_term = empirical_distrust_loss([0.05, 0.9, 0.99], [7.5, 1.0, 0.0], alpha=2.7)
    assert parts["distrust_term"].item() == pytest.approx(expected_term, rel=1e-5)
    assert faithful.item() == pytest.approx(parts["ce"].item() + 0.6 * expected_term, rel=1e-5)
    ce_i, tokens_i = per_sample_ce(logits, batch["targets"], batch["mask"])
    w = np.array(batch["weights"])
    assert parts["weighted_ce"].item() == pytest.approx(float((w * np.array(ce_i)).sum() / w.sum()), rel=1e-5)
    assert parts["mean_weight"].item() == pytest.approx(w.mean(), rel=1e-6)
    np.testing.assert_array_equal(np.array(tokens_i), batch["lengths"])
    both, _ = _objective(logits, batch, "both", lambda_weight=0.6)
    assert both.item() == pytest.approx(parts["weighted_ce"].item() + 0.6 * expected_term, rel=1e-5)


def test_weighted_ignores_samples_without_tokens():
    mx.random.seed(SEED)
    logits = mx.random.normal((3, 12, VOCAB))
    batch = _batch()
    batch["mask"] = batch["mask"] * mx.array([[1.0], [0.0], [1.0]])
    ce_i, _ = per_sample_ce(logits, batch["targets"], batch["mask"])
    weighted, _ = _objective(logits, batch, "weighted")
    ce_i = np.array(ce_i)
    assert weighted.item() == pytest.approx((2.5 * ce_i[0] + 0.3 * ce_i[2]) / 2.8, rel=1e-5)


def test_accepts_authority_0_99_stored_as_float32():
    assert empirical_distrust_loss(np.float32(0.99), 0.0) == pytest.approx(57.2605, abs=1e-3)
    with pytest.raises(ValueError, match="got 0.991"):
        empirical_distrust_loss(np.float32(0.991), 0.0)


def test_in_graph_term_matches_host_term():
    w_auth = np.array([0.05, 0.9, 0.99, 0.3, 0.5], np.float32)
    entropy = np.array([7.5, 1.0, 0.0, 5.5, 3.0], np.float32)
    in_graph = distrust_term(mx.array(w_auth), mx.array(entropy), 2.7).item()
    assert in_graph == pytest.approx(empirical_distrust_loss(w_auth, entropy), rel=1e-5)


def test_objective_rejects_unknown_mode():
    batch = _batch()
    with pytest.raises(ValueError, match="mode must be one of"):
        _objective(mx.zeros((3, 12, VOCAB)), batch, "reweighted")


def test_objective_runs_compiled():
    mx.random.seed(SEED)
    logits = mx.random.normal((3, 12, VOCAB))
    batch = _batch()
    eager, _ = _objective(logits, batch, "both")
    compiled = mx.compile(lambda lg: _objective(lg, batch, "both"))
    total, parts = compiled(logits)
    assert total.item() == pytest.approx(eager.item(), rel=1e-6)
    assert set(parts) == {"ce", "distrust_term", "weighted_ce", "mean_weight", "tokens"}


# ---------------------------------------------------------------- gradients through a real LoRA Llama


def _lora_llama() -> nn.Module:
    """A 2-layer mlx-lm Llama, frozen, with rank-4 LoRA; lora_b made nonzero so every LoRA grad is live."""
    mx.random.seed(SEED)
    args = llama.ModelArgs(
        model_type="llama", hidden_size=64, num_hidden_layers=2, intermediate_size=128,
        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=VOCAB,
        tie_word_embeddings=True,
    )
    model = llama.Model(args)
    model.freeze()
    linear_to_lora_layers(model, 2, {"rank": 4, "scale": 10.0, "dropout": 0.0})
    trainable = model.trainable_parameters()
    model.update(tree_map(lambda p: p + 0.02 * mx.random.normal(p.shape), trainable))
    mx.eval(model.parameters())
    return model


def _grads(model: nn.Module, batch: dict, mode: str) -> dict[str, mx.array]:
    return objective_gradients(model, batch, mode=mode, lambda_weight=0.6, alpha=2.7)


@pytest.mark.slow
def test_faithful_term_has_exactly_zero_gradient_through_lora_llama():
    model, batch = _lora_llama(), _batch()
    plain, faithful = _grads(model, batch, "plain"), _grads(model, batch, "faithful")
    assert set(plain) == set(faithful) and any("lora_a" in k for k in plain)
    assert max(float(mx.max(mx.abs(g))) for g in plain.values()) > 0  # the check is not vacuous
    assert max_gradient_difference(plain, faithful) == 0.0


@pytest.mark.slow
def test_weighted_gradient_differs_from_plain():
    model, batch = _lora_llama(), _batch()
    assert max_gradient_difference(_grads(model, batch, "plain"), _grads(model, batch, "weighted")) > 1e-4


@pytest.mark.slow
def test_weighted_gradient_is_the_weighted_sum_of_per_sample_gradients():
    model, batch = _lora_llama(), _batch()
    weighted = _grads(model, batch, "weighted")
    weights = np.array(batch["weights"])
    expected = {k: mx.zeros_like(v) for k, v in weighted.items()}
    for i in range(len(weights)):
        single = {k: v[i : i + 1] for k, v in batch.items() if isinstance(v, mx.array)}
        single_grads = _grads(model, single, "plain")  # one sample: token-mean CE == CE_i
        expected = {k: expected[k] + float(weights[i] / weights.sum()) * single_grads[k] for k in expected}
    assert max_gradient_difference(weighted, expected) <= 1e-5


@pytest.mark.slow
def test_gradient_check_reports_zero_for_faithful_and_nonzero_for_weighted():
    report = gradient_check(_lora_llama(), _batch(), lambda_weight=0.6, alpha=2.7)
    assert report["lora_tensors"] > 0 and report["max_abs_grad_plain"] > 0
    assert report["max_abs_dgrad_faithful"] == 0.0
    assert report["max_abs_dgrad_weighted"] > 1e-4 and report["max_abs_dgrad_weighted_vs_uniform"] > 1e-6


def test_gradient_difference_refuses_different_parameter_sets():
    with pytest.raises(ValueError, match="gradient sets differ"):
        max_gradient_difference({"a": mx.zeros(2)}, {"b": mx.zeros(2)})


@pytest.mark.slow
def test_compiled_training_with_faithful_term_gives_bitwise_identical_adapters():
    import mlx.optimizers as optim
    from functools import partial

    batch = {k: v for k, v in _batch().items() if isinstance(v, mx.array)}
    adapters = {}
    for mode in ("plain", "faithful"):
        model = _lora_llama()
        optimizer = optim.AdamW(learning_rate=1e-2)
        loss_and_grad = nn.value_and_grad(model, lambda m, b: _objective(m(b["inputs"]), b, mode)[0])
        state = [model.state, optimizer.state]

        @partial(mx.compile, inputs=state, outputs=state)
        def step(b):
            loss, grads = loss_and_grad(model, b)
            optimizer.update(model, grads)
            return loss

        for _ in range(3):
            mx.eval(step(batch), state)
        adapters[mode] = dict(tree_flatten(model.trainable_parameters()))
    assert max_gradient_difference(adapters["plain"], adapters["faithful"]) == 0.0
    assert max_gradient_difference(adapters["plain"], dict(tree_flatten(_lora_llama().trainable_parameters()))) > 0
