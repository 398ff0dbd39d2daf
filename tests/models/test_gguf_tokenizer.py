"""Tokenizers rebuilt from GGUF metadata: the pre-tokenizers' behaviour, special tokens, and SmolLM2's real vocabulary."""

from __future__ import annotations

import json
import random

import pytest

from yourai.models.gguf_file import read_gguf
from yourai.models.gguf_tokenizer import build_tokenizer, llama3_split, pre_tokenizer
from yourai.records import iter_jsonl

SHARED_SAMPLE_PER_CORPUS = 25  # records per ../shared corpus in the round trip (bounded for CI)


def pieces(splitter, text: str) -> list[str]:
    return [piece for piece, _ in splitter.pre_tokenize_str(text)]


# --- llama-bpe: the behaviour of Llama 3's split, pinned piece by piece


def test_llama_bpe_groups_digits_by_at_most_three():
    assert pieces(llama3_split(), "1234567 and 42") == ["123", "456", "7", " and", " ", "42"]


def test_llama_bpe_splits_contractions_in_any_case():
    assert pieces(llama3_split(), "I'LL say it's") == ["I", "'LL", " say", " it", "'s"]
    assert pieces(llama3_split(), "they'Re we've") == ["they", "'Re", " we", "'ve"]


def test_llama_bpe_words_take_one_leading_space_or_symbol():
    assert pieces(llama3_split(), "x  y") == ["x", " ", " y"]
    assert pieces(llama3_split(), "(see) naïve café") == ["(see", ")", " naïve", " café"]


def test_llama_bpe_punctuation_keeps_following_line_breaks():
    assert pieces(llama3_split(), "Hello!!\n\nWorld") == ["Hello", "!!\n\n", "World"]
    assert pieces(llama3_split(), "tab\tthen  \n  next") == ["tab", "\tthen", "  \n", " ", " next"]


def test_llama_bpe_covers_every_character():
    text = "Über 3.14159 km/h — \"quoted\"\r\n\t end  "
    assert "".join(pieces(llama3_split(), text)) == text


# --- smollm and gpt2


def test_smollm_splits_every_digit_gpt2_does_not():
    smollm, _ = pre_tokenizer("smollm")
    gpt2, _ = pre_tokenizer("gpt2")
    assert pieces(smollm, "In 1851 it") == ["In", "Ġ", "1", "8", "5", "1", "Ġit"]
    assert pieces(gpt2, "In 1851 it") == ["In", "Ġ1851", "Ġit"]


def test_unknown_pre_tokenizer_and_model_are_named():
    with pytest.raises(ValueError, match=r"tokenizer.ggml.pre 'falcon' is not supported; supported: smollm"):
        pre_tokenizer("falcon")
    with pytest.raises(ValueError, match=r"tokenizer.ggml.model 'llama' is not supported"):
        build_tokenizer({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["a"]})


# --- synthetic GGUFs: special tokens, BOS, chat template


def test_control_tokens_are_single_special_ids(native_gguf):
    tokenizer, config = build_tokenizer(read_gguf(native_gguf).metadata)
    assert tokenizer.encode("<|im_start|>user\nhi<|im_end|>").ids[0] == 1
    assert 2 in tokenizer.encode("<|im_start|>user\nhi<|im_end|>").ids
    assert config["added_tokens_decoder"]["1"] == {"content": "<|im_start|>", "lstrip": False, "rstrip": False,
                                                   "normalized": False, "single_word": False, "special": True}
    assert (config["bos_token"], config["eos_token"], config["pad_token"], config["unk_token"]) == \
        ("<|im_start|>", "<|im_end|>", "<|im_end|>", "<|endoftext|>")
    assert config["add_bos_token"] is False and "<|im_start|>" in config["chat_template"]
    assert tokenizer.encode("plain text").ids[0] != 1  # no BOS unless the GGUF asks for it


def test_add_bos_token_prepends_bos(mixed_gguf):
    tokenizer, config = build_tokenizer(read_gguf(mixed_gguf).metadata)
    assert config["add_bos_token"] is True
    assert tokenizer.encode("plain text").ids[0] == 1
    assert tokenizer.encode("plain text", add_special_tokens=False).ids[0] != 1


def test_synthetic_tokenizers_round_trip_the_sample_corpus(native_gguf, mixed_gguf):
    from yourai.paths import sample_corpus_path

    texts = [record["text"] for _, record in iter_jsonl(sample_corpus_path())][:40]
    for path in (native_gguf, mixed_gguf):
        tokenizer, _ = build_tokenizer(read_gguf(path).metadata)
        for text in texts:
            assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False).ids) == text


# --- SmolLM2's real vocabulary (the packaged GGUF)


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_file):
    return build_tokenizer(read_gguf(smollm2_file).metadata)[0]


@pytest.fixture(scope="module")
def smollm2_hf_tokenizer(smollm2_file, tmp_path_factory):
    """The tokenizer files an import writes, loaded the way mlx-lm loads them (transformers)."""
    from mlx_lm.utils import load_tokenizer

    tokenizer, config = build_tokenizer(read_gguf(smollm2_file).metadata)
    out = tmp_path_factory.mktemp("smollm2-tokenizer")
    tokenizer.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    return load_tokenizer(out)


def test_smollm2_1851_is_four_digit_tokens(smollm2_tokenizer):
    ids = smollm2_tokenizer.encode("1851").ids
    assert len(ids) == 4 and [smollm2_tokenizer.decode([i]) for i in ids] == ["1", "8", "5", "1"]


def test_smollm2_known_ids(smollm2_tokenizer):
    # SmolLM2's own ids for its chat template's opening (`<|im_start|>system\nYou are`)
    assert smollm2_tokenizer.encode("<|im_start|>system\nYou are").ids == [1, 9690, 198, 2683, 359]


def test_smollm2_chat_template_renders_special_ids(smollm2_hf_tokenizer):
    ids = smollm2_hf_tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                                    add_generation_prompt=True)
    im_start, im_end = (smollm2_hf_tokenizer.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>"))
    assert (im_start, im_end) == (1, 2)
    assert ids[0] == 1 and ids.count(1) == ids.count(2) + 1  # every turn opened and closed; the answer's left open
    text = smollm2_hf_tokenizer.decode(ids, skip_special_tokens=False)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_smollm2_round_trips_every_shared_corpus(smollm2_tokenizer, shared_dir):
    corpora = sorted((shared_dir / "data" / "corpora").glob("*/*.jsonl"))
    assert len(corpora) >= 5
    for path in corpora:
        records = [record for _, record in iter_jsonl(path)]
        sample = random.Random(0).sample(records, min(SHARED_SAMPLE_PER_CORPUS, len(records)))
        for record in sample:
            ids = smollm2_tokenizer.encode(record["text"], add_special_tokens=False).ids
            assert smollm2_tokenizer.decode(ids, skip_special_tokens=False) == record["text"], (path.name, record.get("id"))
