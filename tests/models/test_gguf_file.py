"""The GGUF reader and tensor decoding, checked against the `gguf` package and mx.load on synthetic files."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

import yourai  # noqa: F401  (OpenBLAS before mlx)
import mlx.core as mx

from yourai.models.gguf_file import (BF16, Q4_0, Q4_1, Q8_0, decode_quantized, decode_tensor, pack_bits, read_gguf,
                                     type_name)


def _gguf_package_values(path, name) -> np.ndarray:
    tensor = next(t for t in gguf.GGUFReader(str(path)).tensors if t.name == name)
    shape = tuple(int(s) for s in reversed(tensor.shape))
    return gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(shape)


def _dequantized(triple: dict, bits: int) -> np.ndarray:
    """The triple's values computed in float32 (MLX computes in the scales' dtype)."""
    weight, scales, biases = mx.array(triple["weight"]), mx.array(triple["scales"]), mx.array(triple["biases"])
    return np.array(mx.dequantize(weight, scales.astype(mx.float32), biases.astype(mx.float32), group_size=32, bits=bits))


def test_rejects_a_file_that_is_not_gguf(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04 not a gguf at all")
    with pytest.raises(ValueError, match=r"model.gguf: not a GGUF file"):
        read_gguf(path)


def test_truncated_header_is_reported_with_its_byte(native_gguf, tmp_path):
    path = tmp_path / "cut.gguf"
    path.write_bytes(native_gguf.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"cut.gguf: truncated GGUF header at byte \d+"):
        read_gguf(path)


def test_metadata_and_tensor_table_agree_with_the_gguf_package(native_gguf):
    ours, theirs = read_gguf(native_gguf), gguf.GGUFReader(str(native_gguf))
    assert ours.metadata["general.architecture"] == "llama"
    assert ours.metadata["llama.block_count"] == 2
    assert ours.metadata["tokenizer.ggml.tokens"][:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert ours.metadata["tokenizer.ggml.add_bos_token"] is False
    table = {t.name: (tuple(int(s) for s in reversed(t.shape)), int(t.tensor_type), int(t.data_offset))
             for t in theirs.tensors}
    assert {t.name: (t.shape, t.ggml_type, t.offset) for t in ours.tensors} == table


def test_pack_bits_is_the_layout_mlx_unpacks():
    rng = np.random.default_rng(0)
    for bits in (4, 8):
        values = rng.integers(0, 2 ** bits, size=(3, 64))
        packed = mx.array(pack_bits(values, bits))
        ones, zeros = mx.ones((3, 2), dtype=mx.float32), mx.zeros((3, 2), dtype=mx.float32)
        assert np.array_equal(np.array(mx.dequantize(packed, ones, zeros, group_size=32, bits=bits)), values)


@pytest.mark.parametrize("name", ["token_embd.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight"])
def test_native_blocks_repack_bit_identical_to_mx_load(native_gguf, name):
    """With float16 Q8_0 scales our triples are exactly what mx.load returns (Q8_0, Q4_0, Q4_1)."""
    parsed, loaded = read_gguf(native_gguf), mx.load(str(native_gguf))
    info = next(t for t in parsed.tensors if t.name == name)
    assert info.ggml_type in (Q8_0, Q4_0, Q4_1)
    triple = decode_quantized(parsed, info, exact_q8=False)
    stem = name.removesuffix(".weight")
    for part in ("weight", "scales", "biases"):
        theirs = np.array(loaded[f"{stem}.{part}"])
        assert triple[part].dtype == theirs.dtype and np.array_equal(triple[part], theirs), part


@pytest.mark.parametrize("name,kind,bits", [("blk.0.attn_k.weight", Q4_0, 4), ("blk.0.attn_v.weight", Q4_1, 4),
                                            ("token_embd.weight", Q8_0, 8)])
def test_native_blocks_hold_the_gguf_values_exactly(native_gguf, name, kind, bits):
    parsed = read_gguf(native_gguf)
    info = next(t for t in parsed.tensors if t.name == name)
    assert info.ggml_type == kind
    expected = _gguf_package_values(native_gguf, name)
    assert np.abs(_dequantized(decode_quantized(parsed, info), bits) - expected).max() <= 1e-6 * np.abs(expected).max()


def test_q8_scales_in_float16_lose_precision_that_float32_keeps(native_gguf):
    """MLX dequantizes in the scales' dtype: float16 Q8_0 triples cancel bits away, float32 ones do not."""
    parsed = read_gguf(native_gguf)
    info = next(t for t in parsed.tensors if t.name == "token_embd.weight")
    expected = _gguf_package_values(native_gguf, "token_embd.weight")

    def error(exact_q8: bool) -> float:
        triple = {k: mx.array(v) for k, v in decode_quantized(parsed, info, exact_q8).items()}
        values = mx.dequantize(triple["weight"], triple["scales"], triple["biases"], group_size=32, bits=8)
        return float(np.abs(np.array(values.astype(mx.float32)) - expected).max())

    assert error(True) < 1e-6 < error(False)


def test_other_types_are_dequantized_by_the_gguf_package_with_a_note(mixed_gguf):
    parsed, notes = read_gguf(mixed_gguf), []
    by_name = {t.name: t for t in parsed.tensors}
    q4k = decode_tensor(parsed, by_name["blk.0.ffn_up.weight"], notes)
    assert q4k["weight"].dtype == mx.float16 and set(q4k) == {"weight"}
    expected = _gguf_package_values(mixed_gguf, "blk.0.ffn_up.weight")
    assert np.allclose(np.array(q4k["weight"].astype(mx.float32)), expected, rtol=1e-3, atol=1e-6)
    assert notes == ["blk.0.ffn_up.weight: Q4_K has no MLX quantized equivalent; dequantized to float16"]


def test_bf16_stays_bfloat16_bit_for_bit(mixed_gguf):
    parsed, notes = read_gguf(mixed_gguf), []
    info = next(t for t in parsed.tensors if t.name == "blk.0.attn_v.weight")
    assert info.ggml_type == BF16
    weight = decode_tensor(parsed, info, notes)["weight"]
    assert weight.dtype == mx.bfloat16 and notes == []
    assert np.array_equal(np.array(weight.astype(mx.float32)), _gguf_package_values(mixed_gguf, info.name))


def test_type_names():
    assert [type_name(t) for t in (Q4_0, Q4_1, Q8_0, BF16, 12)] == ["Q4_0", "Q4_1", "Q8_0", "BF16", "Q4_K"]
