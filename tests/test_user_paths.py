"""Every path a user takes does what it says: each case drives the `yourai` command as a user types it
(`yourai.cli.main`, the same dispatcher the console script runs) and checks the message and the files left.

Module-specific behaviour is tested beside its module; this file is the user's view across them.
"""

from __future__ import annotations

import re

import json
from pathlib import Path

import pytest

from yourai.cli import main

TEXTS = ["The specimen was weighed on the brass balance at noon and measured twice.",
         "Experts agree that the official agency guidance is widely accepted by everyone.",
         "A letter from the field station describing the barometer readings after the storm.",
         "The government handbook states the established fact as the committee approved it."]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _curate(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["curate", *args, "--no-progress", "curate.balance=false", "curate.contamination_check=false"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------- 3. curation takes what users have


@pytest.mark.parametrize("layout", ["text", "prompt_completion", "messages", "shared"])
def test_curate_accepts_the_common_record_layouts_and_fills_provenance(tmp_path, capsys, layout):
    rows = {
        "text": [{"text": t} for t in TEXTS],
        "prompt_completion": [{"prompt": "What was recorded?", "completion": t} for t in TEXTS],
        "messages": [{"messages": [{"role": "user", "content": "Report."}, {"role": "assistant", "content": t}]}
                     for t in TEXTS],
        "shared": [{"id": f"s{i}", "text": t, "source": "a field report", "year": 1880,
                    "url_or_origin": f"https://example.org/{i}", "license": "public domain"}
                   for i, t in enumerate(TEXTS)],
    }[layout]
    source = _jsonl(tmp_path / f"{layout}.jsonl", rows)
    code, out, err = _curate(capsys, str(source), "--out", str(tmp_path / "out"))
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["reconciliation"]["output_records"] == len(TEXTS) and report["reconciliation"]["ok"]
    curated = _lines(tmp_path / "out" / "curated.jsonl")
    filled = report["filled_fields"]
    assert filled["source_type"] == {"unknown": 4}
    if layout == "shared":
        assert filled["origin"] == {"from 'url_or_origin'": 4} and "license" not in filled and "id" not in filled
        assert [r["origin"] for r in curated] == [f"https://example.org/{i}" for i in range(4)]
    else:
        assert filled["id"] == filled["origin"] == {"file:line": 4} and filled["license"] == {"unknown": 4}
        assert {r["origin"] for r in curated} == {f"{source}:{line}" for line in range(1, 5)}
    assert "filled in: " in out and "source_type 4 (unknown 4)" in out


def test_curate_defaults_and_field_mapping_from_flags(tmp_path, capsys):
    source = _jsonl(tmp_path / "mine.jsonl", [{"body": t, "url": f"u{i}"} for i, t in enumerate(TEXTS)])
    code, out, err = _curate(capsys, str(source), "--out", str(tmp_path / "out"), "--field", "text=body",
                             "--field", "origin=url", "--default", "license=CC0-1.0", "--default", "source_type=letter")
    assert code == 0, err
    curated = _lines(tmp_path / "out" / "curated.jsonl")
    assert {(r["license"], r["source_type"]) for r in curated} == {("CC0-1.0", "letter")}
    assert sorted(r["origin"] for r in curated) == ["u0", "u1", "u2", "u3"]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["filled_fields"]["text"] == {"from 'body'": 4} and report["filled_fields"]["license"] == {"default": 4}


def test_curate_defaults_from_a_config_file(tmp_path, capsys):
    source = _jsonl(tmp_path / "mine.jsonl", [{"text": t} for t in TEXTS])
    config = tmp_path / "my.yaml"
    config.write_text(f"curate:\n  sources: [{source}]\n  defaults: {{license: CC-BY-4.0}}\n")
    code, _, err = _curate(capsys, "-c", str(config), "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert {r["license"] for r in _lines(tmp_path / "out" / "curated.jsonl")} == {"CC-BY-4.0"}


def test_curate_with_nothing_left_exits_1_and_names_the_top_reasons(tmp_path, capsys):
    source = _jsonl(tmp_path / "wrong.jsonl", [{"body": t, "title": "x"} for t in TEXTS] + [{"text": "too short"}])
    code, _, err = _curate(capsys, str(source), "--out", str(tmp_path / "out"))
    assert code == 1
    assert "nothing was curated: all 5 input record(s) were rejected" in err
    assert "missing_field (field 'text'): 4; too_short (field 'text'): 1" in err
    assert len(_lines(tmp_path / "out" / "rejects.jsonl")) == 5  # the file says why, line by line


def test_curate_csv_with_a_huge_cell_and_one_without_a_header(tmp_path, capsys):
    big = tmp_path / "big.csv"
    long_text = " ".join(f"reading{i}" for i in range(20_000))  # ~190 KB: over csv's 128 KiB default
    big.write_text(f"id,text\nlong,{long_text}\nshort,{TEXTS[0]}\n", encoding="utf-8")
    bare = tmp_path / "bare.csv"
    bare.write_text(f"1923,{TEXTS[1]}\n1924,{TEXTS[2]}\n", encoding="utf-8")
    code, _, err = _curate(capsys, str(big), str(bare), "--out", str(tmp_path / "out"))
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["chunking"]["records_chunked"] == 1  # the long cell was read and chunked, not fatal
    rejects = _lines(tmp_path / "out" / "rejects.jsonl")
    assert [(Path(r["source"]).name, r["line"], r["reason"]) for r in rejects] == \
        [("bare.csv", 1, "csv_no_header"), ("bare.csv", 2, "csv_no_header")]
    assert report["reconciliation"]["ok"] and report["funnel"]["read"] == 4


def test_curate_header_less_csv_with_named_columns(tmp_path, capsys):
    bare = tmp_path / "bare.csv"
    bare.write_text(f"1923,{TEXTS[1]}\n1924,{TEXTS[2]}\n", encoding="utf-8")
    code, _, err = _curate(capsys, str(bare), "--csv-columns", "year,text", "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert sorted(r["year"] for r in _lines(tmp_path / "out" / "curated.jsonl")) == [1923, 1924]


def test_curate_front_matter_of_any_type_and_non_finite_extras(tmp_path, capsys):
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "dated.md").write_text(f"---\npublished: 2020-01-31\ntags: [a, b]\n---\n{TEXTS[0]}", encoding="utf-8")
    source = _jsonl(tmp_path / "nan.jsonl", [{"text": TEXTS[1], "score": float("nan")}, {"text": TEXTS[2]}])
    code, _, err = _curate(capsys, str(texts), str(source), "--out", str(tmp_path / "out"))
    assert code == 0, err
    curated = {r["id"]: r for r in _lines(tmp_path / "out" / "curated.jsonl")}
    assert curated["dated"]["published"] == "2020-01-31" and curated["dated"]["tags"] == ["a", "b"]
    (reject,) = _lines(tmp_path / "out" / "rejects.jsonl")
    assert (reject["line"], reject["reason"], reject["field"]) == (1, "not_finite", "score")
    for name in ("curated.jsonl", "train.jsonl", "valid.jsonl", "test.jsonl"):  # strict JSON only
        assert "NaN" not in (tmp_path / "out" / name).read_text()


def test_curate_bad_sources_setting_is_one_line(tmp_path, capsys):
    code, _, err = _curate(capsys, "--out", str(tmp_path / "out"), "curate.sources=[1,2]")
    assert code == 2
    assert err.strip().endswith("curate.sources[0]: expected str or a mapping, got int 1")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- 4. run directories are safe

SMALL = ["--no-progress", "train.batch_size=4", "train.max_seq_length=32", "train.lora.num_layers=1",
         "train.val_batches=1", "train.eval_every=2", "train.save_every=1", "train.warmup_steps=0"]


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> Path:
    from yourai.config import load_config
    from yourai.data.curate import curate

    out = tmp_path_factory.mktemp("curated")
    curate(None, out, load_config().curate, truthfulqa_csv=None, workers=1)
    return out


def _train(capsys, out: Path, data: Path, *args: str) -> tuple[int, str]:
    code = main(["train", "--out", str(out), "--data", str(data), *SMALL, *args])
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def trained(curated, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", "--out", str(out), "--data", str(curated), "--steps", "2", *SMALL]) == 0
    return out


def test_a_second_train_into_the_same_out_is_refused_naming_the_first_pid(curated, tmp_path):
    import os
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    command = [sys.executable, "-m", "yourai", "train", "--out", str(out), "--data", str(curated), "--steps", "400",
               *SMALL, "train.save_every=1000", "train.eval_every=1000"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        lock = out / ".yourai-train.lock"
        deadline = time.monotonic() + 120
        while not (lock.is_file() and lock.read_text().strip()) and first.poll() is None:
            assert time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.1)
        second = subprocess.run(command[:-3] + ["--steps", "1"], capture_output=True, text=True, env=dict(os.environ))
        assert second.returncode == 1
        assert f"another training run (PID {first.pid}) is writing here" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.kill()
        first.wait()
    # The first run was killed: its lock file still names it, the next run takes the lock over and says so.
    assert (out / ".yourai-train.lock").read_text().strip() == str(first.pid)
    code = main(["train", "--out", str(out), "--data", str(curated), "--steps", "1", *SMALL, "--overwrite"])
    assert code == 0
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"event": "stale_lock_taken_over", "pid": first.pid} in events


def test_fresh_run_into_checkpoints_refuses_and_overwrite_keeps_foreign_files(trained, curated, tmp_path, capsys):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(trained, out)
    (out / "checkpoints" / "my_notes.txt").write_text("mine")
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    code, err = _train(capsys, out, curated, "--steps", "1")
    assert code == 1 and "holds 2 checkpoint(s) of an earlier run" in err and "--resume" in err and "--overwrite" in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before  # refused: nothing deleted
    code, err = _train(capsys, out, curated, "--steps", "1", "--overwrite")
    assert code == 0, err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["my_notes.txt", "step-00000001"]


def test_resume_with_nothing_to_resume_fails_before_doing_anything(tmp_path, capsys):
    code = main(["train", "--out", str(tmp_path / "empty"), "--resume", *SMALL])
    err = capsys.readouterr().err
    assert code == 1 and "nothing to resume (no checkpoint in it); run without --resume" in err
    assert not (tmp_path / "empty" / "data").exists()  # it did not curate default data first


# ---------------------------------------------------------------- 5/6. bad settings and bad files: one line each


@pytest.mark.parametrize("override, message", [
    ("train.learning_rate=.nan", "train.learning_rate: must be a finite number, got nan"),
    ("train.steps=[", "override 'train.steps=[': the value is not valid YAML"),
])
def test_bad_training_settings_are_refused_before_training(curated, tmp_path, capsys, override, message):
    code, err = _train(capsys, tmp_path / "run", curated, override)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_non_utf8_config_is_one_line(tmp_path, capsys):
    config = tmp_path / "latin1.yaml"
    config.write_bytes(b"model:\n  path: caf\xe9\n")
    assert main(["run", "-c", str(config)]) == 2
    err = capsys.readouterr().err
    assert "latin1.yaml: not valid UTF-8 (byte 18" in err and "Traceback" not in err


def test_run_with_a_missing_config_is_one_line(tmp_path, capsys):
    assert main(["run", "-c", str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err.strip() == f"yourai run: {tmp_path / 'nope.yaml'}: config file not found"


def test_a_model_path_that_does_not_exist(curated, tmp_path, capsys):
    code, err = _train(capsys, tmp_path / "run", curated, "--model", "/nonexistent/model")
    assert code == 1
    assert "/nonexistent/model: no such model directory, and not a hub id" in err and "Repo id" not in err


def test_a_corrupt_model_file(curated, tmp_path, capsys):
    import shutil

    from yourai.models import ensure_default_model

    model = tmp_path / "model"
    shutil.copytree(ensure_default_model(), model)
    with open(model / "model.safetensors", "r+b") as handle:
        handle.truncate(1000)
    code, err = _train(capsys, tmp_path / "run", curated, "--model", str(model))
    assert code == 1 and f"{model / 'model.safetensors'}: truncated or corrupt" in err
    code = main(["eval", "--model", str(model), "--limit", "2", "--out", str(tmp_path / "r.json"), "--no-progress"])
    assert code == 1 and f"{model / 'model.safetensors'}: truncated or corrupt" in capsys.readouterr().err


def test_non_utf8_training_data_names_file_and_line(curated, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(curated, data)
    lines = (data / "train.jsonl").read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b'"text": "', b'"text": "caf\xe9 ', 1)
    (data / "train.jsonl").write_bytes(b"\n".join(lines))
    code, err = _train(capsys, tmp_path / "run", data)
    assert code == 1 and f"{data / 'train.jsonl'}:3: not valid UTF-8" in err


def test_disk_full_names_the_file(curated, tmp_path):
    """A real write failure: the process may write 40 kB per file (RLIMIT_FSIZE), a checkpoint needs more."""
    import os
    import subprocess
    import sys

    script = ("import resource, signal, sys\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))\n"
              "from yourai.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", script, "train", "--out", str(out), "--data", str(curated),
                           "--steps", "2", *SMALL], capture_output=True, text=True, env=dict(os.environ))
    assert done.returncode == 1, done.stderr
    assert re.search(r"adapters\.safetensors: .*\(is the disk full\?\)", done.stderr), done.stderr
    assert "Traceback" not in done.stderr


def test_debug_shows_the_traceback(curated, tmp_path, capsys):
    with pytest.raises(Exception, match="no such model directory"):
        main(["--debug", "train", "--out", str(tmp_path / "run"), "--data", str(curated), "--model", "/nonexistent/m"])
    with pytest.raises(Exception, match="must be a finite number"):
        main(["train", "--debug", "--out", str(tmp_path / "run"), "train.learning_rate=.inf"])


# ---------------------------------------------------------------- 6/7. adapters: run dirs, truncation, the model they name


def test_adapter_config_names_a_model_mlx_lm_can_load(trained):
    import subprocess
    import sys

    from yourai.models import ensure_default_model

    config = json.loads((trained / "adapters" / "adapter_config.json").read_text())
    assert config["model"] == str(ensure_default_model().resolve())
    done = subprocess.run([sys.executable, "-m", "mlx_lm", "generate", "--model", config["model"], "--adapter-path",
                           str(trained / "adapters"), "--prompt", "The specimen", "--max-tokens", "4"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_eval_and_generate_accept_a_training_run_directory(trained, tmp_path, capsys):
    code = main(["eval", "--adapter", str(trained), "--limit", "2", "--no-progress", "--out", str(tmp_path / "r.json")])
    assert code == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["settings"]["adapter"] == str(trained / "adapters") and results["evaluated"] == "adapter"
    assert main(["generate", "--adapter", str(trained), "--max-tokens", "3", "--temp", "0"]) == 0


def test_eval_out_that_is_a_directory_is_refused_before_evaluating(trained, tmp_path, capsys, monkeypatch):
    import time

    started = time.perf_counter()
    code = main(["eval", "--adapter", str(trained), "--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and f"--out {tmp_path} is a directory; give a file path such as" in err
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "--adapter", str(trained), "--out", ".", "--no-progress"]) == 2
    assert "--out . is a directory; give a file path such as truthfulqa.json" in capsys.readouterr().err
    assert time.perf_counter() - started < 5  # no model was loaded or scored


def test_a_truncated_adapter_is_named_before_evaluating(trained, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    weights = run / "adapters" / "adapters.safetensors"
    with open(weights, "r+b") as handle:
        handle.truncate(weights.stat().st_size - 100)
    code = main(["eval", "--adapter", str(run), "--out", str(tmp_path / "r.json"), "--no-progress"])
    assert code == 1 and f"{weights}: truncated or corrupt" in capsys.readouterr().err  # as train and generate
    assert main(["generate", "--adapter", str(run)]) == 1
    assert f"yourai generate: {weights}: truncated or corrupt" in capsys.readouterr().err


# ---------------------------------------------------------------- 1. one config path, every stage


@pytest.fixture(scope="module")
def custom_run(tmp_path_factory) -> Path:
    """All six notebooks under `yourai run -c custom.yaml key=value`, each setting small or unusual on purpose."""
    from yourai.paths import sample_corpus_path

    root = tmp_path_factory.mktemp("custom")
    extra = _jsonl(root / "extra.jsonl", [{"text": t} for t in TEXTS[:2]])  # mlx-lm records: no source_type
    config = root / "custom.yaml"
    config.write_text(f"""curate:
  sources: [{sample_corpus_path()}, {extra}]
  max_words: 100
  chunk_overlap_words: 50
  near_dup_threshold: 0.5
loss: {{weight_cap: 10.0}}
train: {{steps: 3, eval_every: 3, save_every: 3, val_batches: 1}}
memory: {{clear_cache_fraction: 0.96, pause_fraction: 0.97, shrink_fraction: 0.98, abort_fraction: 0.99}}
eval: {{limit: 2}}
""")
    code = main(["run", "-c", str(config), "--name", "custom", "--runs-dir", str(root / "runs"), "train.max_seq_length=48"])
    assert code == 0, (root / "runs" / "custom" / "summary.md").read_text()
    return root / "runs" / "custom"


def _stage(run: Path, stage: str) -> dict:
    return json.loads((run / stage / "summary.json").read_text())


@pytest.mark.slow
def test_stage_01_curates_with_the_custom_chunking_and_sources(custom_run):
    report = json.loads((custom_run / "01" / "report.json").read_text())
    assert (report["config"]["max_words"], report["config"]["chunk_overlap_words"],
            report["config"]["near_dup_threshold"]) == (100, 50, 0.5)
    assert report["funnel"]["read"] == 282  # the sample corpus and the two records of extra.jsonl
    assert report["chunking"]["records_chunked"] > 6  # 400-word windows chunk 6 sample records; 100-word ones more


@pytest.mark.slow
def test_stage_02_scores_the_custom_sources(custom_run):
    assert "unknown" in _stage(custom_run, "02")["mean_by_group"]  # extra.jsonl's records have no source_type


@pytest.mark.slow
def test_stage_03_uses_the_custom_weight_cap(custom_run):
    summary = _stage(custom_run, "03")
    assert summary["parameters"]["cap"] == 10.0
    assert summary["weight_stats"]["monotone"]["max_over_min"] == pytest.approx(10.0, rel=1e-4)


@pytest.mark.slow
def test_stage_04_trains_with_the_custom_steps_and_length(custom_run):
    summary = _stage(custom_run, "04")
    assert summary["steps"] == 3
    events = [json.loads(line) for line in (custom_run / "04" / "metrics.jsonl").read_text().splitlines()]
    begin = next(e for e in events if e.get("event") == "train_begin")
    steps = [e for e in events if "loss" in e and "step" in e]
    assert begin["steps"] == 3 and len(steps) == 3
    assert all(e["tokens"] <= e["micro_batch"] * e["micro_batches"] * 47 for e in steps)  # 48-token windows: 47 targets


@pytest.mark.slow
def test_stage_05_guards_with_the_custom_thresholds(custom_run):
    from yourai.config import MemoryConfig
    from yourai.notebook.memory_profile import PressureScenario, simulate_guard

    summary = _stage(custom_run, "05")
    assert summary["guard_thresholds"] == {"clear_cache_fraction": 0.96, "pause_fraction": 0.97,
                                           "shrink_fraction": 0.98, "abort_fraction": 0.99}
    default_actions = simulate_guard(PressureScenario(), MemoryConfig()).table["action"].tolist()
    assert [row["action"] for row in summary["guard_actions"]] != default_actions


@pytest.mark.slow
def test_stage_06_evaluates_the_custom_number_of_questions(custom_run):
    assert _stage(custom_run, "06")["headline"]["questions"] == 2


def test_yourai_run_prints_only_its_own_lines(tmp_path):
    """ipykernel warns once per kernel about unencrypted TCP; over IPC sockets there is nothing to warn about."""
    import os
    import subprocess
    import sys

    import nbformat

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for stage in ("01", "02"):
        parameters = nbformat.v4.new_code_cell("config_path = None\noverrides = {}\nrun_dir = 'x'")
        parameters.metadata["tags"] = ["parameters"]
        notebook = nbformat.v4.new_notebook(cells=[parameters, nbformat.v4.new_code_cell("print('hello')")])
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(notebook, notebooks / f"{stage}_stage.ipynb")
    done = subprocess.run([sys.executable, "-m", "yourai", "run", "--name", "quiet", "--runs-dir", str(tmp_path / "runs"),
                           "--notebooks-dir", str(notebooks)], capture_output=True, text=True, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "without encryption" not in output and "WARNING" not in output
    assert [line.split(":")[0] for line in done.stdout.splitlines()] == \
        ["[1/2] 01 data curation", "[1/2] 01 data curation", "[2/2] 02 citation scoring",
         "[2/2] 02 citation scoring", "summary"]
