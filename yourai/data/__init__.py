"""Stage 01: raw sources → curated JSONL (validate, score, guard, chunk, dedup, balance, split) → token batches."""
