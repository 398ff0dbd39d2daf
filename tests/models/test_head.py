"""The chunked head: same cross-entropy and gradients as whole logits, without holding whole logits."""

from __future__ import annotations

import numpy as np
import pytest

import yourai  # noqa: F401  (preloads OpenBLAS before mlx)
import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map
from mlx_lm.models import llama
from mlx_lm.tuner.utils import linear_to_lora_layers

from yourai.loss import objective_from_token_ce, objective_loss
from yourai.models import head as head_module
from yourai.models.head import HeadSplit, chunked_cross_entropy, split_head, token_cross_entropy

SEED = 0


def _llama(vocab: int = 300, tied: bool = True, hidden: int = 32) -> nn.Module:
    """A 2-layer mlx-lm Llama with LoRA (lora_b nonzero, so every LoRA gradient is live)."""
    mx.random.seed(SEED)
    args = llama.ModelArgs(model_type="llama", hidden_size=hidden, num_hidden_layers=2, intermediate_size=2 * hidden,
                           num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=vocab,
                           tie_word_embeddings=tied)
    model = llama.Model(args)
    model.freeze()
    linear_to_lora_layers(model, 2, {"rank": 4, "scale": 10.0, "dropout": 0.0})
    model.update(tree_map(lambda p: p + 0.05 * mx.random.normal(p.shape), model.trainable_parameters()))
    mx.eval(model.parameters())
    return model


def _batch(vocab: int, rows: int = 3, width: int = 21):
    rng = np.random.default_rng(SEED)
    tokens = rng.integers(0, vocab, size=(rows, width + 1)).astype(np.int32)
    mask = (np.arange(width)[None, :] < np.array([width, width - 7, 5])[:rows, None]).astype(np.float32)
    return (mx.array(tokens[:, :-1]), mx.array(tokens[:, 1:]), mx.array(mask),
            mx.array(np.array([2.0, 0.5, 1.0], np.float32)[:rows]), mx.array(np.array([0.1, 0.9, 0.5], np.float32)[:rows]),
            mx.array(np.array([6.0, 0.5, 2.0], np.float32)[:rows]))


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 7 positions (for vocabulary 300): several chunks, the last one ragged."""
    monkeypatch.setattr(head_module, "CE_CHUNK_BYTES", 7 * 4 * 300)


@pytest.mark.parametrize("tied", [True, False])
def test_split_reproduces_the_models_logits(tied):
    model = _llama(tied=tied)
    split = split_head(model)
    assert split is not None and split.vocab_size == 300
    inputs = _batch(300)[0]
    np.testing.assert_array_equal(np.array(split.head(split.hidden(inputs))), np.array(model(inputs)))


@pytest.mark.parametrize("vocab, rows", [(49152, 320), (300, 55872), (151936, 64), (2**21 + 1, 7)])
def test_chunks_are_a_multiple_of_64_positions_where_that_many_fit(vocab, rows):
    split = HeadSplit(body=None, head=None, vocab_size=vocab)
    assert split.chunk_tokens == rows and 4 * vocab * rows <= head_module.CE_CHUNK_BYTES


@pytest.mark.parametrize("differentiable", [True, False])
def test_chunked_cross_entropy_equals_whole_logits(small_chunks, differentiable):
    model = _llama()
    split = split_head(model)
    assert split.chunk_tokens == 7
    inputs, targets = _batch(300)[:2]
    whole = nn.losses.cross_entropy(model(inputs), targets)
    chunked = chunked_cross_entropy(split, split.hidden(inputs), targets, differentiable=differentiable)
    assert chunked.shape == targets.shape and chunked.dtype == mx.float32
    np.testing.assert_allclose(np.array(chunked), np.array(whole), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["plain", "weighted", "faithful"])
def test_chunked_objective_and_lora_gradients_match_whole_logits(small_chunks, mode):
    model = _llama()
    split = split_head(model)
    inputs, targets, mask, weights, authority, entropy = _batch(300)
    settings = {"mode": mode, "lambda_weight": 0.6, "alpha": 2.7}

    def whole(model_):
        return objective_loss(model_(inputs), targets, mask, weights, authority, entropy, **settings)[0]

    def chunked(model_):
        token_ce = token_cross_entropy(model_, split, inputs, targets)
        return objective_from_token_ce(token_ce, mask, weights, authority, entropy, **settings)[0]

    loss_whole, grads_whole = nn.value_and_grad(model, whole)(model)
    compiled = mx.compile(lambda: nn.value_and_grad(model, chunked)(model), inputs=[model.state], outputs=[model.state])
    loss_chunked, grads_chunked = compiled()
    assert loss_chunked.item() == pytest.approx(loss_whole.item(), rel=1e-6)
    flat_whole, flat_chunked = dict(tree_flatten(grads_whole)), dict(tree_flatten(grads_chunked))
    assert set(flat_whole) == set(flat_chunked) and any("lora_a" in name for name in flat_whole)
    for name, grad in flat_whole.items():
        assert float(mx.max(mx.abs(grad))) > 0  # the comparison is not vacuous
        np.testing.assert_allclose(np.array(flat_chunked[name]), np.array(grad), rtol=1e-4, atol=1e-6, err_msg=name)


class _ScaledLogits(nn.Module):
    """A model whose logits are NOT head(body(x)): the split must notice and step aside."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.model, self.inner = inner.model, inner

    def __call__(self, inputs, cache=None):
        return 0.5 * self.inner(inputs, cache=cache)


