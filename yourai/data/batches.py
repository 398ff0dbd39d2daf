"""Curated JSONL → token batches that carry each record's authority_weight, H, tier and distrust weight.

Three record shapes, as mlx-lm reads them: ``{"text"}``, ``{"prompt", "completion"}`` (the
prompt is masked out of the loss) and ``{"messages": [...]}`` (only the last message counts).
Records without ``authority_weight``/``provenance_entropy`` are scored on the fly.

The batch order of an epoch is a pure function of ``(seed, epoch)``: a seeded permutation,
length-sorted inside windows of ``BUCKET_BATCHES`` batches (little padding, still random), then
the batches themselves shuffled. So the data position of a run is just ``(epoch, batch_index)``,
which is what makes a resumed run bit-identical to an uninterrupted one.

Two readers share that contract: :class:`InMemoryData` (tokenises once) and
:class:`StreamingData` (a shuffle buffer over the file, for files larger than memory; it keeps
only two floats per record, needed to normalise the weights over the whole dataset).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import mlx.core as mx
import numpy as np

from yourai.loss import MetadataError, distrust_weights, validate_metadata
from yourai.records import iter_jsonl
from yourai.records import record_text
from yourai.tiers import TIERS, tier_of

PAD_MULTIPLE = 32  # as mlx-lm: padded lengths come in few shapes, so a compiled step recompiles rarely
BUCKET_BATCHES = 16  # batches per length-sorting window: less padding, order still random
VALID_ORDER_SEED = 0x5EED  # validation order is fixed across training seeds so runs compare on equal data
STREAM_ABOVE_MEMORY_FRACTION = 0.25  # a train file bigger than this share of free memory is streamed


class DataError(ValueError):
    """A record that breaks the data contract, named by file, line and field (`field` also as data)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Example:
    """One tokenised record: the loss counts targets at positions >= offset."""

    tokens: np.ndarray  # int32 token ids, at most max_seq_length
    offset: int  # first token position whose prediction is trained (0 for plain text)
    authority_weight: float
    provenance_entropy: float
    tier: str
    weight: float  # dataset-normalised distrust weight (1.0 until weights are attached)
    line: int  # line number in the source file, for messages and tests

    @property
    def targets(self) -> int:
        """Number of tokens this example trains on."""
        return max(len(self.tokens) - max(self.offset, 1), 0)


@dataclass(frozen=True)
class Batch:
    """Model inputs plus everything the objective and the per-tier validation need."""

    inputs: mx.array  # int32 [B, T]
    targets: mx.array  # int32 [B, T]
    mask: mx.array  # float32 [B, T]: 1 where the target is trained
    weights: mx.array  # float32 [B]
    authority_weight: mx.array  # float32 [B]
    provenance_entropy: mx.array  # float32 [B]
    tiers: tuple[str, ...]
    target_tokens: int  # counted targets (what tokens/s counts)
    weight_sum: float  # sum of weights over samples with targets (the weighted objective's normaliser)

    @property
    def size(self) -> int:
        return len(self.tiers)


# ---------------------------------------------------------------- reading and encoding


def record_scores(record: Mapping[str, Any], where: str) -> tuple[float, float]:
    """(authority_weight, H_bits) from the record, or from the scorer when the record has none."""
    has = ("authority_weight" in record, "provenance_entropy" in record)
    if all(has):
        authority_weight, entropy = record["authority_weight"], record["provenance_entropy"]
    elif any(has):
        missing = "provenance_entropy" if has[0] else "authority_weight"
        raise DataError(f"{where}: field '{missing}' is missing (give both scores or neither)", missing)
    else:
        from yourai.scoring import score

        try:
            result = score(record_text(record)[0])
        except ValueError as err:
            raise DataError(f"{where}: cannot score the record: {err}") from err
        authority_weight, entropy = result.authority_weight, result.provenance_entropy
    try:
        validate_metadata(authority_weight, entropy)
    except MetadataError as err:
        raise DataError(f"{where}: field '{err.field}': {err}", err.field) from err
    return float(authority_weight), float(entropy)


def record_tier(record: Mapping[str, Any], authority_weight: float, where: str) -> str:
    """The curated tier, or the curation rule applied to authority_weight when the record has none."""
    tier = record.get("tier")
    if tier is None:
        return tier_of(authority_weight)
    if tier not in TIERS:
        raise DataError(f"{where}: field 'tier' must be one of {list(TIERS)}, got {tier!r}", "tier")
    return tier


