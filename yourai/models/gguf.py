"""GGUF checkpoints (llama.cpp's format) → mlx-lm model directories, keeping a 4-/8-bit base exactly.

`import_gguf(path, out_dir)` writes config.json (with per-module `quantization`), model.safetensors,
tokenizer.json and tokenizer_config.json (chat template, special tokens) that `mlx_lm.load`,
`mlx_lm.generate` and `mlx_lm.fuse` read unchanged. The file is parsed by yourai.models.gguf_file, the
tokenizer rebuilt by yourai.models.gguf_tokenizer.

Two layout facts matter:

* llama.cpp's converter permutes the rows of q and k so that RoPE rotates *adjacent* pairs (2i, 2i+1);
  HF and mlx-lm rotate feature i with i + head_dim/2. We undo the permutation (`unpermute_rope_rows`),
  so the config keeps `rope_traditional: false` and `mlx_lm.fuse --export-gguf` re-permutes correctly.
  Rows are independent in every block type (quantization groups run along a row), so permuting the rows
  of a (weight, scales, biases) triple equals permuting the dequantized matrix.
* Without `output.weight` the token embedding doubles as the output layer (`tie_word_embeddings`).

Fusing adapters into a GGUF base: use `mlx_lm.fuse --dequantize`. A quantized fuse re-quantizes every
LoRA layer with `mx.quantize`, which cannot reproduce GGML's grid (measured on SmolLM2: KL 0.57 to the
unfused model with all-zero adapters, 62 % argmax agreement).
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, TypeVar

import mlx.core as mx
import numpy as np

from yourai.models.gguf_file import GROUP_SIZE, GGUFFile, TensorInfo, decode_tensor, read_gguf
from yourai.models.gguf_tokenizer import build_tokenizer

SUPPORTED_ARCHITECTURES = ("llama",)
IMPORT_RECORD = "gguf_import.json"  # beside the model: where it came from and every lossy step

# llama.cpp tensor names → mlx-lm llama module paths.
GLOBAL_TENSORS = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
BLOCK_TENSORS = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}

Rows = TypeVar("Rows", np.ndarray, mx.array)


def permute_rope_rows(weight: Rows, n_heads: int) -> Rows:
    """HF rotate-half rows → llama.cpp adjacent-pair rows (what llama.cpp's converter does to q and k)."""
    head_dim, rest = weight.shape[0] // n_heads, tuple(weight.shape[1:])
    return weight.reshape(n_heads, 2, head_dim // 2, *rest).swapaxes(1, 2).reshape(weight.shape)


def unpermute_rope_rows(weight: Rows, n_heads: int) -> Rows:
    """llama.cpp adjacent-pair rows → HF rotate-half rows, so mlx-lm's default RoPE applies."""
    head_dim, rest = weight.shape[0] // n_heads, tuple(weight.shape[1:])
    return weight.reshape(n_heads, head_dim // 2, 2, *rest).swapaxes(1, 2).reshape(weight.shape)


def check_architecture(metadata: dict[str, Any]) -> str:
    """The architecture, or an error naming it and what is supported."""
    architecture = metadata.get("general.architecture", "<missing>")
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise ValueError(f"GGUF architecture {architecture!r} is not supported; supported: "
                         f"{', '.join(SUPPORTED_ARCHITECTURES)}")
    return architecture


def _float32(value: Any) -> float:
    """GGUF floats are float32: keep the shortest decimal that round-trips (1e-05, not 9.99999e-06)."""
    return float(str(np.float32(value)))


def _check_rope(metadata: dict[str, Any], names: set[str], head_dim: int) -> dict[str, Any]:
    """Refuse RoPE variants mlx-lm's llama cannot express; linear scaling becomes `rope_scaling`."""
    architecture = metadata["general.architecture"]
    rope_dim = int(metadata.get(f"{architecture}.rope.dimension_count", head_dim))
    if rope_dim != head_dim:
        raise ValueError(f"partial RoPE ({rope_dim} of {head_dim} dimensions) is not supported by mlx-lm's llama")
    if "rope_freqs.weight" in names:
        raise ValueError("per-dimension RoPE factors (rope_freqs.weight, Llama 3.1+ scaling) are not supported yet")
    scaling = metadata.get(f"{architecture}.rope.scaling.type", "none")
    if scaling == "linear":
        return {"rope_scaling": {"type": "linear", "factor": _float32(metadata[f"{architecture}.rope.scaling.factor"])}}
    if scaling not in ("none", None):
        raise ValueError(f"RoPE scaling {scaling!r} is not supported yet (supported: none, linear)")
    return {}


def llama_config(metadata: dict[str, Any], tensors: Sequence[TensorInfo]) -> dict[str, Any]:
    """mlx-lm's llama config.json from the `llama.*` keys (and the tensor table for biases and tying)."""
    architecture = check_architecture(metadata)

    def key(name: str, default: Any = None) -> Any:
        value = metadata.get(f"{architecture}.{name}", default)
        if value is None:
            raise ValueError(f"GGUF metadata lacks {architecture}.{name}")
        return value

    names = {info.name for info in tensors}
    hidden, heads = int(key("embedding_length")), int(key("attention.head_count"))
    head_dim = int(key("attention.key_length", hidden // heads))
    vocab = metadata.get("tokenizer.ggml.tokens")
    config: dict[str, Any] = {
        "model_type": "llama", "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden, "num_hidden_layers": int(key("block_count")),
        "intermediate_size": int(key("feed_forward_length")), "num_attention_heads": heads,
        "num_key_value_heads": int(key("attention.head_count_kv", heads)), "head_dim": head_dim,
        "rms_norm_eps": _float32(key("attention.layer_norm_rms_epsilon")),
        "vocab_size": int(key("vocab_size", len(vocab) if vocab is not None else None)),
        "max_position_embeddings": int(key("context_length")), "rope_theta": _float32(key("rope.freq_base", 10000.0)),
        "rope_traditional": False,  # q/k rows are un-permuted to rotate-half
        "tie_word_embeddings": "output.weight" not in names,
        "attention_bias": "blk.0.attn_q.bias" in names, "mlp_bias": "blk.0.ffn_up.bias" in names,
        **_check_rope(metadata, names, head_dim),
    }
    for role in ("bos", "eos", "pad"):
        if (token_id := metadata.get(f"tokenizer.ggml.{role}_token_id")) is not None:
            config[f"{role}_token_id"] = int(token_id)
    stops = [metadata.get(f"tokenizer.ggml.{role}_token_id") for role in ("eos", "eot", "eom")]
    stops = list(dict.fromkeys(int(s) for s in stops if s is not None))
    if len(stops) > 1:  # Llama 3 chat ends a turn with <|eot_id|>, not with eos: generation must stop at both
        config["eos_token_id"] = stops
    return config


def mlx_name(gguf_name: str) -> str:
    """blk.3.attn_q.weight → model.layers.3.self_attn.q_proj.weight."""
    stem, _, suffix = gguf_name.rpartition(".")
    if stem in GLOBAL_TENSORS:
        return f"{GLOBAL_TENSORS[stem]}.{suffix}"
    parts = stem.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in BLOCK_TENSORS:
        return f"model.layers.{parts[1]}.{BLOCK_TENSORS[parts[2]]}.{suffix}"
    raise ValueError(f"unexpected tensor {gguf_name!r} in a llama GGUF")


def convert_weights(gguf: GGUFFile, notes: list[str], exact_q8: bool = True) -> dict[str, mx.array]:
    """Decode, rename and un-permute every tensor into mlx-lm llama weights."""
    architecture = check_architecture(gguf.metadata)
    heads = int(gguf.metadata[f"{architecture}.attention.head_count"])
    rope_heads = {"attn_q": heads, "attn_k": int(gguf.metadata.get(f"{architecture}.attention.head_count_kv", heads))}
    weights: dict[str, mx.array] = {}
    for info in gguf.tensors:
        module, _, suffix = mlx_name(info.name).rpartition(".")  # suffix: weight or bias
        kind = info.name.split(".")[-2] if info.name.startswith("blk.") else ""
        for part, array in decode_tensor(gguf, info, notes, exact_q8).items():
            if kind in rope_heads:
                array = unpermute_rope_rows(array, rope_heads[kind])
            weights[f"{module}.{suffix if part == 'weight' else part}"] = array
    return weights


def _module_quantization(weights: dict[str, mx.array], module: str) -> dict[str, int] | None:
    """(group_size, bits) of one module, read back from its packed shapes; None for a float module."""
    if f"{module}.scales" not in weights:
        return None
    in_features = weights[f"{module}.scales"].shape[-1] * GROUP_SIZE
    return {"group_size": GROUP_SIZE, "bits": weights[f"{module}.weight"].shape[-1] * 32 // in_features}


def quantization_config(weights: dict[str, mx.array]) -> dict[str, Any] | None:
    """The most common (group, bits) as the default, plus an entry for every module that differs.

    Float Linear/Embedding modules get an explicit `false`, so mlx-lm leaves them unquantized whatever
    its version would infer.
    """
    modules = sorted({name.rpartition(".")[0] for name, array in weights.items()
                      if name.endswith(".weight") and array.ndim == 2})
    per_module = {module: _module_quantization(weights, module) for module in modules}
    counts = Counter((q["group_size"], q["bits"]) for q in per_module.values() if q)
    if not counts:
        return None
    group_size, bits = counts.most_common(1)[0][0]
    config: dict[str, Any] = {"group_size": group_size, "bits": bits, "mode": "affine"}
    for module, quant in per_module.items():
        if quant is None:
            config[module] = False
        elif (quant["group_size"], quant["bits"]) != (group_size, bits):
            config[module] = {**quant, "mode": "affine"}
    return config


@dataclass
class ImportedGGUF:
    """Everything an mlx-lm directory holds, in memory, plus the notes on every lossy step."""

    config: dict[str, Any]
    weights: dict[str, mx.array]
    tokenizer: Any
    tokenizer_config: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def load_gguf(path: str | Path, exact_q8: bool = True) -> ImportedGGUF:
    """Convert a GGUF in memory; `exact_q8=False` keeps Q8_0 scales in float16 as `mx.load` does."""
    gguf = read_gguf(path)
    config = llama_config(gguf.metadata, gguf.tensors)
    notes: list[str] = []
    weights = convert_weights(gguf, notes, exact_q8)
    if (quantization := quantization_config(weights)) is not None:
        config["quantization"] = quantization
        config["quantization_config"] = quantization  # the key transformers reads
    mx.eval(weights)
    tokenizer, tokenizer_config = build_tokenizer(gguf.metadata)
    named_templates = sorted(k for k in gguf.metadata if k.startswith("tokenizer.chat_template."))
    if named_templates:
        notes.append(f"named chat templates not imported (only the default one is): {named_templates}")
    return ImportedGGUF(config, weights, tokenizer, tokenizer_config, notes)


def _check_out_dir(out: Path) -> None:
    """Write only into a new or empty directory, or over an earlier import: never over someone's model."""
    if out.is_dir() and any(out.iterdir()) and not (out / IMPORT_RECORD).is_file():
        raise ValueError(f"{out}: directory exists and is not an earlier GGUF import; choose a new directory")


def save_model_dir(imported: ImportedGGUF, out_dir: str | Path, source: Path | None = None) -> Path:
    """config.json, model.safetensors, tokenizer.json, tokenizer_config.json and the import record."""
    out = Path(out_dir)
    _check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out / "model.safetensors"), imported.weights, metadata={"format": "mlx"})
    (out / "config.json").write_text(json.dumps(imported.config, indent=2) + "\n")
    imported.tokenizer.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(imported.tokenizer_config, indent=2, ensure_ascii=False) + "\n")
    stat = source.stat() if source else None
    record = {"source": str(source.resolve()) if source else None, "source_bytes": stat.st_size if stat else None,
              "source_mtime_ns": stat.st_mtime_ns if stat else None, "notes": imported.notes}
    (out / IMPORT_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return out


def import_gguf(path: str | Path, out_dir: str | Path, exact_q8: bool = True) -> Path:
    """A llama GGUF → a directory `mlx_lm.load`/`generate`/`fuse` accept; lossy steps are warned and recorded.

    The notes (e.g. "Q4_K has no MLX quantized equivalent; dequantized to float16") also go to
    `out_dir/gguf_import.json`; `load_gguf` returns them as a list.
    """
    imported = load_gguf(path, exact_q8)
    for note in imported.notes:
        warnings.warn(note, stacklevel=2)
    return save_model_dir(imported, out_dir, source=Path(path))
