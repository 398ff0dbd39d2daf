"""Records → examples → batches: formats, masks, errors, seeded order, streaming."""

from __future__ import annotations

import json
from pathlib import Path

import yourai  # noqa: F401
import numpy as np
import pytest

from yourai.data.batches import (PAD_MULTIPLE, DataError, Example, padding_fraction, InMemoryData, StreamingData, collate, encode_record, epoch_batches,
                                 load_examples, normaliser, open_train_data, validation_batches)
from yourai.models import load_model

META = {"authority_weight": 0.2, "provenance_entropy": 3.0, "tier": "primary"}


@pytest.fixture(scope="module")
def tokenizer():
    return load_model()[1]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def records(count: int) -> list[dict]:
    rng = np.random.default_rng(1)
    return [{"text": " ".join(["word"] * int(rng.integers(3, 40))) + f" number {i}.",
             "authority_weight": round(float(rng.uniform(0, 0.99)), 3), "provenance_entropy": round(float(rng.uniform(0, 8)), 3)}
            for i in range(count)]


def test_text_trains_on_every_token_and_ends_with_eos(tokenizer):
    tokens, offset = encode_record({"text": "The archive holds letters."}, tokenizer, "x:1")
    assert offset == 0 and tokens[-1] == tokenizer.eos_token_id
    batch = collate(load_examples_from([{"text": "The archive holds letters.", **META}], tokenizer))
    assert batch.target_tokens == len(tokens) - 1


def load_examples_from(recs: list[dict], tokenizer, tmp=Path("/tmp")):
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        return load_examples(write_jsonl(Path(d) / "t.jsonl", recs), tokenizer, 256)[0]


def test_prompt_is_masked_out_of_the_loss(tokenizer):
    prompt, completion = "Question: who wrote the letter?", " The clerk wrote it."
    example = load_examples_from([{"prompt": prompt, "completion": completion, **META}], tokenizer)[0]
    prompt_len = len(tokenizer.encode(prompt))
    assert example.offset == prompt_len
    batch = collate([example])
    mask = np.array(batch.mask)[0]
    targets = np.array(batch.targets)[0]
    trained = targets[mask > 0].tolist()
    assert trained == example.tokens[prompt_len:].tolist()  # exactly the completion and its EOS


def test_messages_train_only_the_last_message(tokenizer):
    messages = [{"role": "user", "content": "Where is the ledger?"}, {"role": "assistant", "content": "In the vault."}]
    tokens, offset = encode_record({"messages": messages}, tokenizer, "x:1")
    head = tokenizer.encode("user: Where is the ledger?\nassistant: ")
    assert offset == len(head) and 0 < offset < len(tokens)


@pytest.mark.parametrize("record, field", [
    ({"text": "fine", "authority_weight": 1.5, "provenance_entropy": 1.0}, "authority_weight"),
    ({"text": "fine", "authority_weight": 0.5}, "provenance_entropy"),
    ({"text": "fine", "authority_weight": 0.5, "provenance_entropy": -1.0}, "provenance_entropy"),
    ({"text": "fine", **META, "tier": "gold"}, "tier"),
    ({"prompt": "only a prompt", **META}, "completion"),
    ({"body": "no text field", **META}, "text"),
])
def test_bad_records_name_file_line_and_field(tokenizer, tmp_path, record, field):
    path = write_jsonl(tmp_path / "train.jsonl", [{"text": "good record", **META}, record])
    with pytest.raises(DataError, match=rf"train\.jsonl:2: .*{field}"):
        load_examples(path, tokenizer, 64)


def test_records_without_scores_are_scored_and_tiered(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "According to the 1923 lab notebook, I measured the sample myself."}])
    examples, stats = load_examples(path, tokenizer, 64)
    assert stats.scored_on_the_fly == 1
    assert 0.0 <= examples[0].authority_weight <= 0.99 and examples[0].tier in ("primary", "middle", "consensus")


