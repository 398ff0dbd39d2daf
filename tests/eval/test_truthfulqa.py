"""TruthfulQA scoring: lm-eval-exact prompts and metrics, and the fast scorer against independent per-choice references."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest

from tqa_cases import LM_EVAL_PRIMER, sample_items

from yourai.eval import truthfulqa as tqa
from yourai.eval.tqa_data import TQAItem, load_hf_jsonl
from yourai.models import load_model
from yourai.models.llama2c import import_llama2c


# ---------------------------------------------------------------- fixtures: files and a tiny model


# ---------------------------------------------------------------- loaders


# ---------------------------------------------------------------- prompt, tokens and metrics


def test_primer_and_prompt_are_lm_eval_verbatim():
    assert tqa.QA_PRIMER == LM_EVAL_PRIMER
    assert tqa.mc_context("Why?") == LM_EVAL_PRIMER + "\n\nQ: Why?\nA:"
    assert tqa.gen_context("Why?") == LM_EVAL_PRIMER + "\n\nQ: Why?"


def test_encode_pair_moves_trailing_context_spaces_and_splits_the_whole_encoding(tiny):
    _, tokenizer = tiny
    context_ids, continuation_ids = tqa.encode_pair(tokenizer, "Q: Why?\nA: ", "Because.", add_bos=False)
    assert context_ids == tokenizer.encode("Q: Why?\nA:", add_special_tokens=False)
    whole = tokenizer.encode("Q: Why?\nA: Because.", add_special_tokens=False)
    assert continuation_ids == whole[len(context_ids):]
    bos_context, _ = tqa.encode_pair(tokenizer, "Q: Why?\nA:", " Because.", add_bos=True)
    assert bos_context[0] == tokenizer.bos_token_id and bos_context[1:] == context_ids


def test_mc1_is_argmax_over_choices_and_ties_go_to_the_first():
    assert tqa.mc1_score([-1.0, -2.0, -3.0], [1, 0, 0]) == 1.0
    assert tqa.mc1_score([-2.0, -1.0, -3.0], [1, 0, 0]) == 0.0
    assert tqa.mc1_score([-1.0, -1.0], [1, 0]) == 1.0  # np.argmax → first maximum, as lm-eval
    assert tqa.mc1_score([-1.0, -1.0], [0, 1]) == 0.0


def test_mc2_is_softmax_mass_on_true_choices_whatever_their_order():
    lls = [np.log(0.2), np.log(0.1), np.log(0.3), np.log(0.4)]
    assert tqa.mc2_score(lls, [1, 0, 1, 0]) == pytest.approx(0.5)
    assert tqa.mc2_score(lls, [0, 1, 0, 0]) == pytest.approx(0.1)


def test_mc2_is_stable_for_very_negative_log_likelihoods():
    lls = [-1000.0, -1001.0, -1002.0]  # exp() underflows to 0 in float64: the naive formula gives 0/0
    expected = 1.0 / (1.0 + np.exp(-1.0) + np.exp(-2.0))
    assert tqa.mc2_score(lls, [1, 0, 0]) == pytest.approx(expected, rel=1e-12)
    assert tqa.mc2_score([-5e4, -1e4], [1, 0]) == 0.0
    assert np.isfinite(tqa.mc2_score([-1e300, -1e300], [1, 0]))


def test_gen_scores_follow_lm_eval_bleu_max_minus_max():
    scores = tqa.gen_scores("Peanuts are legumes.", ["Peanuts are legumes.", "No."], ["Peanuts are nuts."])
    assert scores["bleu_max"] == pytest.approx(100.0)
    assert 0 < scores["bleu_diff"] < 100 and scores["bleu_acc"] == 1.0
    with pytest.raises(ValueError):
        tqa.gen_scores("x", ["a"], [])


# ---------------------------------------------------------------- the fast scorer vs a per-choice reference


def reference_choice_ll(model, tokenizer, context: str, continuation: str) -> float:
    """Independent of yourai: own split, one forward per choice, log-softmax in numpy float64."""
    context_ids = tokenizer.encode(context, add_special_tokens=False)
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    answer_ids = whole[len(context_ids):]
    tokens = context_ids + answer_ids
    logits = np.array(model(mx.array([tokens[:-1]])).astype(mx.float32))[0].astype(np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return float(sum(log_probs[len(context_ids) - 1 + i, token] for i, token in enumerate(answer_ids)))


def reference_question_scores(model, tokenizer, item: TQAItem, forward=reference_choice_ll) -> tuple[float, float, list]:
    context = LM_EVAL_PRIMER + "\n\nQ: " + item.question + "\nA:"
    mc1_lls = [forward(model, tokenizer, context, " " + choice) for choice in item.mc1_choices]
    mc2_lls = [forward(model, tokenizer, context, " " + choice) for choice in item.mc2_choices]
    mc1 = float(np.argmax(mc1_lls) == item.mc1_labels.index(1))
    probs = np.exp(np.array(mc2_lls) - max(mc2_lls))
    mc2 = float(probs[np.array(item.mc2_labels) == 1].sum() / probs.sum())
    return mc1, mc2, mc1_lls + mc2_lls


@pytest.mark.parametrize("share_prefix, batch_tokens", [(True, None), (False, None), (False, 64)])
def test_batched_scores_equal_the_per_choice_reference(tiny, share_prefix, batch_tokens):
    model, tokenizer = tiny
    items = sample_items(6)  # choices of 3–20 tokens: padding must never reach a scored position
    options = tqa.EvalOptions(progress=False, share_prefix=share_prefix, max_batch_tokens=batch_tokens)
    rows = tqa.score_mc(model, tokenizer, items, options)
    for item, row in zip(items, rows):
        mc1, mc2, lls = reference_question_scores(model, tokenizer, item)
        assert np.max(np.abs(np.array(row["mc1_lls"] + row["mc2_lls"]) - lls)) < 1e-4
        assert row["mc1"] == mc1 and abs(row["mc2"] - mc2) < 1e-5
    lengths = {len(tqa.encode_pair(tokenizer, tqa.mc_context(items[0].question), " " + c, False)[1])
               for c in items[0].mc2_choices}
    assert len(lengths) > 1  # the test really mixes continuation lengths


def numpy_llama_forward(weights: dict[str, np.ndarray], config: dict, tokens: list[int],
                        past: list | None = None) -> tuple[np.ndarray, list]:
    """A float64 Llama forward written from the architecture (rotate-half RoPE, GQA, SwiGLU), independent of
    mlx and mlx-lm. `past` holds the context's per-layer (keys, values), so a choice costs only its own tokens."""
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim, eps = config["hidden_size"] // heads, config["rms_norm_eps"]
    offset, n = (past[0][0].shape[1] if past else 0), len(tokens)
    inv_freq = config.get("rope_theta", 10000.0) ** (-np.arange(0, head_dim, 2) / head_dim)
    angles = np.arange(offset, offset + n)[:, None] * inv_freq[None]
    cos, sin = np.cos(angles), np.sin(angles)

    def norm(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

    def rope(x):  # (heads, n, head_dim)
        x1, x2 = x[..., : head_dim // 2], x[..., head_dim // 2:]
        return np.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)

    def split(x, n_heads):
        return x.reshape(n, n_heads, head_dim).transpose(1, 0, 2)

    h, present = weights["model.embed_tokens.weight"][tokens], []
    causal = np.triu(np.full((n, offset + n), -np.inf), k=offset + 1)
    for layer in range(config["num_hidden_layers"]):
        w = {k.split(f"model.layers.{layer}.")[1]: v for k, v in weights.items() if k.startswith(f"model.layers.{layer}.")}
        x = norm(h, w["input_layernorm.weight"])
        q = rope(split(x @ w["self_attn.q_proj.weight"].T, heads))
        k, v = rope(split(x @ w["self_attn.k_proj.weight"].T, kv_heads)), split(x @ w["self_attn.v_proj.weight"].T, kv_heads)
        if past:
            k, v = np.concatenate([past[layer][0], k], axis=1), np.concatenate([past[layer][1], v], axis=1)
        present.append((k, v))
        k, v = np.repeat(k, heads // kv_heads, axis=0), np.repeat(v, heads // kv_heads, axis=0)
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(head_dim) + causal
        attn = np.exp(scores - scores.max(-1, keepdims=True))
        out = (attn / attn.sum(-1, keepdims=True)) @ v
        h = h + out.transpose(1, 0, 2).reshape(n, -1) @ w["self_attn.o_proj.weight"].T
        x = norm(h, w["post_attention_layernorm.weight"])
        gate, up = x @ w["mlp.gate_proj.weight"].T, x @ w["mlp.up_proj.weight"].T
        h = h + (gate / (1 + np.exp(-gate)) * up) @ w["mlp.down_proj.weight"].T
    return norm(h, weights["model.norm.weight"]) @ weights["model.embed_tokens.weight"].T, present


def numpy_log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


@pytest.fixture(scope="module")
def stories260k(stories260k_dir, tmp_path_factory):
    out = import_llama2c(stories260k_dir / "stories260K.bin", stories260k_dir / "tok512.bin",
                         tmp_path_factory.mktemp("stories260k"))
    return out, load_model(str(out))


@pytest.mark.slow
def test_stories260k_first_50_v0_questions_equal_an_independent_reference(stories260k, shared_dir):
    model_dir, (model, tokenizer) = stories260k
    config = json.loads((model_dir / "config.json").read_text())
    weights = {k: np.array(v).astype(np.float64) for k, v in mx.load(str(model_dir / "model.safetensors")).items()}

    contexts: dict[str, tuple] = {}

    def forward(_model, tok, context, continuation):
        """One choice: its own split of the whole encoding, then its tokens on the context's float64 state."""
        context_ids = tok.encode(context, add_special_tokens=False)
        answer_ids = tok.encode(context + continuation, add_special_tokens=False)[len(context_ids):]
        if context not in contexts:
            contexts.clear()
            logits, past = numpy_llama_forward(weights, config, context_ids)
            contexts[context] = (numpy_log_softmax(logits[-1]), past)
        first, past = contexts[context]
        log_probs = numpy_log_softmax(numpy_llama_forward(weights, config, answer_ids[:-1], past)[0]) \
            if len(answer_ids) > 1 else np.zeros((0, first.size))
        return float(first[answer_ids[0]] + sum(log_probs[i, t] for i, t in enumerate(answer_ids[1:])))

    items = load_hf_jsonl(shared_dir / "data/truthfulqa/v0/truthful_qa_multiple_choice_validation.jsonl")[:50]
    rows = tqa.score_mc(model, tokenizer, items, tqa.EvalOptions(progress=False))
    reference = [reference_question_scores(None, tokenizer, item, forward) for item in items]
    assert max(abs(r["mc1"] - ref[0]) for r, ref in zip(rows, reference)) < 1e-4
    assert max(abs(r["mc2"] - ref[1]) for r, ref in zip(rows, reference)) < 1e-4
    assert abs(np.mean([r["mc1"] for r in rows]) - np.mean([ref[0] for ref in reference])) < 1e-4
    assert abs(np.mean([r["mc2"] for r in rows]) - np.mean([ref[1] for ref in reference])) < 1e-4
    worst_ll = max(np.max(np.abs(np.array(r["mc1_lls"] + r["mc2_lls"]) - ref[2])) for r, ref in zip(rows, reference))
    assert worst_ll < 1e-3  # float32 model vs float64 reference, over sums of up to ~60 tokens


# ---------------------------------------------------------------- statistics


# ---------------------------------------------------------------- the command


