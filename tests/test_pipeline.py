"""`yourai run`: stage selection, parameter flow, failure naming and skipped stages."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import nbformat
import pytest

from yourai.cli.run import cli_main
from yourai.config import load_config
from yourai.notebook.summaries import write_summary
from yourai.pipeline import discover_stages, headline, run_pipeline, select_stages, stage_parameters


def _notebook(path: Path, parameters: str, body: str) -> None:
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    notebook = nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell(body)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)


PARAMETERS = "run_dir = 'x'\nconfig_path = None\noverrides = {}"
WRITE_SUMMARY = """
import json, pathlib
from yourai.config import load_config
config = load_config(config_path, overrides)
out = pathlib.Path(run_dir) / STAGE
out.mkdir(parents=True, exist_ok=True)
(out / "summary.json").write_text(json.dumps({"seed": config.curate.seed, "alpha": config.loss.alpha}))
"""


@pytest.fixture
def notebooks(tmp_path) -> Path:
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder / "01_first.ipynb", PARAMETERS, "STAGE = '01'" + WRITE_SUMMARY)
    _notebook(folder / "03_third.ipynb", PARAMETERS, "STAGE = '03'" + WRITE_SUMMARY)
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


def test_config_file_and_overrides_reach_every_stage(notebooks, tmp_path, monkeypatch):
    (tmp_path / "my.yaml").write_text("curate:\n  seed: 7\nloss:\n  alpha: 2.9\n")
    monkeypatch.chdir(tmp_path)  # a relative -c path, as a user types it; notebooks run elsewhere
    code = cli_main(["-c", "my.yaml", "--name", "t", "--runs-dir", str(tmp_path / "runs"),
                     "--notebooks-dir", str(notebooks), "loss.alpha=2.5"])
    assert code == 0
    summary = json.loads((tmp_path / "runs" / "t" / "summary.json").read_text())
    assert list(summary["stages"]) == ["01", "03"]
    for stage in ("01", "03"):  # the file's seed and the command line's alpha, in every stage
        assert summary["stages"][stage]["summary"] == {"seed": 7, "alpha": 2.5}
    assert "seed=7" in (tmp_path / "runs" / "t" / "summary.md").read_text()


def test_only_one_stage_keeps_the_earlier_stages_in_the_run_report(notebooks, tmp_path):
    """`yourai run --only 03` after a full run: the report still lists 01, as earlier, with its numbers."""
    runs = tmp_path / "runs"
    assert cli_main(["--name", "t", "--runs-dir", str(runs), "--notebooks-dir", str(notebooks), "curate.seed=3"]) == 0
    assert cli_main(["--name", "t", "--runs-dir", str(runs), "--notebooks-dir", str(notebooks), "--only", "03",
                     "curate.seed=4"]) == 0
    stages = json.loads((runs / "t" / "summary.json").read_text())["stages"]
    assert list(stages) == ["01", "03"] and stages["01"]["earlier"] and "earlier" not in stages["03"]
    assert stages["01"]["summary"]["seed"] == 3 and stages["03"]["summary"]["seed"] == 4
    rows = [line for line in (runs / "t" / "summary.md").read_text().splitlines() if line.startswith("| 0")]
    assert rows[0].startswith("| 01") and "ok (earlier invocation)" in rows[0] and "seed=3" in rows[0]
    assert rows[1].startswith("| 03") and "earlier" not in rows[1] and "seed=4" in rows[1]
    assert "an earlier invocation" in (runs / "t" / "report.html").read_text()


def test_a_stage_that_cannot_take_the_config_fails_naming_the_missing_parameters(notebooks, tmp_path):
    _notebook(notebooks / "02_old.ipynb", "run_dir = 'x'\nseed = 1", "print(seed)")
    results, _ = run_pipeline("old", notebooks_dir=notebooks, runs_dir=tmp_path / "runs", report=lambda line: None)
    assert [r.status for r in results] == ["ok", "failed", "skipped"]
    assert "does not declare ['config_path', 'overrides']" in results[1].error


def test_bad_config_fails_before_any_stage_runs(notebooks, tmp_path, capsys):
    code = cli_main(["--name", "bad", "--runs-dir", str(tmp_path / "runs"), "--notebooks-dir", str(notebooks),
                     "train.learning_rate=.nan"])
    assert code == 2
    assert "train.learning_rate: must be a finite number, got nan" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "bad").exists()


def test_failing_stage_is_named_and_later_stages_skipped(notebooks, tmp_path, capsys):
    _notebook(notebooks / "02_broken.ipynb", PARAMETERS, "raise RuntimeError('broken on purpose')")
    code = cli_main(["--name", "f", "--runs-dir", str(tmp_path / "runs"), "--notebooks-dir", str(notebooks)])
    assert code == 1
    assert "stage 02" in capsys.readouterr().err
    results, _ = run_pipeline("f", notebooks_dir=notebooks, runs_dir=tmp_path / "runs", report=print)
    assert [r.status for r in results] == ["ok", "failed", "skipped"]
    assert "RuntimeError: broken on purpose" in results[1].error
    assert results[2].error == "stage 02 failed"
    executed = nbformat.read(results[1].notebook, as_version=4)
    assert any(o.get("ename") == "RuntimeError" for c in executed.cells for o in c.get("outputs", []))
    out = capsys.readouterr().out
    assert "02" in out and "failed" in out and "skipped (stage 02 failed)" in out


def test_stage_parameters_are_the_config_and_where_things_are(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parameters = stage_parameters("06", tmp_path, Path("my.yaml"), {"train.steps": 3})
    assert parameters == {"run_dir": str(tmp_path), "config_path": str(tmp_path / "my.yaml"),
                          "overrides": {"train.steps": 3}, "interactive": False,
                          "adapter": str(tmp_path / "04" / "adapters")}
    assert "adapter" not in stage_parameters("04", tmp_path, None, {})


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
out, data_dir = pathlib.Path(run_dir) / "04", pathlib.Path(run_dir) / "01"
config = load_config(config_path, {**overrides, "train.batch_size": 4, "train.max_seq_length": 64, "train.save_every": 4,
                                   "train.eval_every": 4, "train.val_batches": 2, "train.warmup_steps": 2})
result = Trainer(config, out, data_dir=data_dir, resume=resume, overwrite=not resume, progress=False).fit()
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
    _notebook(notebooks / "04_train.ipynb", PARAMETERS + "\nresume = False", TRAIN_NOTEBOOK)
    _notebook(notebooks / "06_after.ipynb", PARAMETERS, "STAGE = '06'" + WRITE_SUMMARY)
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


def test_smollm2_config_reaches_every_stage(shared_dir):
    """configs/smollm2.yaml: every stage gets the file; it names the packaged model, the shared corpora (with
    their source types) that curation adds, and the full TruthfulQA for 06."""
    from yourai.data.sources import shared_corpus_sources
    from yourai.paths import configs_dir

    path = configs_dir() / "smollm2.yaml"
    config = load_config(path)
    assert {stage_parameters(s, Path("runs/real"), path, {})["config_path"] for s in ("01", "03", "04", "05", "06")} \
        == {str(path.resolve())}
    assert config.model.path == "smollm2-135m-instruct" and config.model.dequantize == "auto"
    assert config.eval.limit is None
    sources = shared_corpus_sources(names=config.curate.shared_corpora)
    assert sorted({Path(s["path"]).parent.name for s in sources}) == sorted(config.curate.shared_corpora)
    assert {s["defaults"]["source_type"] for s in sources} == {"letter", "historical_book", "medical_guidelines"}