def test_epoch_order_is_a_pure_function_of_seed_and_epoch_and_covers_every_record():
    lengths = np.random.default_rng(0).integers(5, 200, size=45)
    first = epoch_batches(lengths, 4, seed=3, epoch=1)
    again = epoch_batches(lengths, 4, seed=3, epoch=1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, epoch_batches(lengths, 4, seed=3, epoch=2)))
    flat = np.concatenate(first)
    assert len(first) == 12 and all(len(b) == 4 for b in first) and set(flat) == set(range(45))
    spread = np.mean([np.ptp(lengths[b]) for b in first])
    unsorted = np.mean([np.ptp(lengths[b]) for b in np.array_split(np.random.default_rng(0).permutation(45), 12)])
    assert spread < unsorted / 2  # length bucketing keeps padding small


def test_weights_are_dataset_normalised_and_travel_with_the_batch(tokenizer, tmp_path):
    data = InMemoryData(write_jsonl(tmp_path / "t.jsonl", records(30)), tokenizer, 64, "monotone", 30.0)
    weights = np.array([e.weight for e in data.examples])
    assert weights.mean() == pytest.approx(1.0, rel=1e-5) and weights.max() / weights.min() <= 30.0 + 1e-3
    batch_examples = next(data.batches(4, seed=0, epoch=0))
    batch = collate(batch_examples)
    np.testing.assert_array_equal(np.array(batch.weights), np.array([e.weight for e in batch_examples], dtype=np.float32))
    assert batch.weight_sum == pytest.approx(normaliser(batch_examples, weighted=True), rel=1e-6)


def test_streaming_reader_is_seeded_resumable_and_sees_every_record(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", records(37))
    stream = StreamingData(path, tokenizer, 64, "monotone", 30.0, buffer_records=8)
    memory = InMemoryData(path, tokenizer, 64, "monotone", 30.0)
    batches = list(stream.batches(4, seed=5, epoch=0))
    lines = [e.line for b in batches for e in b]
    assert set(lines) == set(range(1, 38)) and all(len(b) == 4 for b in batches)
    assert [[e.line for e in b] for b in stream.batches(4, seed=5, epoch=0, start=3)] == [[e.line for e in b] for b in batches[3:]]
    assert lines != [e.line for b in stream.batches(4, seed=6, epoch=0) for e in b]
    by_line = {e.line: e.weight for e in memory.examples}
    assert all(e.weight == by_line[e.line] for b in batches for e in b)  # same dataset-wide weights as in memory
    assert isinstance(open_train_data(path, tokenizer, 64, "monotone", 30.0, streaming=True), StreamingData)


def test_validation_batches_do_not_depend_on_the_training_seed(tokenizer, tmp_path):
    examples, _ = load_examples(write_jsonl(tmp_path / "v.jsonl", records(10)), tokenizer, 64)
    assert [len(b) for b in validation_batches(examples, 4, -1)] == [4, 4, 2]
    assert len(validation_batches(examples, 4, 1)) == 1


def test_reading_data_does_not_import_curation():
    """Training imports yourai.data.batches; curation (dedup, datasketch, scipy) would add tens of MB of RSS."""
    import subprocess
    import sys

    code = ("import sys, yourai.train; "
            "print([m for m in ('yourai.data.curate', 'datasketch', 'pandas') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_padding_fraction_counts_pad_positions_of_each_micro_batch():
    def example(length: int) -> Example:
        return Example(np.arange(length, dtype=np.int32), 0, 0.5, 1.0, "primary", 1.0, 1)

    full = [example(PAD_MULTIPLE + 1)] * 2  # inputs are tokens[:-1]: exactly one multiple, no padding
    assert padding_fraction([full]) == 0.0
    mixed = [example(PAD_MULTIPLE + 1), example(PAD_MULTIPLE // 2 + 1)]  # the short row is half padding
    assert padding_fraction([mixed]) == pytest.approx(0.25)
    assert padding_fraction([full, mixed]) == pytest.approx(PAD_MULTIPLE / 2 / (4 * PAD_MULTIPLE))
    assert collate(mixed).inputs.shape == (2, PAD_MULTIPLE)
