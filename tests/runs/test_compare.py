"""`yourai compare`: the one setting that differs, metrics side by side, and the paired delta on the shared eval set."""

from __future__ import annotations

import json

import pytest

from run_dirs import make_run
from yourai.cli.runs import compare_main
from yourai.runs.compare import comparison


def test_compare_two_runs_with_a_known_difference(two_runs):
    plain, weighted = two_runs
    result = comparison([plain, weighted])
    assert list(result["config"].index) == ["loss.objective"]
    assert list(result["config"].loc["loss.objective"]) == ["plain", "weighted"]
    assert result["metrics"].loc["val_gap"].tolist() == [-0.3, -0.8]
    (delta,) = [row for row in result["deltas"] if row["metric"] == "mc1"]
    assert delta["delta"] == pytest.approx((30 - 15) / 40) and delta["n"] == 40  # 3 more right in every 8
    assert delta["ci"][0] > 0 and delta["vs"] == "plain" and delta["run"] == "weighted"


def test_no_pairing_across_different_eval_files(tmp_path):
    first = make_run(tmp_path, "a", [], [1, 0, 1], data_sha="a" * 64)
    second = make_run(tmp_path, "b", ["train.seed=1"], [0, 0, 1], data_sha="b" * 64)
    result = comparison([first, second])
    assert result["deltas"] == [] and list(result["config"].index) == ["train.seed"]


def test_cli_prints_differences_and_deltas(two_runs, capsys):
    assert compare_main([str(path) for path in two_runs]) == 0
    out = capsys.readouterr().out
    assert "loss.objective" in out and "weighted − plain: +0.3750" in out
    assert compare_main([str(path) for path in two_runs] + ["--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["config"]["loss.objective"] == {"plain": "plain", "weighted": "weighted"}


def test_cli_names_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert compare_main([str(tmp_path), str(tmp_path)]) == 2
    assert "no run.json" in capsys.readouterr().err
