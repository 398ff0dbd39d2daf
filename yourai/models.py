"""Models through mlx-lm: load by hub id or path, build the embedded default, import llama2.c.

Everything written here is a directory that `mlx_lm.load()` reads unchanged (config.json,
model.safetensors, tokenizer.json + tokenizer_config.json), so users can leave our code
at any point and keep working with mlx-lm's own tools.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import struct
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten

from yourai.jsonl import iter_jsonl
from yourai.paths import default_model_dir, sample_corpus_path

EOS_TOKEN = "<|endoftext|>"
UNLIMITED_TOKENS = 1_000_000_000  # tokenizer_config model_max_length: "no limit"


@dataclass(frozen=True)
class TinyModelSpec:
    """Architecture and pretraining budget of the embedded default (≈1.1 M parameters).

    Sized so that building it takes about a minute on two CPU cores, yet it learns the
    sample corpus well enough for LoRA, loss and evaluation experiments to mean something.
    """

    vocab_size: int = 2048
    hidden_size: int = 128
    num_hidden_layers: int = 4
    intermediate_size: int = 352
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 512
    train_steps: int = 240
    batch_size: int = 12
    seq_len: int = 96
    learning_rate: float = 3e-3
    warmup_steps: int = 20
    heldout_fraction: float = 0.1
    eval_windows: int = 32


# --- loading -----------------------------------------------------------------------


def load_model(path_or_id: str = "default", adapter_path: str | None = None):
    """(model, tokenizer) via mlx_lm.load; "default" builds the embedded model on first use."""
    from mlx_lm import load

    if path_or_id in ("default", "", None):
        path_or_id = str(ensure_default_model())
    return load(str(path_or_id), adapter_path=str(adapter_path) if adapter_path else None)


def ensure_default_model(out_dir: Path | None = None) -> Path:
    """The embedded default model directory, built once from the sample corpus and cached."""
    out_dir = Path(out_dir) if out_dir else default_model_dir()
    if not (out_dir / "config.json").exists():
        build_tiny_model(out_dir, sample_corpus_path(), seed=0)
    return out_dir


# --- the embedded default ------------------------------------------------------------


def read_corpus_texts(corpus: str | Path | Iterable[str]) -> list[str]:
    """Texts from a JSONL corpus (the `text` field) or from an iterable of strings."""
    if isinstance(corpus, (str, Path)):
        texts = []
        for line_number, record in iter_jsonl(corpus):
            if not isinstance(record.get("text"), str) or not record["text"].strip():
                raise ValueError(f"{corpus}:{line_number}: field 'text' must be a non-empty string")
            texts.append(record["text"])
        return texts
    return [str(text) for text in corpus]


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE (the GPT-2 scheme) trained on `texts`: no unknown tokens, ever."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def _split_heldout(texts: list[str], fraction: float) -> tuple[list[str], list[str]]:
    """Stable split by a hash of the text, so the held-out set never depends on order."""
    train, heldout = [], []
    for text in texts:
        bucket = int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
        (heldout if bucket < fraction else train).append(text)
    return train, heldout


def _token_stream(tokenizer, texts: list[str]) -> np.ndarray:
    eos_id = tokenizer.token_to_id(EOS_TOKEN)
    ids: list[int] = []
    for encoding in tokenizer.encode_batch(texts):
        ids.extend(encoding.ids)
        ids.append(eos_id)
    return np.asarray(ids, dtype=np.int32)


def _llama_args(spec: TinyModelSpec, vocab_size: int, eos_id: int) -> dict:
    return {
        "model_type": "llama",
        "hidden_size": spec.hidden_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "intermediate_size": spec.intermediate_size,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "max_position_embeddings": spec.max_position_embeddings,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "vocab_size": vocab_size,
        "tie_word_embeddings": True,
        "eos_token_id": eos_id,
    }


def _lm_loss(model: nn.Module, windows: mx.array) -> mx.array:
    logits = model(windows[:, :-1])
    return nn.losses.cross_entropy(logits, windows[:, 1:], reduction="mean")


def heldout_perplexity(model: nn.Module, stream: np.ndarray, seq_len: int, n_windows: int) -> float:
    """exp(mean next-token CE) over evenly spaced windows of the held-out stream."""
    starts = np.linspace(0, len(stream) - seq_len - 2, num=n_windows).astype(np.int64)
    windows = mx.array(np.stack([stream[s : s + seq_len + 1] for s in starts]))
    return float(mx.exp(_lm_loss(model, windows)).item())


def _pretrain(model: nn.Module, stream: np.ndarray, spec: TinyModelSpec, seed: int) -> list[float]:
    """Next-token pretraining on random windows; returns the loss curve."""
    rng = np.random.default_rng(seed)
    schedule = optim.join_schedules(
        [optim.linear_schedule(1e-5, spec.learning_rate, spec.warmup_steps),
         optim.cosine_decay(spec.learning_rate, spec.train_steps - spec.warmup_steps, spec.learning_rate * 0.05)],
        [spec.warmup_steps],
    )
    optimizer = optim.AdamW(learning_rate=schedule, weight_decay=0.01)
    loss_and_grad = nn.value_and_grad(model, _lm_loss)
    state = [model.state, optimizer.state]

    def step(windows):
        loss, grads = loss_and_grad(model, windows)
        optimizer.update(model, grads)
        return loss

    step = mx.compile(step, inputs=state, outputs=state)
    losses = []
    for _ in range(spec.train_steps):
        starts = rng.integers(0, len(stream) - spec.seq_len - 1, size=spec.batch_size)
        windows = mx.array(np.stack([stream[s : s + spec.seq_len + 1] for s in starts]))
        loss = step(windows)
        mx.eval(state, loss)
        losses.append(float(loss.item()))
    return losses


def _write_tokenizer(tokenizer, out_dir: Path) -> None:
    tokenizer.save(str(out_dir / "tokenizer.json"))
    # Whole documents are tokenised before the trainer windows them, so the tokenizer itself
    # sets no length limit (transformers would warn on every document above it).
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
        "model_max_length": UNLIMITED_TOKENS,
        "clean_up_tokenization_spaces": False,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def save_mlx_model(model: nn.Module, config: dict, out_dir: Path) -> None:
    """Weights and config in the layout mlx_lm.load() reads."""
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(out_dir / "model.safetensors"), weights, metadata={"format": "mlx"})
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def weights_sha256(model_dir: str | Path) -> str:
    """Hash of every tensor's name, dtype, shape and bytes: equal hashes ⇔ equal weights."""
    weights = mx.load(str(Path(model_dir) / "model.safetensors"))
    digest = hashlib.sha256()
    for name in sorted(weights):
        array = np.array(weights[name])
        digest.update(f"{name}:{array.dtype}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def build_tiny_model(
    out_dir: str | Path,
    corpus: str | Path | Iterable[str] | None = None,
    seed: int = 0,
    spec: TinyModelSpec = TinyModelSpec(),
) -> dict:
    """Train a tokenizer and a small Llama on `corpus` and save it for mlx_lm.load().

    Deterministic for a seed. Written to a temporary sibling directory and renamed into
    place, so an interrupted build never leaves a half-written model behind.
    Returns the build report (also saved as build_info.json).
    """
    from mlx_lm.models import llama

    started = time.perf_counter()
    out_dir = Path(out_dir)
    texts = read_corpus_texts(corpus if corpus is not None else sample_corpus_path())
    train_texts, heldout_texts = _split_heldout(texts, spec.heldout_fraction)
    if not heldout_texts or not train_texts:
        raise ValueError(f"corpus too small to hold out {spec.heldout_fraction:.0%}: {len(texts)} texts")
    tokenizer = train_tokenizer(train_texts, spec.vocab_size)
    train_stream = _token_stream(tokenizer, train_texts)
    heldout_stream = _token_stream(tokenizer, heldout_texts)

    mx.random.seed(seed)
    config = _llama_args(spec, tokenizer.get_vocab_size(), tokenizer.token_to_id(EOS_TOKEN))
    model = llama.Model(llama.ModelArgs.from_dict(config))
    mx.eval(model.parameters())
    eval_len = min(spec.seq_len, len(heldout_stream) // 2)
    ppl_before = heldout_perplexity(model, heldout_stream, eval_len, spec.eval_windows)
    losses = _pretrain(model, train_stream, spec, seed)
    ppl_after = heldout_perplexity(model, heldout_stream, eval_len, spec.eval_windows)

    report = {
        "seed": seed,
        "spec": asdict(spec),
        "parameters": sum(v.size for _, v in tree_flatten(model.parameters())),
        "train_texts": len(train_texts),
        "heldout_texts": len(heldout_texts),
        "train_tokens": int(len(train_stream)),
        "heldout_tokens": int(len(heldout_stream)),
        "heldout_perplexity_before": ppl_before,
        "heldout_perplexity_after": ppl_after,
        "perplexity_reduction": ppl_before / ppl_after,
        "first_loss": losses[0],
        "final_loss": losses[-1],
        "build_seconds": round(time.perf_counter() - started, 2),
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    save_mlx_model(model, config, staging)
    _write_tokenizer(tokenizer, staging)
    (staging / "build_info.json").write_text(json.dumps(report, indent=2) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return report


# --- llama2.c import ----------------------------------------------------------------

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


# --- command line -------------------------------------------------------------------


def build_model_main(argv: list[str]) -> int:
    """`yourai build-model [--out DIR] [--corpus JSONL] [--seed N]`."""
    parser = argparse.ArgumentParser(prog="yourai build-model", description="(re)build the embedded default model")
    parser.add_argument("--out", type=Path, default=default_model_dir(), help="output directory (default: %(default)s)")
    parser.add_argument("--corpus", type=Path, default=sample_corpus_path(), help="JSONL with a text field")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    report = build_tiny_model(args.out, args.corpus, args.seed)
    print(
        f"built {args.out} ({report['parameters']:,} parameters) in {report['build_seconds']} s: "
        f"held-out perplexity {report['heldout_perplexity_before']:.1f} → {report['heldout_perplexity_after']:.1f} "
        f"({report['perplexity_reduction']:.1f}× lower)"
    )
    return 0


def import_llama2c_main(argv: list[str]) -> int:
    """`yourai import-llama2c CKPT TOK OUT`."""
    parser = argparse.ArgumentParser(prog="yourai import-llama2c", description="convert a llama2.c checkpoint")
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("tokenizer", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    print(import_llama2c(args.checkpoint, args.tokenizer, args.out))
    return 0


def generate_main(argv: list[str]) -> int:
    """`yourai generate [--model M] [--adapter DIR] [--prompt TEXT] [--max-tokens N] [--temp T]`."""
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    parser = argparse.ArgumentParser(prog="yourai generate", description="generation through mlx-lm")
    parser.add_argument("--model", default="default")
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--prompt", default="The measurements taken in the laboratory")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--temp", type=float, default=0.7, help="0 = greedy")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    model, tokenizer = load_model(args.model, args.adapter)
    mx.random.seed(args.seed)
    sampler = make_sampler(temp=args.temp, top_p=0.9 if args.temp > 0 else 0.0)
    prompt_ids = tokenizer.encode(args.prompt)
    new_ids = [response.token for response in stream_generate(
        model, tokenizer, prompt=prompt_ids, max_tokens=args.max_tokens, sampler=sampler)]
    # Decode prompt and continuation together: the streaming detokenizer trims the first
    # token's leading space, which would glue the continuation onto the prompt's last word.
    print(tokenizer.decode(prompt_ids + new_ids))
    return 0
