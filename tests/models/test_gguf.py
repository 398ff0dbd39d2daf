"""GGUF → mlx-lm directory: config, RoPE layout, weights against an independent float64 forward, mlx-lm's own tools."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

import yourai  # noqa: F401  (OpenBLAS before mlx)
import mlx.core as mx
import mlx.nn as nn
import mlx_lm

from gguf_cases import model_logprobs, reference_logprobs, rope_adjacent, rope_half, write_llama_gguf
from yourai.cli import main as yourai_main
from yourai.models.gguf import (import_gguf, load_gguf, permute_rope_rows, quantization_config,
                                unpermute_rope_rows)

CHAT = [{"role": "user", "content": "What did the measurements of the specimen show?"}]


def _chat_ids(tokenizer) -> list[int]:
    return list(tokenizer.apply_chat_template(CHAT, add_generation_prompt=True))


def test_unpermuting_undoes_llama_cpp_permutation():
    weight = np.arange(8 * 16 * 3, dtype=np.float64).reshape(8 * 16, 3)
    assert np.array_equal(unpermute_rope_rows(permute_rope_rows(weight, 8), 8), weight)
    assert not np.array_equal(permute_rope_rows(weight, 8), weight)


def test_adjacent_pair_rope_on_gguf_rows_equals_rotate_half_on_unpermuted_rows():
    """Attention scores are the same both ways, in float64 numpy and in MLX's fused RoPE."""
    rng = np.random.default_rng(0)
    positions, heads, head_dim, hidden = 7, 3, 16, 24
    x = rng.standard_normal((positions, hidden))
    wq, wk = (permute_rope_rows(rng.standard_normal((heads * head_dim, hidden)), heads) for _ in range(2))

    def project(w):
        return (x @ w.T).reshape(positions, heads, head_dim)

    gguf_scores = np.einsum("qhd,khd->hqk", rope_adjacent(project(wq), 1e4), rope_adjacent(project(wk), 1e4))
    ours = [rope_half(project(unpermute_rope_rows(w, heads)), 1e4) for w in (wq, wk)]
    assert np.allclose(np.einsum("qhd,khd->hqk", *ours), gguf_scores, atol=1e-10)

    def mlx_scores(w, traditional):
        rows = unpermute_rope_rows(w, heads) if not traditional else w
        heads_first = mx.array(project(rows).transpose(1, 0, 2)[None], dtype=mx.float32)
        return mx.fast.rope(heads_first, head_dim, traditional=traditional, base=1e4, scale=1.0, offset=0)

    traditional = mlx_scores(wq, True) @ mlx_scores(wk, True).swapaxes(-1, -2)
    rotate_half = mlx_scores(wq, False) @ mlx_scores(wk, False).swapaxes(-1, -2)
    assert mx.allclose(traditional, rotate_half, atol=1e-3).item()


def test_unpermuting_quantized_rows_equals_unpermuting_the_dequantized_matrix():
    weight = mx.array(np.random.default_rng(0).standard_normal((64, 64)), dtype=mx.float32)
    packed, scales, biases = mx.quantize(weight, group_size=32, bits=4)
    then_unpermute = unpermute_rope_rows(mx.dequantize(packed, scales, biases, group_size=32, bits=4), 4)
    unpermute_first = mx.dequantize(*(unpermute_rope_rows(a, 4) for a in (packed, scales, biases)), group_size=32, bits=4)
    assert mx.array_equal(then_unpermute, unpermute_first).item()


def test_config_keeps_the_4bit_base_with_per_module_exceptions(native_model_dir):
    config = json.loads((native_model_dir / "config.json").read_text())
    assert config["quantization"] == {"group_size": 32, "bits": 4, "mode": "affine",
                                      "model.embed_tokens": {"group_size": 32, "bits": 8, "mode": "affine"},
                                      **{f"model.layers.{i}.mlp.down_proj": {"group_size": 32, "bits": 8, "mode": "affine"}
                                         for i in range(2)}}
    assert config["tie_word_embeddings"] is True and config["rope_traditional"] is False
    assert (config["num_hidden_layers"], config["num_attention_heads"], config["num_key_value_heads"]) == (2, 4, 2)
    assert (config["bos_token_id"], config["eos_token_id"], config["rms_norm_eps"]) == (1, 2, 1e-05)
    model, _ = mlx_lm.load(str(native_model_dir))
    assert isinstance(model.model.embed_tokens, nn.QuantizedEmbedding) and model.model.embed_tokens.bits == 8
    assert isinstance(model.layers[0].self_attn.q_proj, nn.QuantizedLinear) and model.layers[0].self_attn.q_proj.bits == 4


def test_float_modules_are_marked_unquantized(mixed_model_dir):
    config = json.loads((mixed_model_dir / "config.json").read_text())["quantization"]
    assert config["model.layers.0.self_attn.q_proj"] is False  # Q5_0 → float16
    assert config["model.layers.0.mlp.up_proj"] is False  # Q4_K → float16
    assert "lm_head" not in config and config["bits"] == 4  # the untied Q4_0 output takes the default
    model, _ = mlx_lm.load(str(mixed_model_dir))
    assert isinstance(model.layers[0].self_attn.v_proj, nn.Linear)
    assert model.layers[0].self_attn.v_proj.weight.dtype == mx.bfloat16
    assert isinstance(model.lm_head, nn.QuantizedLinear)


