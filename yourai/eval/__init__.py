"""Stage 06: TruthfulQA MC1/MC2 (and BLEU generation) exactly as lm-evaluation-harness scores them, base vs adapter."""