def test_no_split_when_logits_are_more_than_head_of_body():
    wrapped = _ScaledLogits(_llama())
    assert split_head(wrapped) is None
    inputs, targets = _batch(300)[:2]
    fallback = token_cross_entropy(wrapped, None, inputs, targets)
    np.testing.assert_allclose(np.array(fallback), np.array(nn.losses.cross_entropy(wrapped(inputs), targets)), rtol=1e-6)


def test_training_splits_only_a_frozen_head_evaluation_any():
    model = _llama()
    model.model.embed_tokens.unfreeze()
    assert split_head(model) is None  # its gradient would be lost
    assert split_head(model, differentiable=False) is not None


def test_split_probe_leaves_training_mode_and_random_state_alone():
    model = _llama()
    model.train()
    before = np.array(mx.random.state[0])
    split_head(model)
    assert model.training and all(m.training for m in model.modules())
    np.testing.assert_array_equal(np.array(mx.random.state[0]), before)


def _peak_increase_mb(step) -> float:
    mx.synchronize()
    mx.reset_peak_memory()
    baseline = mx.get_active_memory()
    mx.eval(step())
    return (mx.get_peak_memory() - baseline) / 2**20


def test_training_step_never_holds_the_whole_logits(monkeypatch):
    """Vocabulary 16,384, batch 32 x 64: 128 MB of float32 logits; chunks of 16 positions (1 MB)."""
    monkeypatch.setattr(head_module, "CE_CHUNK_BYTES", 2**20)
    vocab, rows, width = 16384, 32, 64
    model = _llama(vocab=vocab, hidden=64)
    split = split_head(model)
    rng = np.random.default_rng(SEED)
    inputs, targets = (mx.array(rng.integers(0, vocab, size=(rows, width)).astype(np.int32)) for _ in range(2))
    logits_mb = rows * width * vocab * 4 / 2**20

    def whole():
        return nn.value_and_grad(model, lambda m: nn.losses.cross_entropy(m(inputs), targets).mean())(model)

    def chunked():
        return nn.value_and_grad(model, lambda m: token_cross_entropy(m, split, inputs, targets).mean())(model)

    def body_only():  # what the step holds without any head: activations, attention
        return nn.value_and_grad(model, lambda m: (split.hidden(inputs) ** 2).mean())(model)

    body_mb = _peak_increase_mb(body_only)
    whole_mb, chunked_mb = _peak_increase_mb(whole) - body_mb, _peak_increase_mb(chunked) - body_mb
    assert whole_mb > logits_mb  # the plain step does hold them (so this test can fail)
    assert chunked_mb < 0.25 * logits_mb, f"the chunked head added {chunked_mb:.0f} MB to the step's peak"