def test_quantization_config_is_none_for_a_float_model():
    assert quantization_config({"model.embed_tokens.weight": mx.zeros((4, 32))}) is None


@pytest.mark.parametrize("fixture", ["native", "mixed"])
def test_imported_model_matches_an_independent_float64_forward(fixture, request):
    path, model_dir = request.getfixturevalue(f"{fixture}_gguf"), request.getfixturevalue(f"{fixture}_model_dir")
    model, tokenizer = mlx_lm.load(str(model_dir))
    ids = _chat_ids(tokenizer)
    ours, reference = model_logprobs(model, ids), reference_logprobs(path, ids)
    assert np.abs(ours - reference).max() <= 0.1
    assert np.array_equal(ours.argmax(-1), reference.argmax(-1))


def test_lossy_types_are_noted_warned_and_recorded(mixed_gguf, tmp_path):
    notes = load_gguf(mixed_gguf).notes
    assert sorted({note.split(": ")[1].split(" ")[0] for note in notes}) == ["Q4_K", "Q5_0"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = import_gguf(mixed_gguf, tmp_path / "out")
    assert [str(w.message) for w in caught] == notes
    record = json.loads((out / "gguf_import.json").read_text())
    assert record["notes"] == notes and record["source"] == str(mixed_gguf.resolve())
    assert record["source_bytes"] == mixed_gguf.stat().st_size


def test_unsupported_architecture_names_it_and_what_is_supported(tmp_path):
    path = write_llama_gguf(tmp_path / "qwen.gguf", architecture="qwen2")
    with pytest.raises(ValueError, match=r"GGUF architecture 'qwen2' is not supported; supported: llama"):
        load_gguf(path)


def test_never_writes_over_a_directory_it_did_not_write(native_gguf, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="not an earlier GGUF import"):
        import_gguf(native_gguf, tmp_path)
    assert (tmp_path / "config.json").read_text() == "{}"


def test_import_gguf_command(native_gguf, mixed_gguf, tmp_path, capsys):
    assert yourai_main(["import-gguf", str(native_gguf), str(tmp_path / "native")]) == 0
    printed = capsys.readouterr()
    assert "2 layers" in printed.out and "4-bit (group 32)" in printed.out and printed.err == ""
    assert yourai_main(["import-gguf", str(mixed_gguf), str(tmp_path / "mixed")]) == 0
    assert "note: blk.0.ffn_up.weight: Q4_K has no MLX quantized equivalent" in capsys.readouterr().err
    qwen = write_llama_gguf(tmp_path / "qwen.gguf", architecture="qwen2")
    assert yourai_main(["import-gguf", str(qwen), str(tmp_path / "qwen")]) == 2
    assert "architecture 'qwen2' is not supported" in capsys.readouterr().err


def test_mlx_lm_generate_reads_the_directory(native_model_dir):
    model, tokenizer = mlx_lm.load(str(native_model_dir))
    text = mlx_lm.generate(model, tokenizer, prompt=_chat_ids(tokenizer), max_tokens=5)
    assert isinstance(text, str) and len(tokenizer.encode(text)) >= 1


@pytest.mark.slow
def test_mlx_lm_fuse_dequantize_matches_base_plus_adapter(native_model_dir, tmp_path):
    """mlx_lm.fuse --dequantize on our directory equals the unfused base + adapter."""
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers, load_adapters

    model, tokenizer = mlx_lm.load(str(native_model_dir))
    model.freeze()
    linear_to_lora_layers(model, 2, {"rank": 4, "scale": 20.0, "dropout": 0.0})
    rng = np.random.default_rng(0)
    adapters = {k: mx.array(rng.standard_normal(v.shape) * 0.02, dtype=mx.float32)
                for k, v in tree_flatten(model.trainable_parameters())}
    adapter_dir = tmp_path / "adapters"
    adapter_dir.mkdir()
    mx.save_safetensors(str(adapter_dir / "adapters.safetensors"), adapters)
    (adapter_dir / "adapter_config.json").write_text(json.dumps(
        {"fine_tune_type": "lora", "num_layers": 2, "lora_parameters": {"rank": 4, "scale": 20.0, "dropout": 0.0}}))
    fused_dir = tmp_path / "fused"
    subprocess.run([sys.executable, "-m", "mlx_lm", "fuse", "--model", str(native_model_dir), "--adapter-path",
                    str(adapter_dir), "--save-path", str(fused_dir), "--dequantize"], check=True, capture_output=True)
    base, _ = mlx_lm.load(str(native_model_dir))
    load_adapters(base, str(adapter_dir))
    fused, _ = mlx_lm.load(str(fused_dir))
    ids = _chat_ids(tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected, got = model_logprobs(base, ids), model_logprobs(fused, ids)
    assert np.abs(expected - got).max() < 0.05 and np.array_equal(expected.argmax(-1), got.argmax(-1))
