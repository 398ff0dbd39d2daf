"""Stop signals: a real `yourai train` finishes the step in hand, checkpoints it, says so in one line and
exits 128 + N; `--resume` then ends bit-identical; a second signal during the save aborts at once."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import yourai  # noqa: F401  (OpenBLAS before mlx)
import pytest

from yourai.config import load_config
from yourai.train import Trainer, TrainingCallback, TrainingStopped
from yourai.train import checkpoints as ckpt
from yourai.stopping import DUPLICATE_WINDOW_S

SMALL = ["train.batch_size=4", "train.max_seq_length=64", "train.warmup_steps=2", "train.val_batches=2",
         "train.eval_every=4", "train.save_every=4", "train.steps=12"]
ENV = {**os.environ, "PYTHONHASHSEED": "0"}
WORKER = Path(__file__).with_name("slow_save_worker.py").resolve()
DEADLINE_S = 240


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def events(out: Path, name: str) -> list[dict]:
    return [m for m in read_metrics(out / "metrics.jsonl") if m.get("event") == name]


def train_args(out: Path, data: Path, *extra: str) -> list[str]:
    return ["--out", str(out), "--data", str(data), "--no-progress", *SMALL, *extra]


def yourai_train(*args: str) -> list[str]:
    return [sys.executable, "-m", "yourai", "train", *args]


def wait_for(condition, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert process.poll() is None, f"the run ended (exit {process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def logged_step(out: Path, step: int) -> bool:
    path = out / "metrics.jsonl"
    return path.is_file() and f'"step": {step}, "epoch"' in path.read_text()


def assert_resume_ends_like(out: Path, data: Path, straight: Path) -> None:
    subprocess.run(yourai_train(*train_args(out, data, "--resume")), check=True, env=ENV, capture_output=True, timeout=300)
    assert (out / "adapters" / "adapters.safetensors").read_bytes() == \
        (straight / "adapters" / "adapters.safetensors").read_bytes()
    losses = [[m["loss"] for m in read_metrics(run / "metrics.jsonl") if "loss" in m] for run in (out, straight)]
    assert losses[0] == losses[1]


@pytest.fixture(scope="module")
def straight(curated_sample, tmp_path_factory) -> Path:
    """The same run, never interrupted."""
    out = tmp_path_factory.mktemp("straight")
    subprocess.run(yourai_train(*train_args(out, curated_sample)), check=True, env=ENV, capture_output=True, timeout=300)
    return out


# ------------------------------------------------------------ in process (a notebook's Trainer)


class SignalAt(TrainingCallback):
    """Sends this process a signal at the end of a chosen step, as a scheduler would mid-run."""

    def __init__(self, step: int, signum: int = signal.SIGTERM) -> None:
        self.step, self.signum = step, signum

    def on_step_end(self, step: int, metrics: dict) -> None:
        if step == self.step:
            signal.raise_signal(self.signum)


@pytest.mark.parametrize("step", [5, 8], ids=["between-saves", "at-a-save-step"])
def test_in_process_fit_raises_training_stopped_after_a_verified_checkpoint(curated_sample, tmp_path, step):
    config, before = load_config(None, SMALL), signal.getsignal(signal.SIGTERM)
    trainer = Trainer(config, tmp_path, data_dir=curated_sample, progress=False, callbacks=[SignalAt(step)])
    with pytest.raises(TrainingStopped) as stopped:
        trainer.fit()
    path = tmp_path / "checkpoints" / ckpt.checkpoint_name(step)
    assert (stopped.value.step, stopped.value.checkpoint, stopped.value.exit_code) == (step, path, 143)
    assert str(stopped.value) == f"stopped by SIGTERM at step {step}; checkpoint {path}"
    assert stopped.value._render_traceback_()[0] == f"TrainingStopped: {stopped.value}"  # what a notebook shows
    ckpt.verify(path)
    assert [e["step"] for e in events(tmp_path, "checkpoint")] == sorted({4, step})  # a save step is not written twice
    assert events(tmp_path, "stopped") == [{"event": "stopped", "signal": "SIGTERM", "step": step, "checkpoint": str(path)}]
    assert signal.getsignal(signal.SIGTERM) == before  # the handlers were the fit's only
    assert not (tmp_path / "adapters").exists()


def test_a_resumed_run_reports_the_whole_run(curated_sample, tmp_path):
    config = load_config(None, SMALL)
    whole = Trainer(config, tmp_path / "whole", data_dir=curated_sample, progress=False).fit()
    with pytest.raises(TrainingStopped):
        Trainer(config, tmp_path / "cut", data_dir=curated_sample, progress=False, callbacks=[SignalAt(6)]).fit()
    Trainer(config, tmp_path / "cut", data_dir=curated_sample, progress=False, resume=True).fit()
    done = Trainer(config, tmp_path / "cut", data_dir=curated_sample, progress=False, resume=True).fit()  # 0 steps left
    assert done.resumed_from == 12
    assert [(e["step"], e["val_loss"]) for e in done.evals] == [(e["step"], e["val_loss"]) for e in whole.evals]
    assert done.last["loss"] == whole.last["loss"] and done.last["step"] == 12


# ------------------------------------------------------------ a real `yourai train` process


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: signal.Signals(s).name)
def test_a_stop_signal_checkpoints_the_step_in_hand_and_resume_ends_bit_identical(curated_sample, straight, tmp_path,
                                                                                   signum):
    out, args = tmp_path / "run", train_args(tmp_path / "run", curated_sample)
    process = subprocess.Popen(yourai_train(*args), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: logged_step(out, 5), process, "step 5")
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=DEADLINE_S)
    assert process.returncode == 128 + signum
    [stopped] = events(out, "stopped")
    step, checkpoint = stopped["step"], out / "checkpoints" / ckpt.checkpoint_name(stopped["step"])
    assert step % 4 and step < 12  # not a save step: this checkpoint exists because of the stop
    assert stopped == {"event": "stopped", "signal": signal.Signals(signum).name, "step": step, "checkpoint": str(checkpoint)}
    assert ckpt.load_checkpoint(checkpoint)["state"]["step"] == step  # verified against its manifest
    verb = "interrupted (SIGINT)" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
    resume = shlex.join(["yourai", "train", *args, "--resume"])
    assert stderr.strip() == f"yourai train: {verb} at step {step}; checkpoint {checkpoint}; resume with: {resume}"
    assert_resume_ends_like(out, curated_sample, straight)


@pytest.mark.slow
def test_a_second_signal_during_the_stop_save_aborts_at_once_leaving_the_previous_checkpoint(curated_sample, straight,
                                                                                             tmp_path):
    out, marker, args = tmp_path / "run", tmp_path / "saving", train_args(tmp_path / "run", curated_sample)
    process = subprocess.Popen([sys.executable, str(WORKER), str(marker), "stop", *args], env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: logged_step(out, 5), process, "step 5")
    process.send_signal(signal.SIGTERM)
    wait_for(marker.is_file, process, "the stop's checkpoint save")
    time.sleep(DUPLICATE_WINDOW_S)  # a real second request, not the first one delivered twice
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=DEADLINE_S)  # the save is paused far longer: leaving now is the abort
    assert process.returncode == 143
    previous = out / "checkpoints" / ckpt.checkpoint_name(4)
    assert not (out / "checkpoints" / marker.read_text()).exists()
    assert ckpt.latest_checkpoint(out / "checkpoints") == previous and ckpt.verify(previous)
    assert not events(out, "stopped")
    resume = shlex.join(["yourai", "train", *args, "--resume"])
    assert stderr.strip() == (f"yourai train: second SIGTERM: aborted at once; the last complete checkpoint is "
                              f"{previous}; resume with: {resume}")
    assert_resume_ends_like(out, curated_sample, straight)


@pytest.mark.slow
def test_training_goes_on_during_a_save_and_a_kill_mid_save_keeps_the_previous_checkpoint(curated_sample, straight,
                                                                                         tmp_path):
    out, marker = tmp_path / "run", tmp_path / "saving"
    process = subprocess.Popen([sys.executable, str(WORKER), str(marker), "8", *train_args(out, curated_sample)],
                               env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(marker.is_file, process, "the step-8 save")
    wait_for(lambda: logged_step(out, 10), process, "step 10 while step 8 is still being saved")
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    root = out / "checkpoints"
    assert ckpt.latest_checkpoint(root) == root / ckpt.checkpoint_name(4) and ckpt.verify(root / ckpt.checkpoint_name(4))
    assert [p.name for p in root.iterdir() if p.name.startswith(ckpt.TMP_PREFIX)]  # the save that was cut short
    assert_resume_ends_like(out, curated_sample, straight)
    assert events(out, "removed_partial_checkpoints")


@pytest.mark.slow
@pytest.mark.distributed
def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step(curated_sample, tmp_path):
    psutil = pytest.importorskip("psutil")
    out = tmp_path / "ring"
    worker = Path(__file__).with_name("dist_train_worker.py").resolve()
    launcher = Path(sys.executable).with_name("mlx.launch")
    process = subprocess.Popen([str(launcher), "-n", "2", "--backend", "ring", "--python", sys.executable, str(worker),
                                *train_args(out, curated_sample, "train.steps=40")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: logged_step(out, 3), process, "step 3")
    [rank1] = [p for p in psutil.Process(process.pid).children(recursive=True)
               if p.environ().get("MLX_RANK") == "1" and "python" in p.name().lower()]
    rank1.send_signal(signal.SIGTERM)  # rank 0 never sees a signal, yet must save and stop with it
    stdout, stderr = process.communicate(timeout=DEADLINE_S)
    [stopped] = events(out, "stopped")
    step = stopped["step"]
    assert stopped["signal"] == "SIGTERM" and 3 <= step < 40
    assert ckpt.load_checkpoint(out / "checkpoints" / ckpt.checkpoint_name(step))["state"]["step"] == step
    lines = [line for line in (stdout + stderr).splitlines() if "stopped by SIGTERM" in line]
    assert len(lines) == 2 and all(f"at step {step};" in line for line in lines), stdout[-2000:] + stderr[-2000:]


def test_ctrl_c_while_the_data_is_prepared_says_so_without_a_traceback(tmp_path, monkeypatch, capsys):
    from yourai.cli import train as train_cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_cli, "resolve_data", interrupted)
    assert train_cli.cli_main(["--out", str(tmp_path), "--no-progress"]) == 130
    assert capsys.readouterr().err == "yourai train: interrupted before training started; no checkpoint was written\n"
