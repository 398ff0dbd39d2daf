"""The embedded default: a byte-level BPE and a ~1 M-parameter Llama pretrained on the sample corpus.

It exists so every notebook and test runs on a fresh machine with no model hub, deterministically
for a seed, in about a minute on two CPU cores. The result is a directory `mlx_lm.load()` reads.
"""

from __future__ import annotations

import hashlib
import json
import shutil
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

from yourai.models.load import save_mlx_model
from yourai.records import iter_jsonl
from yourai.paths import sample_corpus_path

EOS_TOKEN = "<|endoftext|>"
UNLIMITED_TOKENS = 1_000_000_000  # tokenizer_config model_max_length: "no limit"
# Everything a build writes: an existing output directory is replaced only when it holds nothing else.
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "build_info.json")


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


def _build_platform() -> dict:
    """What decides a build's last bits: backend, BLAS and versions (the shipped weights record theirs)."""
    from yourai.hardware import detect_machine

    from yourai._blas import openblas_threads

    machine = detect_machine()
    platform = {key: getattr(machine, key) for key in ("os", "arch", "mlx_version", "mlx_lm_version", "backend", "blas")}
    return platform | {"blas_threads": openblas_threads()}


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
    _check_replaceable(out_dir)  # before a minute of training, not after
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
        "built_with": _build_platform(),
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    save_mlx_model(model, config, staging)
    _write_tokenizer(tokenizer, staging)
    (staging / "build_info.json").write_text(json.dumps(report, indent=2) + "\n")
    _move_into_place(staging, out_dir)
    return report


def _check_replaceable(out_dir: Path) -> None:
    """Refuse an output directory holding anything a build does not write: we never delete others' files."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: exists and is not a directory")
    foreign = sorted(path.name for path in out_dir.iterdir() if path.name not in MODEL_FILES) if out_dir.is_dir() else []
    if foreign:
        raise ValueError(f"{out_dir}: holds files a model build does not write ({', '.join(foreign[:5])}); "
                         "choose an empty or new directory")


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Swap the finished build in; the previous build (only our own files, checked again) is removed after."""
    try:
        _check_replaceable(out_dir)
    except ValueError:
        shutil.rmtree(staging)
        raise
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    previous = staging.with_name(staging.name + "-previous")
    out_dir.rename(previous)
    staging.rename(out_dir)
    shutil.rmtree(previous)
