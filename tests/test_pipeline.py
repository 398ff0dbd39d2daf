"""`yourai run`: stage selection, parameter flow, failure naming and skipped stages."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import nbformat
import pytest

from yourai.config import load_config
from yourai.cli.run import cli_main
from yourai.notebook.summaries import write_summary
from yourai.pipeline import discover_stages, headline, run_pipeline, select_stages, stage_parameters


def _notebook(path: Path, parameters: str, body: str) -> None:
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    notebook = nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell(body)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)


WRITE_SUMMARY = """
import json, pathlib
out = pathlib.Path(run_dir) / STAGE
out.mkdir(parents=True, exist_ok=True)
(out / "summary.json").write_text(json.dumps({"seed": seed, "alpha": alpha}))
"""


@pytest.fixture
def notebooks(tmp_path) -> Path:
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder / "01_first.ipynb", "run_dir = 'x'\nseed = 1\nalpha = 0.0",
              "STAGE = '01'" + WRITE_SUMMARY)
    _notebook(folder / "03_third.ipynb", "run_dir = 'x'\nseed = 1\nalpha = 0.0",
              "STAGE = '03'" + WRITE_SUMMARY)
    return folder


def test_select_stages_only_and_from():
    available = ["01", "02", "03", "04", "05", "06"]
    assert select_stages(available, only="1,04") == ["01", "04"]
    assert select_stages(available, start="03") == ["03", "04", "05", "06"]
    assert select_stages(available, only="02,05", start="03") == ["05"]
    with pytest.raises(ValueError, match=r"--only: unknown stage\(s\) \['09'\]"):
        select_stages(available, only="09")
    with pytest.raises(ValueError, match="--from: unknown stage '07'"):
        select_stages(available, start="7")


def test_project_has_the_six_stages():
    from yourai.paths import PROJECT_ROOT

    assert list(discover_stages(PROJECT_ROOT / "notebooks")) == ["01", "02", "03", "04", "05", "06"]


def test_config_values_reach_the_parameters_cell(notebooks, tmp_path):
    config = load_config(overrides=["curate.seed=7", "loss.alpha=2.5"])
    results, summary_md = run_pipeline(config, "t", notebooks_dir=notebooks, runs_dir=tmp_path / "runs",
                                       report=lambda line: None)
    assert [r.status for r in results] == ["ok", "ok"]
    # Each stage gets the config values it declares: 01 the curation seed, 03 the loss alpha.
    assert results[0].summary == {"seed": 7, "alpha": 0.0}
    assert results[1].summary == {"seed": 0, "alpha": 2.5}
    summary = json.loads((tmp_path / "runs" / "t" / "summary.json").read_text())
    assert list(summary["stages"]) == ["01", "03"]
    assert "| 01" in summary_md.read_text() and "seed=7" in summary_md.read_text()


def test_failing_stage_is_named_and_later_stages_skipped(notebooks, tmp_path, capsys):
    _notebook(notebooks / "02_broken.ipynb", "run_dir = 'x'", "raise RuntimeError('broken on purpose')")
    code = cli_main(["--name", "f", "--runs-dir", str(tmp_path / "runs"), "--notebooks-dir", str(notebooks)])
    assert code == 1
    assert "stage 02" in capsys.readouterr().err
    results, _ = run_pipeline(load_config(), "f", notebooks_dir=notebooks, runs_dir=tmp_path / "runs",
                              report=print)
    assert [r.status for r in results] == ["ok", "failed", "skipped"]
    assert "RuntimeError: broken on purpose" in results[1].error
    assert results[2].error == "stage 02 failed"
    executed = nbformat.read(results[1].notebook, as_version=4)
    assert any(o.get("ename") == "RuntimeError" for c in executed.cells for o in c.get("outputs", []))
    out = capsys.readouterr().out
    assert "02" in out and "failed" in out and "skipped (stage 02 failed)" in out


def test_stage_parameters_point_06_at_the_adapter_of_04(tmp_path):
    parameters = stage_parameters("06", load_config(), tmp_path, None, {})
    assert parameters["adapter"] == str(tmp_path / "04" / "adapters")
    assert parameters["run_dir"] == str(tmp_path)


def test_summary_headline_is_the_block_the_stage_wrote(tmp_path):
    written = write_summary(tmp_path, {"leak": {"slope_mb_per_step": 0.003}, "parameters": {"steps": 30}},
                            {"leak slope MB/step": [0.003, 0.001, 0.005], "leaking": False})
    assert headline(json.loads((tmp_path / "summary.json").read_text())) == \
        [("leak slope MB/step", [0.003, 0.001, 0.005]), ("leaking", False)]
    assert list(written)[0] == "headline"  # first in the file, for people reading it


def test_summary_without_a_headline_falls_back_to_its_first_numbers():
    assert headline({"a": 1, "b": {"c": 2.5}, "d": "text"}) == [("a", 1), ("b.c", 2.5)]


TRAIN_NOTEBOOK = """
import json, pathlib
import yourai
from yourai.config import load_config
from yourai.train import Trainer
out = pathlib.Path(run_dir) / "04"
config = load_config(None, {"train.steps": steps, "train.batch_size": 4, "train.max_seq_length": 64,
                            "train.save_every": 4, "train.eval_every": 4, "train.val_batches": 2, "train.warmup_steps": 2})
