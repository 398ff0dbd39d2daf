"""Notebook 04's experiment summary: paired weighted − plain gap change over seeds, faithful identity by bytes."""

from __future__ import annotations

import pytest

from yourai.notebook.experiments import experiment_arms, experiment_summary
from yourai.stats import mean_ci95


def _adapters(tmp_path, name: str, payload: bytes):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "adapters.safetensors").write_bytes(payload)
    return str(folder)


def test_summary_pairs_seeds_and_checks_faithful_bytes(tmp_path):
    rows = []
    for seed, (plain_gap, weighted_gap) in enumerate([(-0.2, -0.9), (-0.3, -1.1), (-0.25, -1.0)]):
        same = _adapters(tmp_path, f"p{seed}", b"x")
        rows += [{"seed": seed, "objective": "plain", "val_gap": plain_gap, "adapters_dir": same},
                 {"seed": seed, "objective": "faithful", "val_gap": plain_gap,
                  "adapters_dir": _adapters(tmp_path, f"f{seed}", b"x")},
                 {"seed": seed, "objective": "weighted", "val_gap": weighted_gap,
                  "adapters_dir": _adapters(tmp_path, f"w{seed}", b"y")}]
    summary = experiment_summary(rows)
    assert summary["faithful_bit_identical_to_plain"] is True
    mean, half_width = mean_ci95([-0.7, -0.8, -0.75])
    assert summary["gap_change_weighted_minus_plain_mean"] == pytest.approx(mean)
    assert summary["gap_change_weighted_minus_plain_ci95"] == pytest.approx(half_width)
    (tmp_path / "f1" / "adapters.safetensors").write_bytes(b"z")
    assert experiment_summary(rows)["faithful_bit_identical_to_plain"] is False


def test_faithful_is_trained_for_the_first_seed_only_unless_asked():
    objectives = ("plain", "faithful", "weighted")
    assert experiment_arms([3, 5], objectives) == [(3, "plain"), (3, "faithful"), (3, "weighted"),
                                                   (5, "plain"), (5, "weighted")]
    assert len(experiment_arms([3, 5], objectives, faithful_once=False)) == 6
    assert experiment_arms([1, 2], ("weighted",)) == [(1, "weighted"), (2, "weighted")]
