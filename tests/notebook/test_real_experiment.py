"""The real-model experiment's statistics and held-out evaluation, on hand-made scores and the tiny default model."""

from __future__ import annotations

import json

import numpy as np
import pytest

import yourai  # noqa: F401  (OpenBLAS before mlx)

from yourai.config import load_config
from yourai.models import load_model
from yourai.notebook.real_experiment import (greedy_answers, heldout_tier_loss, seed_mean, tier_comparison,
                                             truthfulqa_comparison)


def rows(*mc1: float) -> list[dict]:
    return [{"mc1": value, "mc2": value / 2} for value in mc1]


BASE = rows(0, 0, 1, 0)
RUNS = {(0, "plain"): rows(1, 0, 1, 0), (1, "plain"): rows(0, 0, 1, 0),
        (0, "weighted"): rows(1, 1, 1, 0), (1, "weighted"): rows(1, 0, 1, 1)}


def test_seed_mean_is_per_question():
    assert seed_mean(RUNS, "weighted", "mc1").tolist() == [1.0, 0.5, 1.0, 0.5]
    with pytest.raises(ValueError, match="no runs of objective 'faithful'"):
        seed_mean(RUNS, "faithful", "mc1")


def test_truthfulqa_comparison_by_hand():
    result = truthfulqa_comparison(BASE, RUNS)
    assert result["base"] == {"mc1": 0.25, "mc2": 0.125}
    # plain: per question seed means [0.5, 0, 1, 0] − base [0, 0, 1, 0] → mean 0.125
    assert result["adapter_minus_base"]["plain"]["mc1"]["delta"] == pytest.approx(0.125)
    # weighted: [1, .5, 1, .5] − base → [1, .5, 0, .5] → mean 0.5
    assert result["adapter_minus_base"]["weighted"]["mc2"]["delta"] == pytest.approx(0.25)
    assert result["weighted_minus_plain"]["mc1"]["delta"] == pytest.approx(0.375)
    low, high = result["weighted_minus_plain"]["mc1"]["ci"]
    assert low <= 0.375 <= high
    across = result["weighted_minus_plain_across_seeds"]["mc1"]
    assert across["per_seed"] == pytest.approx([0.25, 0.5]) and across["mean"] == pytest.approx(0.375)
    assert [(r["seed"], r["objective"]) for r in result["per_run"]] == [(0, "plain"), (0, "weighted"), (1, "plain"), (1, "weighted")]
    assert result["per_run"][0]["delta_mc1"]["delta"] == pytest.approx(0.25)
    two_way = result["seeds_and_questions"]  # seeds × questions: same means, intervals that also resample seeds
    assert two_way["weighted_minus_plain"]["mc1"]["delta"] == pytest.approx(0.375)
    assert two_way["weighted_minus_plain"]["mc1"]["n_seeds"] == 2 and two_way["plain_minus_base"]["mc1"]["n_questions"] == 4
    assert two_way["plain_minus_base"]["mc1"]["delta"] == pytest.approx(0.125)
    assert two_way["weighted_minus_base"]["mc2"]["delta"] == pytest.approx(0.25)


def test_tier_comparison_by_hand():
    def tiers(gap: float) -> dict:
        return {"val_loss": 3.0, "val_loss_primary": 3.0 + gap / 2, "val_loss_middle": 3.0,
                "val_loss_consensus": 3.0 - gap / 2, "val_gap": gap}

    result = tier_comparison(tiers(0.4), {(0, "plain"): tiers(0.3), (1, "plain"): tiers(0.5),
                                          (0, "weighted"): tiers(-0.1), (1, "weighted"): tiers(0.1)})
    assert result["per_objective"]["plain"]["val_gap"]["mean"] == pytest.approx(0.4)
    assert result["per_objective"]["weighted"]["val_gap"]["change_from_base"] == pytest.approx(-0.4)
    assert result["gap_change_weighted_minus_plain"]["per_seed"] == pytest.approx([-0.4, -0.4])
    assert result["gap_change_weighted_minus_plain"]["ci95_half_width"] == pytest.approx(0.0)


def test_heldout_tier_loss_scores_every_record(tmp_path):
    from yourai.data.curate import curate

    curate(None, tmp_path, load_config().curate)
    model, tokenizer = load_model()
    metrics = heldout_tier_loss(model, tokenizer, tmp_path / "test.jsonl", 64, 4)
    records = [json.loads(line) for line in (tmp_path / "test.jsonl").read_text().splitlines()]
    assert metrics["val_gap"] == pytest.approx(metrics["val_loss_primary"] - metrics["val_loss_consensus"])
    assert 0 < metrics["val_tokens"] <= 64 * len(records)
    assert np.isfinite(metrics["val_loss"])


def test_greedy_answers_are_deterministic():
    model, tokenizer = load_model()
    first = greedy_answers(model, tokenizer, ["What was measured?"], max_tokens=6)
    assert first == greedy_answers(model, tokenizer, ["What was measured?"], max_tokens=6) and len(first) == 1


@pytest.mark.slow
def test_experiment_script_resumes_without_retraining_or_rescoring(tmp_path):
    """A stopped experiment (hours on 2 cores) restarts with --resume: finished arms are read back, scored models
    are reused, and the results are those of the first run; a changed scoring setting scores again."""
    import subprocess
    import sys

    from yourai.paths import configs_dir

    script = configs_dir().parent / "benchmarks" / "real_model_experiment.py"
    command = [sys.executable, str(script), "-c", str(configs_dir() / "default.yaml"), "--steps", "2", "--seeds", "0",
               "--limit", "3", "--greedy", "1", "--greedy-tokens", "4", "--out", str(tmp_path)]
    first = subprocess.run(command, capture_output=True, text=True, check=True)
    assert "base: scored in" in first.stdout
    arm = tmp_path / "runs" / "seed0-weighted"
    adapters, steps = (arm / "adapters" / "adapters.safetensors").read_bytes(), (arm / "metrics.jsonl").read_text()
    before = json.loads((tmp_path / "results.json").read_text())
    again = subprocess.run([*command, "--resume"], capture_output=True, text=True, check=True)
    assert "base: scores reused" in again.stdout and "seed0-weighted: scores reused" in again.stdout
    after = json.loads((tmp_path / "results.json").read_text())
    assert (arm / "adapters" / "adapters.safetensors").read_bytes() == adapters
    appended = (arm / "metrics.jsonl").read_text().removeprefix(steps).splitlines()
    assert appended and not [line for line in appended if '"loss"' in line], "a finished arm was trained again"
    assert after["truthfulqa"] == before["truthfulqa"] and after["training"] == before["training"]
    changed = subprocess.run([*command, "--limit", "2", "--resume"], capture_output=True, text=True, check=True)
    assert "base: scored in" in changed.stdout and json.loads((tmp_path / "results.json").read_text())["n_questions"] == 2