def _chat_render(tokenizer: Any, messages: list[dict], add_generation_prompt: bool) -> list[int]:
    """Token ids through the model's chat template; a plain 'role: content' layout when it has none."""
    if getattr(tokenizer, "has_chat_template", False):
        return list(tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt))
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
    if add_generation_prompt:
        text += "assistant: "
    return list(tokenizer.encode(text))


def _check_messages(messages: Any, where: str) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: field 'messages' must be a non-empty list")
    for index, message in enumerate(messages):
        if not (isinstance(message, dict) and isinstance(message.get("role"), str) and isinstance(message.get("content"), str)):
            raise DataError(f"{where}: field 'messages[{index}]' needs string 'role' and 'content'")
    return messages


def encode_record(record: Mapping[str, Any], tokenizer: Any, where: str) -> tuple[list[int], int]:
    """(token ids, offset): text trains on everything, prompts and earlier messages are masked."""
    eos = tokenizer.eos_token_id
    if "text" in record:
        if not isinstance(record["text"], str) or not record["text"].strip():
            raise DataError(f"{where}: field 'text' must be a non-empty string")
        tokens = list(tokenizer.encode(record["text"]))
        return (tokens if tokens and tokens[-1] == eos else tokens + [eos]), 0
    if "prompt" in record or "completion" in record:
        prompt, completion = record.get("prompt"), record.get("completion")
        if not isinstance(prompt, str) or not isinstance(completion, str) or not completion:
            raise DataError(f"{where}: fields 'prompt' and 'completion' must both be strings (completion non-empty)")
        if getattr(tokenizer, "has_chat_template", False):
            return _encode_chat([{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}], tokenizer)
        prompt_ids = list(tokenizer.encode(prompt))
        return prompt_ids + list(tokenizer.encode(completion, add_special_tokens=False)) + [eos], len(prompt_ids)
    if "messages" in record:
        return _encode_chat(_check_messages(record["messages"], where), tokenizer)
    raise DataError(f"{where}: a record needs 'text', 'prompt'+'completion' or 'messages' (has {sorted(record)})")


def _encode_chat(messages: list[dict], tokenizer: Any) -> tuple[list[int], int]:
    """Whole conversation, with the loss on the last message only (mlx-lm's mask_prompt)."""
    tokens = _chat_render(tokenizer, messages, add_generation_prompt=False)
    offset = len(_chat_render(tokenizer, messages[:-1], add_generation_prompt=True))
    if not tokens or tokens[-1] != tokenizer.eos_token_id:
        tokens.append(tokenizer.eos_token_id)
    return tokens, offset


def make_example(record: Mapping[str, Any], tokenizer: Any, max_seq_length: int, where: str, line: int) -> Example:
    """Validate, score if needed, tokenise and truncate one record."""
    return make_example_sized(record, tokenizer, max_seq_length, where, line)[0]


def make_example_sized(record: Mapping[str, Any], tokenizer: Any, max_seq_length: int, where: str,
                       line: int) -> tuple[Example, int]:
    """The example and its length before truncation (so truncation can be counted)."""
    authority_weight, entropy = record_scores(record, where)
    tier = record_tier(record, authority_weight, where)
    tokens, offset = encode_record(record, tokenizer, where)
    example = Example(np.asarray(tokens[:max_seq_length], dtype=np.int32), offset, authority_weight, entropy, tier, 1.0, line)
    if example.targets == 0:
        raise DataError(
            f"{where}: nothing left to train on after truncation to {max_seq_length} tokens "
            f"(prompt is {offset} tokens): raise train.max_seq_length or shorten the prompt"
        )
    return example, len(tokens)


