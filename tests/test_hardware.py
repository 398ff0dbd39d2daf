"""Machine detection, profile matching and `yourai doctor` on this machine."""

from __future__ import annotations

import json
from dataclasses import replace

from yourai.cli import main
from yourai.hardware import detect_machine, doctor_report, load_profiles, match_profile

EXPECTED_PROFILES = {"base_16gb", "pro_32gb", "max_64gb", "ultra_96gb", "ultra_192gb", "cpu_small"}


def test_all_profiles_present():
    assert {profile.name for profile in load_profiles()} == EXPECTED_PROFILES


def test_detects_this_machine():
    machine = detect_machine()
    assert machine.backend in {"metal", "cuda", "cpu"}
    assert machine.total_memory_gb > 0 and 0 < machine.available_memory_gb <= machine.total_memory_gb
    assert machine.cpu_cores >= 1
    assert machine.mlx_version.startswith("0.")


def test_profile_matching_scales_with_memory():
    machine, profiles = detect_machine(), load_profiles()
    cases = {8.0: "cpu_small", 16.0: "base_16gb", 36.0: "pro_32gb", 64.0: "max_64gb", 128.0: "ultra_96gb", 192.0: "ultra_192gb"}
    for memory_gb, expected in cases.items():
        metal = replace(machine, backend="metal", total_memory_gb=memory_gb)
        assert match_profile(metal, profiles).name == expected, memory_gb
    assert match_profile(replace(machine, backend="cpu", total_memory_gb=192.0), profiles).name == "cpu_small"


def test_doctor_json_has_the_documented_fields(capsys):
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    packaged = report.pop("packaged_models")  # the command adds them (yourai.models sits above this module)
    kernels = report.pop("native_kernels")  # likewise: yourai.models.native, the fused CPU kernels
    assert set(kernels) == {"in_use", "status", "library", "threads"} and (kernels["status"] == "in use") == kernels["in_use"]
    again = json.loads(json.dumps(doctor_report()))
    assert report == again | {"machine": report["machine"], "blas": report["blas"]}  # both are measured
    assert [row["name"] for row in packaged] == ["smollm2-135m-instruct"] and "install_command" in packaged[0]
    for key in ("os", "arch", "python", "mlx_version", "backend", "total_memory_gb", "available_memory_gb", "cpu_cores"):
        assert key in report["machine"]
    assert report["profile"] in EXPECTED_PROFILES
    assert report["recommended_models"] and {"hub_id", "params_b", "lora_4bit_memory_gb"} <= set(report["recommended_models"][0])
    assert report["default_model_dir"].endswith("tiny-distrust")


def test_doctor_text_mentions_backend_and_profile(capsys):
    assert main(["doctor"]) == 0
    text = capsys.readouterr().out
    machine = detect_machine()
    assert f"backend: {machine.backend}" in text and "Profile" in text and "Recommended models" in text


def test_unknown_command_exits_2(capsys):
    assert main(["nonsense"]) == 2
    assert "unknown command" in capsys.readouterr().err


# ---------------------------------------------------------------- profiles applied to the config


def test_named_profile_sets_training_and_memory_defaults():
    from yourai.config import load_config

    profile = next(p for p in load_profiles() if p.name == "base_16gb")
    config = load_config(overrides=["run.hardware_profile=base_16gb"])
    assert config.run.hardware_profile == "base_16gb"
    assert (config.train.batch_size, config.train.grad_accumulation, config.train.max_seq_length,
            config.train.grad_checkpoint, config.train.lora.rank, config.train.lora.num_layers) == \
        (profile.batch_size, profile.grad_accumulation, profile.max_seq_length, profile.grad_checkpoint,
         profile.lora_rank, profile.lora_num_layers)
    assert config.memory.pause_fraction == profile.memory.pause_fraction == 0.78  # the guard's thresholds too


def test_explicit_config_values_beat_the_profile(tmp_path):
    from yourai.config import load_config

    path = tmp_path / "mine.yaml"
    path.write_text("run: {hardware_profile: base_16gb}\ntrain: {batch_size: 3}\nmemory: {pause_fraction: 0.8}\n")
    config = load_config(path, ["train.lora.rank=4"])
    assert (config.train.batch_size, config.train.lora.rank, config.memory.pause_fraction) == (3, 4, 0.8)
    assert config.train.grad_accumulation == 8  # what the file left open still comes from the profile


def test_auto_is_resolved_to_the_detected_profile_and_none_applies_nothing():
    from yourai.config import TrainConfig, load_config

    detected = match_profile(detect_machine(), load_profiles())
    assert load_config().run.hardware_profile == detected.name
    assert load_config().train.max_seq_length == detected.max_seq_length
    bare = load_config(overrides=["run.hardware_profile=none"])
    assert bare.run.hardware_profile == "none" and bare.train.max_seq_length == TrainConfig().max_seq_length


def test_unknown_profile_lists_the_names(tmp_path):
    import pytest

    from yourai.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"run\.hardware_profile: 'm9_1tb' is not one of \['auto', 'none', 'base_16gb'"):
        load_config(overrides=["run.hardware_profile=m9_1tb"])


def test_the_profile_reaches_training_through_the_cli(tmp_path, capsys):
    """`yourai train run.hardware_profile=...` trains with the profile's settings (metrics.jsonl says so)."""
    from yourai.cli import main
    from yourai.paths import sample_corpus_path

    out = tmp_path / "run"
    code = main(["train", "--out", str(out), "--steps", "1", "--no-progress", "run.hardware_profile=base_16gb",
                 "train.max_seq_length=32", "train.lora.num_layers=1", "train.eval_every=1", "train.val_batches=1",
                 f"curate.sources=[{sample_corpus_path()}]"])
    assert code == 0, capsys.readouterr().err
    begin = next(json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
                 if json.loads(line).get("event") == "train_begin")
    step = next(json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
                if json.loads(line).get("step") == 1 and "loss" in json.loads(line))
    assert begin["steps"] == 1 and step["micro_batches"] == 8  # base_16gb: batch 1 x accumulation 8
    assert json.loads((out / "adapters" / "adapter_config.json").read_text())["lora_parameters"]["rank"] == 16


def test_doctor_names_the_default_model_the_notebooks_will_use(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("YOURAI_DEFAULT_MODEL", raising=False)
    assert main(["doctor"]) == 0
    assert "(the shipped weights)" in capsys.readouterr().out
    monkeypatch.setenv("YOURAI_DEFAULT_MODEL", str(tmp_path / "mine"))
    assert main(["doctor"]) == 0
    assert f"{tmp_path / 'mine'} (YOURAI_DEFAULT_MODEL, not built yet" in capsys.readouterr().out
