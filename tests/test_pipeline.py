"""`yourai run`: stage selection, parameter flow, failure naming and skipped stages."""

from __future__ import annotations

import json
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


def test_smollm2_config_reaches_every_stage(shared_dir):
    """configs/smollm2.yaml: the packaged model everywhere, the shared corpora (with their source types) for 01,
    the full TruthfulQA for 06, and a sample text for 03 although the config lists no plain sources."""
    from yourai.paths import configs_dir, sample_corpus_path

    config = load_config(configs_dir() / "smollm2.yaml")
    params = {stage: stage_parameters(stage, config, Path("runs/real"), configs_dir() / "smollm2.yaml", {})
              for stage in ("01", "03", "04", "05", "06")}
    assert {params[s]["model"] for s in ("03", "04", "05", "06")} == {"smollm2-135m-instruct"}
    assert config.model.dequantize == "auto" and params["06"]["limit"] is None
    sources = params["01"]["sources"]
    assert [Path(s["path"]).parent.name for s in sources] == list(config.curate.shared_corpora)
    assert {s["defaults"]["source_type"] for s in sources} == {"letter", "historical_book", "medical_guidelines"}
    assert params["03"]["sample_path"] == str(sample_corpus_path())