# ---------------------------------------------------------------- batch order


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Record indices of every batch of one epoch, a pure function of (seed, epoch).

    When the record count is not a multiple of the batch size, the last batch is completed
    with the epoch's first records, so no record is ever left out of an epoch.
    """
    count = len(lengths)
    if count == 0:
        raise DataError("no training records")
    rng = np.random.default_rng([seed, epoch])
    order = np.resize(rng.permutation(count), math.ceil(count / batch_size) * batch_size)
    window = batch_size * BUCKET_BATCHES
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def padded_width(examples: Sequence[Example]) -> int:
    """Input positions per row after padding: the longest input, rounded up to a multiple of PAD_MULTIPLE."""
    longest = max(len(e.tokens) for e in examples)
    return PAD_MULTIPLE * math.ceil((longest - 1) / PAD_MULTIPLE) if longest > 1 else PAD_MULTIPLE


def padding_fraction(micro_batches: Sequence[Sequence[Example]]) -> float:
    """Share of the computed input positions that are padding (what length bucketing keeps small)."""
    computed = sum(len(micro) * padded_width(micro) for micro in micro_batches)
    real = sum(len(e.tokens) - 1 for micro in micro_batches for e in micro)
    return 1.0 - real / computed


def collate(examples: Sequence[Example]) -> Batch:
    """Pad to a multiple of PAD_MULTIPLE and build the loss mask from each example's offset."""
    width = padded_width(examples)
    tokens = np.zeros((len(examples), width + 1), dtype=np.int32)
    mask = np.zeros((len(examples), width), dtype=np.float32)
    for row, example in enumerate(examples):
        tokens[row, : len(example.tokens)] = example.tokens
        mask[row, max(example.offset, 1) - 1 : len(example.tokens) - 1] = 1.0  # target j is token j + 1
    weights = np.array([e.weight for e in examples], dtype=np.float32)
    counted = mask.sum(axis=1) > 0
    return Batch(
        inputs=mx.array(tokens[:, :-1]),
        targets=mx.array(tokens[:, 1:]),
        mask=mx.array(mask),
        weights=mx.array(weights),
        authority_weight=mx.array(np.array([e.authority_weight for e in examples], dtype=np.float32)),
        provenance_entropy=mx.array(np.array([e.provenance_entropy for e in examples], dtype=np.float32)),
        tiers=tuple(e.tier for e in examples),
        target_tokens=int(mask.sum()),
        weight_sum=float(weights[counted].sum()),
    )


def normaliser(examples: Sequence[Example], weighted: bool) -> float:
    """What a batch loss divides by: counted tokens (CE) or summed weights (weighted CE)."""
    if weighted:
        return float(sum(np.float32(e.weight) for e in examples if e.targets > 0))
    return float(sum(e.targets for e in examples))


# ---------------------------------------------------------------- datasets


@dataclass
class DataStats:
    """What reading a file did, so truncation and scoring are reported, never silent."""

    path: str
    records: int = 0
    truncated: int = 0
    scored_on_the_fly: int = 0
    target_tokens: int = 0

    def as_event(self, split: str) -> dict:
        return {"event": "data", "split": split, **self.__dict__}


def _note(stats: DataStats, record: Mapping[str, Any], example: Example, full_length: int) -> None:
    stats.records += 1
    stats.truncated += full_length > len(example.tokens)
    stats.scored_on_the_fly += "authority_weight" not in record
    stats.target_tokens += example.targets


def load_examples(path: Path, tokenizer: Any, max_seq_length: int) -> tuple[list[Example], DataStats]:
    """Every record of a (small enough) JSONL file, tokenised."""
    path = Path(path)
    stats, examples = DataStats(str(path)), []
    for line, record in iter_jsonl(path, DataError):
        where = f"{path}:{line}"
        example, full_length = make_example_sized(record, tokenizer, max_seq_length, where, line)
        _note(stats, record, example, full_length)
        examples.append(example)
    if not examples:
        raise DataError(f"{path}: no records")
    return examples, stats


def with_weights(examples: Sequence[Example], weights: np.ndarray) -> list[Example]:
    return [Example(e.tokens, e.offset, e.authority_weight, e.provenance_entropy, e.tier, float(w), e.line) for e, w in zip(examples, weights)]


class InMemoryData:
    """A tokenised training set with dataset-normalised weights and a seeded epoch order."""

    def __init__(self, path: Path, tokenizer: Any, max_seq_length: int, scheme: str, weight_cap: float) -> None:
        examples, self.stats = load_examples(path, tokenizer, max_seq_length)
        self.authority_weight = np.array([e.authority_weight for e in examples])
        self.provenance_entropy = np.array([e.provenance_entropy for e in examples])
        self.examples = with_weights(examples, distrust_weights(self.authority_weight, self.provenance_entropy, scheme, cap=weight_cap))
        self.lengths = np.array([len(e.tokens) for e in self.examples])

    def __len__(self) -> int:
        return len(self.examples)

    def batches(self, batch_size: int, seed: int, epoch: int, start: int = 0) -> Iterator[list[Example]]:
        """The epoch's batches from batch index `start` on."""
        for indices in epoch_batches(self.lengths, batch_size, seed, epoch)[start:]:
            yield [self.examples[i] for i in indices]


