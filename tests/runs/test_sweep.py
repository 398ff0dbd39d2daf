"""`yourai sweep`: a 2 × 2 grid on the tiny default, killed after its first cell and resumed, equals an uninterrupted sweep."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from yourai.cli.sweep import cli_main
from yourai.paths import PROJECT_ROOT
from yourai.runs.record import read_record
from yourai.runs.sweep import expand, load_sweep_spec, run_sweep

SPEC = """name: tiny
overrides: {train.steps: 3, train.eval_every: 3, train.save_every: 2, train.max_seq_length: 64,
            eval.limit: 4, eval.data: data/sample/truthfulqa_sample/truthfulqa_sample.jsonl}
grid:
  loss.objective: [plain, weighted]
  train.seed: [0, 1]
baseline: {loss.objective: plain}
tasks: [evidence_vs_authority]
"""
TIMING_COLUMNS = ["seconds", "tokens_per_s"]
KILL_TIMEOUT_S = 300


@pytest.fixture
def spec_path(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(SPEC, encoding="utf-8")
    return path


def _first_cell_done(out: Path, cell: str) -> bool:
    try:
        stages = read_record(out / "cells" / cell).get("stages", {})
    except ValueError:  # caught mid-write: not done yet
        return False
    return all(stages.get(stage, {}).get("status") == "ok" for stage in ("train", "eval", "eval:evidence_vs_authority"))


def _kill_after_first_cell(spec_path: Path, out: Path, first_cell: str) -> None:
    """`yourai sweep` in a child process, SIGKILLed as soon as its first cell is recorded as finished."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    child = subprocess.Popen([sys.executable, "-m", "yourai", "sweep", str(spec_path), "--out", str(out),
                              "--no-notebook"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True)
    deadline = time.monotonic() + KILL_TIMEOUT_S
    while not _first_cell_done(out, first_cell):
        if child.poll() is not None:
            raise AssertionError(f"the sweep ended before it could be killed: {child.stderr.read().decode()[-2000:]}")
        assert time.monotonic() < deadline, "first cell did not finish in time"
        time.sleep(0.2)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    child.stderr.close()


@pytest.mark.slow
def test_killed_sweep_resumes_to_the_same_results(spec_path, tmp_path, capsys):
    cells = [cell.id for cell in expand(load_sweep_spec(spec_path))]
    assert cells == ["objective-plain__seed-0", "objective-plain__seed-1", "objective-weighted__seed-0",
                     "objective-weighted__seed-1"]
    killed = tmp_path / "killed"
    _kill_after_first_cell(spec_path, killed, cells[0])
    assert read_record(killed / "cells" / cells[0])["status"] == "ok"
    assert not (killed / "cells" / cells[3] / "run.json").exists()

    messages = []
    assert run_sweep(load_sweep_spec(spec_path), killed, report=messages.append) == {}
    assert messages[0] == f"[1/4] {cells[0]}: finished earlier, skipped"
    assert cli_main([str(spec_path), "--out", str(tmp_path / "whole")]) == 0  # with the analysis notebook, as users run it
    printed = capsys.readouterr().out
    assert "| objective=weighted | objective=plain | truthfulqa | mc2 |" in printed
    assert f"analysis notebook: {tmp_path / 'whole' / 'notebooks' / '07_sweep_analysis.ipynb'} (ok)" in printed

    resumed = pd.read_csv(killed / "results.csv").drop(columns=TIMING_COLUMNS)
    whole = pd.read_csv(tmp_path / "whole" / "results.csv").drop(columns=TIMING_COLUMNS)
    pd.testing.assert_frame_equal(resumed, whole)
    pd.testing.assert_frame_equal(pd.read_csv(killed / "per_question.csv"), pd.read_csv(tmp_path / "whole" / "per_question.csv"))
    summary = json.loads((killed / "summary.json").read_text())
    assert summary == json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert summary["status"] == {"ok": 4} and summary["baseline"] == "objective=plain"
    pairs = {(row["eval"], row["metric"]): row for row in summary["comparisons"]}
    assert pairs[("truthfulqa", "mc2")]["n_seeds"] == 2 and pairs[("truthfulqa", "mc2")]["n_questions"] == 4
    assert pairs[("train", "val_gap")]["n_questions"] == 1  # per-run metric: over seeds only
    assert pairs[("evidence_vs_authority", "acc_norm")]["n_questions"] == 4  # the task, limited like TruthfulQA
    assert read_record(killed / "cells" / cells[2])["sweep"]["arm"] == "objective=weighted"


def test_changed_spec_refuses_to_mix_with_finished_cells(spec_path, tmp_path, capsys):
    spec = load_sweep_spec(spec_path)
    cell = expand(spec)[0]
    from yourai.runs.record import recorded_stage

    for stage in ("train", "eval"):
        with recorded_stage(tmp_path / "out" / "cells" / cell.id, stage, "sweep-cell", config=cell.config):
            pass
    assert cli_main([str(spec_path), "--out", str(tmp_path / "out"), "--no-notebook", "train.steps=4"]) == 2
    assert "was run with a different config" in capsys.readouterr().err


@pytest.mark.parametrize("text, message", [
    ("grid: {}\n", "grid: expected a mapping"),
    ("grid: {loss.objective: [plain]}\nbaseline: {loss.objective: weighted}\n", "baseline"),
    ("grid: {loss.objective: [plain]}\nstages: [eval]\n", "stages"),
    ("grid: {loss.objective: [plain]}\nrepeats: 3\n", "unknown key"),
    ("grid: {loss.objective: [plian]}\n", "'plian' is not one of"),
])
def test_bad_specs_are_named(tmp_path, text, message, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    assert cli_main([str(path), "--out", str(tmp_path / "o"), "--no-notebook"]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err


def test_spec_settings_shape_the_cells(tmp_path):
    (tmp_path / "base.yaml").write_text("train: {lora: {rank: 4}}\n", encoding="utf-8")
    (tmp_path / "s.yaml").write_text(
        "name: shaped\nconfig: base.yaml\noverrides: {train.steps: 7}\n"
        "grid: {loss.scheme: [monotone, roemmele], curate.seed: [0, 1]}\nseed_key: curate.seed\n"
        "baseline: {loss.scheme: roemmele}\nstages: [train]\ntasks: [evidence_vs_authority]\n", encoding="utf-8")
    spec = load_sweep_spec(tmp_path / "s.yaml")
    cells = expand(spec, {"train.batch_size": 4})
    assert [c.id for c in cells] == ["scheme-monotone__seed-0", "scheme-monotone__seed-1",
                                     "scheme-roemmele__seed-0", "scheme-roemmele__seed-1"]
    assert {c.config.train.lora.rank for c in cells} == {4} and {c.config.train.steps for c in cells} == {7}
    assert {c.config.train.batch_size for c in cells} == {4}  # command-line overrides reach every cell
    assert [c.arm for c in cells[::2]] == ["scheme=monotone", "scheme=roemmele"] and spec.baseline == "scheme=roemmele"
    assert [c.seed for c in cells] == [0, 1, 0, 1] and cells[1].config.curate.seed == 1
    from yourai.runs.sweep import _stage_names

    assert _stage_names(spec) == ["train", "eval:evidence_vs_authority"]  # no TruthfulQA eval, the task instead