result = Trainer(config, out, data_dir=data_dir, resume=resume, progress=False).fit()
(out / "summary.json").write_text(json.dumps({"steps": result.steps, "resumed_from": result.resumed_from}))
"""


@pytest.mark.slow
def test_a_stop_signal_stops_the_training_stage_and_from_continues_it(tmp_path):
    """SIGTERM to `yourai run` reaches the kernel, training checkpoints and stops; `--from 04` resumes it."""
    import signal
    import subprocess
    import sys
    import time

    from yourai.data.curate import curate
    from yourai.train import checkpoints as ckpt

    notebooks, runs = tmp_path / "notebooks", tmp_path / "runs"
    notebooks.mkdir()
    _notebook(notebooks / "04_train.ipynb", "run_dir = 'x'\ndata_dir = None\nsteps = 1\nresume = False", TRAIN_NOTEBOOK)
    _notebook(notebooks / "06_after.ipynb", "run_dir = 'x'\nseed = 1\nalpha = 0.0", "STAGE = '06'" + WRITE_SUMMARY)
    curate(None, runs / "t" / "01", load_config().curate)  # what stage 01 leaves for stage 04
    args = ["run", "--name", "t", "--runs-dir", str(runs), "--notebooks-dir", str(notebooks), "train.steps=16"]
    process = subprocess.Popen([sys.executable, "-m", "yourai", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    metrics, deadline = runs / "t" / "04" / "metrics.jsonl", time.monotonic() + 240
    while not (metrics.is_file() and '"step": 5, "epoch"' in metrics.read_text()):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=240)
    assert process.returncode == 143, err[-3000:]
    stopped = [json.loads(line) for line in metrics.read_text().splitlines() if '"stopped"' in line]
    assert len(stopped) == 1 and stopped[0]["signal"] == "SIGTERM"
    step = stopped[0]["step"]
    ckpt.verify(runs / "t" / "04" / "checkpoints" / ckpt.checkpoint_name(step))
    summary = json.loads((runs / "t" / "summary.json").read_text())["stages"]
    assert (summary["04"]["status"], summary["04"]["signal"]) == ("stopped", "SIGTERM")
    assert f"stopped by SIGTERM at step {step}" in summary["04"]["error"]
    assert (summary["06"]["status"], summary["06"]["error"]) == ("skipped", "stopped by SIGTERM")
    assert "04 LoRA training: stopped in" in out and "06 TruthfulQA evaluation: skipped (stopped by SIGTERM)" in out
    assert err.strip().splitlines()[-1] == ("yourai run: stopped by SIGTERM during stage 04 (LoRA training); continue with: "
                                            + shlex.join(["yourai", *args, "--from", "04"]))
    assert "Traceback" not in err
    done = subprocess.run([sys.executable, "-m", "yourai", *args, "--from", "04"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((runs / "t" / "summary.json").read_text())["stages"]
    assert [summary[s]["status"] for s in ("04", "06")] == ["ok", "ok"]
    assert summary["04"]["summary"] == {"steps": 16, "resumed_from": step}