class StreamingData:
    """Shuffle-buffer reader: memory holds `buffer_records` tokenised records, whatever the file size.

    A first pass keeps two floats per record (authority_weight, H) so weights are normalised over the whole
    dataset exactly as in memory; each epoch then streams the file through a seeded shuffle buffer.
    """

    def __init__(self, path: Path, tokenizer: Any, max_seq_length: int, scheme: str, weight_cap: float,
                 buffer_records: int) -> None:
        self.path, self.tokenizer, self.max_seq_length = Path(path), tokenizer, max_seq_length
        self.buffer_records = buffer_records
        scores = [record_scores(r, f"{self.path}:{n}") for n, r in iter_jsonl(self.path, DataError)]
        if not scores:
            raise DataError(f"{self.path}: no records")
        self.authority_weight, self.provenance_entropy = (np.array(column) for column in zip(*scores))
        self.weights = distrust_weights(self.authority_weight, self.provenance_entropy, scheme, cap=weight_cap)
        self.stats = DataStats(str(self.path), records=len(scores))

    def __len__(self) -> int:
        return len(self.weights)

    def _shuffled(self, rng: np.random.Generator) -> Iterator[Example]:
        """Records in shuffle-buffer order: each new record swaps out a random buffered one."""
        buffer: list[Example] = []
        for index, (line, record) in enumerate(iter_jsonl(self.path, DataError)):
            example = make_example(record, self.tokenizer, self.max_seq_length, f"{self.path}:{line}", line)
            example = with_weights([example], self.weights[index : index + 1])[0]
            if len(buffer) < self.buffer_records:
                buffer.append(example)
                continue
            slot = int(rng.integers(len(buffer)))
            buffer[slot], example = example, buffer[slot]
            yield example
        yield from (buffer[i] for i in rng.permutation(len(buffer)))

    def batches(self, batch_size: int, seed: int, epoch: int, start: int = 0) -> Iterator[list[Example]]:
        """The epoch's batches (same bucketing as in memory), skipping the first `start`."""
        rng = np.random.default_rng([seed, epoch])
        produced, window = 0, batch_size * BUCKET_BATCHES
        pending: list[Example] = []
        first: list[Example] = []  # the epoch's first records complete its last batch
        for example in self._shuffled(rng):
            if len(first) < batch_size:
                first.append(example)
            pending.append(example)
            if len(pending) == window:
                for batch in self._bucket(pending, batch_size, rng):
                    produced += 1
                    if produced > start:
                        yield batch
                pending = []
        if pending:
            pending.extend(first[: (-len(pending)) % batch_size])  # complete the last batch, as in memory
            for batch in self._bucket(pending, batch_size, rng):
                produced += 1
                if produced > start:
                    yield batch

    @staticmethod
    def _bucket(window: list[Example], batch_size: int, rng: np.random.Generator) -> list[list[Example]]:
        ordered = sorted(window, key=lambda e: len(e.tokens))
        batches = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]


def should_stream(path: Path, forced: bool) -> bool:
    """Stream when asked to, or when the file would crowd memory once tokenised."""
    import psutil

    return forced or Path(path).stat().st_size > STREAM_ABOVE_MEMORY_FRACTION * psutil.virtual_memory().available


def open_train_data(path: Path, tokenizer: Any, max_seq_length: int, scheme: str, weight_cap: float,
                    *, streaming: bool = False, buffer_records: int = 1000) -> InMemoryData | StreamingData:
    """The training set through the reader that fits it."""
    if should_stream(path, streaming):
        return StreamingData(path, tokenizer, max_seq_length, scheme, weight_cap, buffer_records)
    return InMemoryData(path, tokenizer, max_seq_length, scheme, weight_cap)


def validation_batches(examples: Sequence[Example], batch_size: int, limit: int) -> list[list[Example]]:
    """A fixed, seed-independent selection of validation batches (limit -1 = all)."""
    order = np.random.default_rng(VALID_ORDER_SEED).permutation(len(examples))
    batches = [[examples[i] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]
    return batches if limit == -1 else batches[:limit]
