"""The batched log-likelihood engine: budgets, the shared prefix, and every path equal to one forward per request."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from tqa_cases import sample_items

from yourai.eval import loglik
from yourai.eval import truthfulqa as tqa


def test_plan_batches_respects_the_token_budget_and_covers_every_row():
    lengths = [5, 40, 12, 7, 33, 3, 18]
    batches = loglik.plan_batches(lengths, max_batch_tokens=40)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert all(len(batch) * max(lengths[i] for i in batch) <= 40 for batch in batches)


def test_plan_batches_respects_the_row_cap():
    batches = loglik.plan_batches([1] * 10, max_batch_tokens=100, max_rows=3)
    assert [len(batch) for batch in batches] == [3, 3, 3, 1]


def test_shared_prefix_leaves_every_row_a_context_token():
    assert loglik.shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 3, 4, 6]]) == 3
    assert loglik.shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2
    assert loglik.shared_prefix_length([[7, 2], [1, 2]]) == 0


def one_forward_each(model, requests) -> np.ndarray:
    """The peer: a whole forward per request, whole logits, log-softmax in float64."""
    lls = []
    for context, continuation in requests:
        tokens = list(context) + list(continuation)
        logits = np.array(model(mx.array([tokens[:-1]])).astype(mx.float32))[0].astype(np.float64)
        shifted = logits - logits.max(-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        lls.append(sum(log_probs[len(context) - 1 + i, token] for i, token in enumerate(continuation)))
    return np.array(lls)


@pytest.fixture(scope="module")
def requests(tiny):
    """Questions of several tail lengths, choices of 1 to 20 tokens, one context repeated."""
    model, tokenizer = tiny
    found, _ = tqa.mc_requests(tokenizer, sample_items(8), tqa.EvalOptions(progress=False))
    tails = {len(context) for context, _ in found}
    assert len(tails) > 2 and min(len(c) for _, c in found) >= 1 and max(len(c) for _, c in found) > 8
    return found + [(found[0][0], found[0][1][:1])]  # a one-token continuation: scored from the context alone


@pytest.mark.parametrize("share_prefix, batch_tokens", [(True, None), (True, 24), (False, None), (False, 40)])
def test_every_path_equals_one_forward_per_request(tiny, requests, share_prefix, batch_tokens):
    model, _ = tiny
    assert loglik.split_head(model, differentiable=False) is not None  # the chunked head is what is tested
    lls = loglik.score_requests(model, requests, share_prefix=share_prefix, max_batch_tokens=batch_tokens, progress=False)
    np.testing.assert_allclose(lls, one_forward_each(model, requests), atol=1e-4)


def test_small_kv_budget_changes_batches_not_scores(tiny, requests, monkeypatch):
    model, _ = tiny
    expected = loglik.score_requests(model, requests, progress=False)
    monkeypatch.setattr(loglik, "MAX_BATCH_KV_POSITIONS", 1)  # one continuation per forward
    np.testing.assert_allclose(loglik.score_requests(model, requests, progress=False), expected, atol=1e-5)


def test_models_without_a_split_head_score_the_same(tiny, requests, monkeypatch):
    model, _ = tiny
    expected = loglik.score_requests(model, requests, progress=False)
    monkeypatch.setattr(loglik, "split_head", lambda _model, **_: None)  # whole logits at the scored positions
    np.testing.assert_allclose(loglik.score_requests(model, requests, progress=False), expected, atol=1e-5)


def test_plan_batches_keeps_padding_within_the_slack():
    lengths = [2, 3, 3, 4, 10, 11, 30]
    batches = loglik.plan_batches(lengths, max_batch_tokens=1000)
    for batch in batches:
        real = sum(lengths[i] for i in batch)
        assert len(batch) * max(lengths[i] for i in batch) <= (1 + loglik.PAD_SLACK) * real or len(batch) == 1
    assert len(batches) > 1  # a budget of 1000 alone would have put every row in one batch


def test_continuations_that_begin_alike_share_their_stem_and_score_the_same(tiny):
    """Stems of 0, 1 and 3 shared tokens, a member that ends where the stem does, a one-token continuation."""
    model, tokenizer = tiny
    context = tqa.encode_pair(tokenizer, tqa.mc_context("Why?"), " x", False)[0]
    other = tqa.encode_pair(tokenizer, tqa.mc_context("Who is it?"), " x", False)[0]
    continuations = [[5, 6, 7, 8, 9], [5, 6, 7, 8, 11], [5, 6, 7, 12], [5, 13], [5, 6], [14, 15, 16], [14], [17, 18]]
    requests = [(context, c) for c in continuations] + [(other, c) for c in continuations[:3]]
    owners, flat = [0] * len(continuations), continuations
    stems = {stem.tokens: stem.members for stem in loglik._stems(owners, flat)}
    assert stems[(5,)] == (0, 1, 2, 3, 4) and stems[()] == (7,) and (14,) not in stems  # 14 alone has 1 token
    lls = loglik.score_requests(model, requests, progress=False)
    np.testing.assert_allclose(lls, one_forward_each(model, requests), atol=1e-4)
    three = loglik._stems([0, 0, 0], continuations[:3])
    assert three[0].tokens == (5, 6, 7)


def test_waves_of_one_context_score_the_same(tiny, requests, monkeypatch):
    model, _ = tiny
    expected = loglik.score_requests(model, requests, progress=False)
    monkeypatch.setattr(loglik, "WAVE_CONTEXTS", 1)  # no raggedness across contexts at all
    np.testing.assert_allclose(loglik.score_requests(model, requests, progress=False), expected, atol=1e-5)
