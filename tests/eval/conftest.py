"""A tiny random Llama with a real BPE tokenizer, and a non-zero LoRA adapter for it: fast models to score."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import pytest
from tqa_cases import LM_EVAL_PRIMER

from yourai.eval.tqa_data import SAMPLE_PATH


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random 2-layer mlx-lm Llama with a real (non-prefix-stable) BPE tokenizer, saved loadable by mlx_lm.load."""
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny_llama")
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    texts = [LM_EVAL_PRIMER] + [line for line in SAMPLE_PATH.read_text().splitlines()]
    tokenizer.train_from_iterator(texts, trainer)
    bos_id = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos_id)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(out)
    config = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
              "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
              "vocab_size": tokenizer.get_vocab_size(), "tie_word_embeddings": True}
    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs(**config))
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.fixture(scope="session")
def tiny(tiny_model_dir):
    from mlx_lm import load

    return load(str(tiny_model_dir))


@pytest.fixture(scope="session")
def tiny_adapter_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A LoRA adapter with non-zero weights, in mlx-lm's layout, so base and adapter really differ."""
    from mlx.utils import tree_flatten, tree_map
    from mlx_lm import load
    from mlx_lm.tuner.utils import linear_to_lora_layers

    out = tmp_path_factory.mktemp("tiny_adapter")
    model, _ = load(str(tiny_model_dir))
    model.freeze()
    lora = {"rank": 4, "scale": 20.0, "dropout": 0.0}
    linear_to_lora_layers(model, 2, lora)
    mx.random.seed(1)
    params = tree_map(lambda p: mx.random.normal(p.shape) * 0.05, model.trainable_parameters())
    mx.save_safetensors(str(out / "adapters.safetensors"), dict(tree_flatten(params)))
    (out / "adapter_config.json").write_text(json.dumps({"fine_tune_type": "lora", "num_layers": 2,
                                                         "lora_parameters": lora}))
    return out
