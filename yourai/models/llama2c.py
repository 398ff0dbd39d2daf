"""llama2.c checkpoints (e.g. stories260K) → an mlx-lm Llama directory, with an exactly equivalent tokenizer."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np


LLAMA2C_HEADER = struct.Struct("<7i")


@dataclass(frozen=True)
class Llama2cHeader:
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int  # negative in the file when the classifier is not tied
    seq_len: int


def read_llama2c(checkpoint: str | Path) -> tuple[Llama2cHeader, dict[str, np.ndarray]]:
    """Parse a llama2.c legacy (version 0) checkpoint into named float32 arrays."""
    path = Path(checkpoint)
    raw = path.read_bytes()
    if len(raw) < LLAMA2C_HEADER.size:
        raise ValueError(f"{path}: {len(raw)} bytes is too short for a llama2.c header")
    header = Llama2cHeader(*LLAMA2C_HEADER.unpack_from(raw, 0))
    if min(header.dim, header.hidden_dim, header.n_layers, header.n_heads, header.n_kv_heads, header.seq_len) <= 0:
        raise ValueError(f"{path}: implausible llama2.c header {header}")
    shared = header.vocab_size > 0
    vocab, dim, layers = abs(header.vocab_size), header.dim, header.n_layers
    head_size = dim // header.n_heads
    kv_dim = header.n_kv_heads * head_size
    shapes = [
        ("tok_embeddings", (vocab, dim)),
        ("rms_att", (layers, dim)),
        ("wq", (layers, dim, dim)),
        ("wk", (layers, kv_dim, dim)),
        ("wv", (layers, kv_dim, dim)),
        ("wo", (layers, dim, dim)),
        ("rms_ffn", (layers, dim)),
        ("w1", (layers, header.hidden_dim, dim)),
        ("w2", (layers, dim, header.hidden_dim)),
        ("w3", (layers, header.hidden_dim, dim)),
        ("rms_final", (dim,)),
        ("freq_cis", (header.seq_len, head_size)),  # real + imag halves; unused, RoPE is recomputed
    ]
    if not shared:
        shapes.append(("wcls", (vocab, dim)))
    floats = np.frombuffer(raw, dtype="<f4", offset=LLAMA2C_HEADER.size)
    needed = sum(math.prod(shape) for _, shape in shapes)
    if floats.size < needed:
        raise ValueError(f"{path}: holds {floats.size} floats, the header {header} needs {needed}")
    arrays, offset = {}, 0
    for name, shape in shapes:
        size = math.prod(shape)
        arrays[name] = floats[offset : offset + size].reshape(shape).astype(np.float32)
        offset += size
    return header, arrays


def interleaved_to_half_rope(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Permute q/k output rows from adjacent-pair RoPE (x[2i], x[2i+1]) to rotate-half.

    llama2.c rotates pairs of neighbouring features; HF/mlx-lm Llama rotates feature i with
    i + head_dim/2. Reordering each head's rows [0,2,4,…,1,3,5,…] maps one onto the other,
    and since q·k is invariant to a shared permutation, attention scores are unchanged.
    """
    out_features, in_features = weight.shape
    head_dim = out_features // n_heads
    return (
        weight.reshape(n_heads, head_dim // 2, 2, in_features)
        .transpose(0, 2, 1, 3)
        .reshape(out_features, in_features)
    )


def llama2c_to_mlx_weights(header: Llama2cHeader, arrays: dict[str, np.ndarray]) -> dict[str, mx.array]:
    """Rename and permute llama2.c tensors into mlx-lm Llama parameter names."""
    weights = {"model.embed_tokens.weight": arrays["tok_embeddings"], "model.norm.weight": arrays["rms_final"]}
    for layer in range(header.n_layers):
        prefix = f"model.layers.{layer}"
        weights[f"{prefix}.input_layernorm.weight"] = arrays["rms_att"][layer]
        weights[f"{prefix}.self_attn.q_proj.weight"] = interleaved_to_half_rope(arrays["wq"][layer], header.n_heads)
        weights[f"{prefix}.self_attn.k_proj.weight"] = interleaved_to_half_rope(arrays["wk"][layer], header.n_kv_heads)
        weights[f"{prefix}.self_attn.v_proj.weight"] = arrays["wv"][layer]
        weights[f"{prefix}.self_attn.o_proj.weight"] = arrays["wo"][layer]
        weights[f"{prefix}.post_attention_layernorm.weight"] = arrays["rms_ffn"][layer]
        weights[f"{prefix}.mlp.gate_proj.weight"] = arrays["w1"][layer]
        weights[f"{prefix}.mlp.down_proj.weight"] = arrays["w2"][layer]
        weights[f"{prefix}.mlp.up_proj.weight"] = arrays["w3"][layer]
    if "wcls" in arrays:
        weights["lm_head.weight"] = arrays["wcls"]
    return {name: mx.array(np.ascontiguousarray(value)) for name, value in weights.items()}


def read_llama2c_tokenizer(path: str | Path, vocab_size: int) -> tuple[list[str], list[float]]:
    """Pieces and merge scores from a llama2.c tokenizer .bin."""
    path = Path(path)
    raw = path.read_bytes()
    offset = 4  # int32 max_token_length, not needed to decode
    pieces, scores = [], []
    for token_id in range(vocab_size):
        if offset + 8 > len(raw):
            raise ValueError(f"{path}: truncated at token {token_id} of {vocab_size}")
        score, length = struct.unpack_from("<fi", raw, offset)
        offset += 8
        pieces.append(raw[offset : offset + length].decode("utf-8"))
        scores.append(score)
        offset += length
    return pieces, scores


def sentencepiece_bpe_tokenizer(pieces: list[str], scores: list[float]):
    """A `tokenizers` BPE that encodes exactly like llama2.c's score-ordered merge.

    llama2.c repeatedly merges the adjacent pair whose concatenation has the highest
    score. Ranking every (left, right) split of every multi-character piece by that
    piece's score gives the same order in a standard BPE with byte fallback.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, processors

    special = {0: "<unk>", 1: "<s>", 2: "</s>"}
    vocab_pieces = [special.get(i, piece.replace(" ", "▁")) for i, piece in enumerate(pieces)]
    vocab = {piece: i for i, piece in enumerate(vocab_pieces)}
    merges = []
    for i in sorted(range(len(vocab_pieces)), key=lambda i: (-scores[i], i)):
        piece = vocab_pieces[i]
        if i in special or piece.startswith("<0x") or len(piece) < 2:
            continue
        merges.extend((piece[:k], piece[k:]) for k in range(1, len(piece)) if piece[:k] in vocab and piece[k:] in vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(Regex(" "), "▁")])
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    tokenizer.add_special_tokens(list(special.values()))
    return tokenizer


def import_llama2c(checkpoint: str | Path, tokenizer: str | Path, out_dir: str | Path) -> Path:
    """Convert a llama2.c checkpoint and its tokenizer .bin into an mlx_lm.load() directory."""
    header, arrays = read_llama2c(checkpoint)
    out_dir = Path(out_dir)
    config = {
        "model_type": "llama",
        "hidden_size": header.dim,
        "num_hidden_layers": header.n_layers,
        "intermediate_size": header.hidden_dim,
        "num_attention_heads": header.n_heads,
        "num_key_value_heads": header.n_kv_heads,
        "max_position_embeddings": header.seq_len,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "vocab_size": abs(header.vocab_size),
        "tie_word_embeddings": header.vocab_size > 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = llama2c_to_mlx_weights(header, arrays)
    mx.save_safetensors(str(out_dir / "model.safetensors"), weights, metadata={"format": "mlx"})
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    pieces, scores = read_llama2c_tokenizer(tokenizer, abs(header.vocab_size))
    sentencepiece_bpe_tokenizer(pieces, scores).save(str(out_dir / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "model_max_length": header.seq_len,
        "clean_up_tokenization_spaces": False,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    return out_dir
