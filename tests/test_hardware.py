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
    again = json.loads(json.dumps(doctor_report()))
    assert report == again | {"machine": report["machine"], "blas": report["blas"]}  # both are measured
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
