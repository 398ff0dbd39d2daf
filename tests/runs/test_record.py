"""run.json: written by train and eval, merged across stages, statuses that tell a crash from a failure."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from yourai.cli.eval import cli_main as eval_main
from yourai.cli.train import cli_main as train_main
from yourai.config import load_config, to_dict
from yourai.eval.tqa_data import SAMPLE_PATH
from yourai.runs.record import (RUN_RECORD, config_hash, effective_status, git_state, read_record, recorded_stage,
                                write_record)
from yourai.stopping import StopAborted
from yourai.train.signals import TrainingStopped

QUICK = ["train.max_seq_length=64", "train.eval_every=2", "train.save_every=2"]


@pytest.mark.slow
def test_train_then_eval_leave_one_record_with_both_stages(tmp_path, capsys):
    out = tmp_path / "run"
    assert train_main(["--out", str(out), "--steps", "2", "--seed", "3", "--no-progress", *QUICK]) == 0
    record = read_record(out)
    assert record["kind"] == "train" and record["status"] == "ok"
    assert record["config"]["train"]["seed"] == 3 and record["config_hash"] == config_hash(record["config"])
    assert record["model"]["id"] == "default" and len(record["model"]["weights_sha256"]) == 64
    assert set(record["data"]) == {"train", "valid"} and len(record["data"]["train"]["sha256"]) == 64
    assert record["stages"]["train"]["metrics"]["steps"] == 2 and "val_gap" in record["metrics"]
    assert record["packages"]["mlx"] != "not installed" and "backend" in record["machine"]
    assert set(record["git"]) == {"commit", "dirty"}
    assert eval_main(["--adapter", str(out / "adapters"), "--data", str(SAMPLE_PATH), "--limit", "3",
                      "--out", str(out / "truthfulqa.json"), "--no-progress"]) == 0
    merged = read_record(out)
    assert set(merged["stages"]) == {"train", "eval"} and merged["config_hash"] == record["config_hash"]
    assert merged["results"] == {"metrics": "metrics.jsonl", "truthfulqa": "truthfulqa.json"}
    assert {"mc1", "mc2", "ece", "brier", "delta_mc2", "val_gap"} <= set(merged["metrics"])
    assert merged["data"]["eval"]["sha256"] == record["data"].get("eval", merged["data"]["eval"])["sha256"]


@pytest.mark.slow
def test_only_the_recording_process_writes_the_record(tmp_path, monkeypatch):
    """Under mlx.launch every rank trains into one --out; ranks other than 0 train but write no run.json."""
    from yourai.runs import stages

    config = load_config(overrides=["train.steps=2", *QUICK])
    monkeypatch.setattr(stages, "records_this_process", lambda: False)
    stages.run_training(config, tmp_path / "rank1", progress=False)
    assert (tmp_path / "rank1" / "adapters" / "adapters.safetensors").is_file()
    assert not (tmp_path / "rank1" / RUN_RECORD).exists() and not (tmp_path / "rank1" / "tensorboard").exists()
    monkeypatch.setattr(stages, "records_this_process", lambda: True)
    stages.run_training(config, tmp_path / "rank0", progress=False)
    assert read_record(tmp_path / "rank0")["stages"]["train"]["status"] == "ok"


def test_two_processes_writing_one_record_never_collide(tmp_path):
    """Each writer stages its own file before the atomic rename (CI once lost a rank to a shared run.json.tmp)."""
    import subprocess
    import sys

    writer = ("import sys; from yourai.runs.record import write_record\n"
              "for i in range(300): write_record(sys.argv[1], {'schema': 'yourai.run/1', 'stages': {}, 'i': i})")
    writers = [subprocess.Popen([sys.executable, "-c", writer, str(tmp_path)], stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    errors = [w.communicate(timeout=120)[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], errors
    assert read_record(tmp_path)["i"] == 299 and sorted(p.name for p in tmp_path.iterdir()) == [RUN_RECORD]


def test_a_failing_stage_is_recorded_and_re_raised(tmp_path):
    config = load_config()
    with pytest.raises(RuntimeError, match="boom"):
        with recorded_stage(tmp_path, "train", "train", config=config) as stage:
            stage["metrics"]["loss"] = 1.0
            raise RuntimeError("boom")
    record = read_record(tmp_path)
    assert record["status"] == "failed" and record["stages"]["train"]["error"] == "RuntimeError: boom"
    with pytest.raises(KeyboardInterrupt):
        with recorded_stage(tmp_path, "eval", "eval", config=config):
            raise KeyboardInterrupt
    assert read_record(tmp_path)["stages"]["eval"]["status"] == "interrupted"


@pytest.mark.parametrize("error, status", [
    (TrainingStopped(signal.SIGTERM, 6, Path("ckpt")), "stopped"),  # resumable: `yourai runs` must not call it failed
    (StopAborted(signal.SIGINT), "interrupted"),
])
def test_a_stop_signal_is_recorded_as_what_it_was(tmp_path, error, status):
    with pytest.raises(type(error)):
        with recorded_stage(tmp_path, "train", "train", config=load_config()):
            raise error
    assert read_record(tmp_path)["stages"]["train"]["status"] == status


def test_a_run_whose_process_died_reads_as_interrupted(tmp_path):
    record = {"schema": "yourai.run/1", "status": "running", "stages": {"train": {"status": "running"}},
              "host": os.uname().nodename, "pid": 2**22 + 12345}
    write_record(tmp_path, record)
    assert effective_status(read_record(tmp_path)) == "interrupted"
    write_record(tmp_path, {**record, "pid": os.getpid()})
    assert effective_status(read_record(tmp_path)) == "running"


def test_config_hash_changes_with_any_setting():
    base = to_dict(load_config())
    assert config_hash(base) == config_hash(to_dict(load_config()))
    assert config_hash(base) != config_hash(to_dict(load_config(overrides=["train.lora.rank=4"])))


def test_damaged_record_names_its_file(tmp_path):
    (tmp_path / RUN_RECORD).write_text("{not json")
    with pytest.raises(ValueError, match=r"run.json:1: not valid JSON"):
        read_record(tmp_path)
    (tmp_path / RUN_RECORD).write_text(json.dumps({"schema": "other"}))
    with pytest.raises(ValueError, match="not a yourai run record"):
        read_record(tmp_path)


def test_git_state_is_the_checkout_commit():
    state = git_state()
    assert state["commit"] is None or len(state["commit"]) == 40
