"""A GGUF's tokenizer, rebuilt from its metadata as a `tokenizers` byte-level BPE that mlx-lm and transformers load.

GGUF stores the vocabulary (`tokenizer.ggml.tokens`), merges, token types and special ids, and names the
pre-tokenizer (`tokenizer.ggml.pre`) rather than spelling it out. We rebuild each named pre-tokenizer from
`tokenizers` building blocks:

* `smollm` (SmolLM/SmolLM2): every digit on its own (`Digits(individual_digits=True)`), then GPT-2's
  byte-level split (`ByteLevel(use_regex=True)`) — the configuration of HF's SmolLM2 tokenizer.json.
* `gpt-2` (also spelled `gpt2`): GPT-2's byte-level split alone.
* `llama-bpe` (Llama 3): the split rule below, then byte-level mapping; BPE with `ignore_merges`
  (a piece that is already a vocabulary entry is not re-merged), as Llama 3 tokenizers do.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

# tokenizer.ggml.token_type values (llama.cpp's llama_token_type): which ids are added/special tokens.
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED = 1, 2, 3, 4
SPECIAL_ID_KEYS = {"bos": "tokenizer.ggml.bos_token_id", "eos": "tokenizer.ggml.eos_token_id",
                   "unk": "tokenizer.ggml.unknown_token_id", "pad": "tokenizer.ggml.padding_token_id"}

# The Llama 3 split, stated as what it does; tried in this order at every position of the text:
LLAMA3_SPLIT_PARTS = (
    r"'(?i:s|t|re|ve|m|ll|d)",          # an English contraction suffix, any case: 's 'T 're 'LL ...
    r"[^\r\n\p{L}\p{N}]?\p{L}+",         # a run of letters, with at most one leading non-letter, non-digit,
                                        # non-line-break character (usually the space before the word)
    r"\p{N}{1,3}",                       # digits, in groups of at most three: 1234567 → 123 456 7
    r" ?[^\s\p{L}\p{N}]+[\r\n]*",        # punctuation/symbols, an optional space before, line breaks after
    r"\s*[\r\n]+",                       # line breaks with the whitespace before them
    r"\s+(?!\S)",                        # whitespace not followed by a word: leaves one space for the next word
    r"\s+",                              # any remaining whitespace (at the end of the text)
)
PRE_TOKENIZER_NAMES = ("smollm", "gpt-2", "gpt2", "llama-bpe")


def llama3_split() -> Any:
    """The Llama 3 split as a `tokenizers` Split (each match a piece of its own)."""
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Split(Regex("|".join(LLAMA3_SPLIT_PARTS)), behavior="isolated", invert=False)


def pre_tokenizer(name: str) -> tuple[Any, bool]:
    """(the `tokenizers` pre-tokenizer for `tokenizer.ggml.pre`, whether BPE should ignore merges)."""
    from tokenizers import pre_tokenizers

    byte_level_split = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    if name == "smollm":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level_split]), False
    if name in ("gpt2", "gpt-2"):
        return byte_level_split, False
    if name == "llama-bpe":
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)
        return pre_tokenizers.Sequence([llama3_split(), byte_level]), True
    raise ValueError(f"tokenizer.ggml.pre {name!r} is not supported; supported: {', '.join(PRE_TOKENIZER_NAMES)}")


def special_token(metadata: dict[str, Any], role: str) -> str | None:
    """The text of the bos/eos/unk/pad token, when the GGUF names an id for it."""
    token_id = metadata.get(SPECIAL_ID_KEYS[role])
    return None if token_id is None else metadata["tokenizer.ggml.tokens"][int(token_id)]


def _added_tokens(tokens: Sequence[str], types: np.ndarray) -> list[Any]:
    """Control and unknown tokens as special added tokens, user-defined ones as plain added tokens."""
    from tokenizers import AddedToken

    ids = np.nonzero(np.isin(types, [TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED]))[0]
    return [AddedToken(tokens[i], special=int(types[i]) != TOKEN_USER_DEFINED, normalized=False) for i in ids]


def build_tokenizer(metadata: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """(a `tokenizers.Tokenizer`, the tokenizer_config.json content) from GGUF metadata."""
    from tokenizers import Tokenizer, decoders, models

    kind = metadata.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ValueError(f"tokenizer.ggml.model {kind!r} is not supported; supported: gpt2 (byte-level BPE)")
    tokens: list[str] = list(metadata["tokenizer.ggml.tokens"])
    types = np.asarray(metadata.get("tokenizer.ggml.token_type", np.full(len(tokens), TOKEN_NORMAL)))
    vocab: dict[str, int] = {}
    for index, token in enumerate(tokens):
        vocab.setdefault(token, index)  # a duplicated entry (padding slots) keeps its first id
    merges = [tuple(merge.split(" ", 1)) for merge in metadata.get("tokenizer.ggml.merges", [])]
    splitter, ignore_merges = pre_tokenizer(metadata.get("tokenizer.ggml.pre", "gpt2"))
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore_merges, fuse_unk=False,
                                     byte_fallback=False))
    tokenizer.pre_tokenizer = splitter
    tokenizer.decoder = decoders.ByteLevel()
    added = _added_tokens(tokens, types)
    tokenizer.add_tokens(added)
    add_bos = bool(metadata.get("tokenizer.ggml.add_bos_token", False))
    add_eos = bool(metadata.get("tokenizer.ggml.add_eos_token", False))
    tokenizer.post_processor = post_processor(metadata, add_bos, add_eos)
    return tokenizer, tokenizer_config(metadata, added, add_bos, add_eos)


def post_processor(metadata: dict[str, Any], add_bos: bool, add_eos: bool) -> Any:
    """Byte-level offsets, plus BOS/EOS around every sequence when the GGUF asks for them."""
    from tokenizers import processors

    byte_level = processors.ByteLevel(trim_offsets=False)
    if not (add_bos or add_eos):
        return byte_level
    around = {role: (special_token(metadata, role), int(metadata[SPECIAL_ID_KEYS[role]]))
              for role, wanted in (("bos", add_bos), ("eos", add_eos)) if wanted}
    if any(text is None for text, _ in around.values()):
        raise ValueError(f"tokenizer.ggml.add_bos_token/add_eos_token is set but the GGUF names no id for {list(around)}")

    def template(sequence: str, type_id: int) -> str:
        before = f"{around['bos'][0]}:{type_id} " if "bos" in around else ""
        after = f" {around['eos'][0]}:{type_id}" if "eos" in around else ""
        return f"{before}${sequence}:{type_id}{after}"

    single, pair = template("A", 0), f"{template('A', 0)} {template('B', 1)}"
    return processors.Sequence([byte_level, processors.TemplateProcessing(single=single, pair=pair,
                                                                           special_tokens=list(around.values()))])


def tokenizer_config(metadata: dict[str, Any], added: Sequence[Any], add_bos: bool, add_eos: bool) -> dict[str, Any]:
    """tokenizer_config.json: what transformers and mlx-lm read besides tokenizer.json (chat template included)."""
    first_id = {token: index for index, token in reversed(list(enumerate(metadata["tokenizer.ggml.tokens"])))}
    architecture = metadata.get("general.architecture")
    config: dict[str, Any] = {
        # the generic fast tokenizer: transformers then uses tokenizer.json as written, guessing nothing
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(metadata.get(f"{architecture}.context_length", 2048)),
        "added_tokens_decoder": {
            str(first_id[token.content]): {"content": token.content, "lstrip": False, "rstrip": False,
                                            "normalized": False, "single_word": False, "special": token.special}
            for token in added
        },
    }
    for role in SPECIAL_ID_KEYS:
        if (text := special_token(metadata, role)) is not None:
            config[f"{role}_token"] = text
    if (template := metadata.get("tokenizer.chat_template")) is not None:
        config["chat_template"] = template
    return config
