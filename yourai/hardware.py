"""Detect the machine (OS, arch, MLX backend, memory, cores) and pick a hardware profile.

Profiles live in configs/hardware/ and are matched by backend and total memory, so no
threshold is tuned to one machine: a 16 GB Mac and a 192 GB Ultra get their own settings.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import psutil

from yourai.config import ConfigError, HardwareProfile, RunConfig, load_hardware_profile, to_dict
from yourai.paths import configs_dir, default_model_dir, shipped_model_dir

GIB = 1024**3
AUTO, NO_PROFILE = "auto", "none"
# A profile's training settings → the config keys they are defaults for.
PROFILE_TRAIN_KEYS = {"batch_size": "batch_size", "grad_accumulation": "grad_accumulation",
                      "max_seq_length": "max_seq_length", "grad_checkpoint": "grad_checkpoint"}
PROFILE_LORA_KEYS = {"lora_rank": "rank", "lora_num_layers": "num_layers"}
BLAS_PROBE_SIZE = 1024  # the fp32 square matmul `yourai doctor` times: ~3 GFLOP/s reference BLAS, ~100 OpenBLAS
BLAS_PROBE_BUDGET_S = 1.0  # stop timing after this long (the reference BLAS needs ~0.7 s a product)
SLOW_BLAS_GFLOPS = 20.0  # below this an OpenBLAS is loaded but starved (busy cores, too many threads)


@dataclass(frozen=True)
class MachineInfo:
    os: str
    arch: str
    python: str
    mlx_version: str
    mlx_lm_version: str
    backend: str  # metal | cuda | cpu
    total_memory_gb: float
    available_memory_gb: float
    cpu_cores: int
    blas: str  # the BLAS mlx[cpu] uses on Linux; 'bundled' when none was preloaded


def mlx_backend() -> str:
    """Which MLX backend will run the arrays: metal, cuda or cpu."""
    import mlx.core as mx

    if mx.metal.is_available():
        return "metal"
    cuda = getattr(mx, "cuda", None)
    if cuda is not None and cuda.is_available():
        return "cuda"
    return "cpu"


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def blas_provider() -> str | None:
    """The file mlx's `cblas_sgemm` binds to (the global scope first); None when mlx[cpu] uses its bundled one."""
    process = ctypes.CDLL(None)
    try:
        address = ctypes.cast(process.cblas_sgemm, ctypes.c_void_p)
    except AttributeError:
        return None
    info = _DlInfo()
    if not process.dladdr(address, ctypes.byref(info)) or not info.dli_fname:
        return None
    return os.path.realpath(info.dli_fname.decode())


def _blas_in_use() -> str:
    if not sys.platform.startswith("linux"):
        return "platform default"
    return blas_provider() or "bundled reference BLAS (slow)"


def matmul_gflops(size: int = BLAS_PROBE_SIZE) -> float:
    """Median fp32 GFLOP/s of a size² matmul through MLX on the CPU, timed for about BLAS_PROBE_BUDGET_S."""
    import mlx.core as mx

    a, b = mx.random.normal((size, size), stream=mx.cpu), mx.random.normal((size, size), stream=mx.cpu)
    mx.eval(mx.matmul(a, b, stream=mx.cpu))
    times: list[float] = []
    while len(times) < 2 or (sum(times) < BLAS_PROBE_BUDGET_S and len(times) < 10):
        started = time.perf_counter()
        mx.eval(mx.matmul(a, b, stream=mx.cpu))
        times.append(time.perf_counter() - started)
    return 2 * size**3 / statistics.median(times) / 1e9


def blas_advice(provider: str | None, gflops: float) -> str:
    """What to do about the BLAS, in one line (empty when nothing needs doing)."""
    from yourai import _blas

    if not sys.platform.startswith("linux"):
        return ""
    if provider is None and os.environ.get("YOURAI_OPENBLAS") == "0":
        return "OpenBLAS turned off by YOURAI_OPENBLAS=0 (unset it for ~20x faster matmuls)"
    if provider is None:
        return ("slow reference BLAS bundled with mlx[cpu]: `sudo apt install libopenblas0-pthread`, or without root "
                f"`pip install {_blas.PIP_PACKAGE}` (x86_64), then restart Python")
    if gflops < SLOW_BLAS_GFLOPS:
        return "OpenBLAS is loaded but slow here: other jobs on the cores? try OPENBLAS_NUM_THREADS=1"
    return ""


def blas_report() -> dict:
    """Which BLAS mlx uses, where it came from, its measured fp32 GFLOP/s and what to do (for `yourai doctor`)."""
    from yourai import _blas

    provider = blas_provider() if sys.platform.startswith("linux") else None
    ours = _blas.loaded if _blas.loaded and provider == os.path.realpath(_blas.loaded.path) else None
    gflops = round(matmul_gflops(), 1)
    return {"library": provider or _blas_in_use(), "source": ours.source if ours else ("other" if provider else "bundled"),
            "note": ours.note if ours else "", f"gflops_fp32_{BLAS_PROBE_SIZE}": gflops,
            "advice": blas_advice(provider, gflops)}


def detect_machine() -> MachineInfo:
    """Read the facts a user needs to choose a model and settings."""
    memory = psutil.virtual_memory()
    return MachineInfo(
        os=f"{platform.system()} {platform.release()}",
        arch=platform.machine(),
        python=sys.version.split()[0],
        mlx_version=_package_version("mlx"),
        mlx_lm_version=_package_version("mlx-lm"),
        backend=mlx_backend(),
        total_memory_gb=round(memory.total / GIB, 2),
        available_memory_gb=round(memory.available / GIB, 2),
        cpu_cores=os.cpu_count() or 1,
        blas=_blas_in_use(),
    )


def load_profiles(directory: Path | None = None) -> list[HardwareProfile]:
    """Every profile in configs/hardware/, sorted by the memory they start at."""
    directory = directory or configs_dir() / "hardware"
    profiles = [load_hardware_profile(path) for path in sorted(directory.glob("*.yaml"))]
    return sorted(profiles, key=lambda profile: profile.min_memory_gb)


def match_profile(machine: MachineInfo, profiles: list[HardwareProfile]) -> HardwareProfile:
    """The profile for this backend whose memory range holds the machine's total memory.

    A GPU-less machine always gets `cpu_small`: memory size does not make CPU training fast.
    """
    if machine.backend == "cpu":
        return _by_name(profiles, "cpu_small")
    candidates = [
        profile
        for profile in profiles
        if machine.backend in profile.backends
        and profile.name != "cpu_small"
        and profile.min_memory_gb <= machine.total_memory_gb < profile.max_memory_gb
    ]
    return candidates[0] if candidates else _by_name(profiles, "cpu_small")


def _by_name(profiles: list[HardwareProfile], name: str) -> HardwareProfile:
    for profile in profiles:
        if profile.name == name:
            return profile
    raise ValueError(f"configs/hardware/{name}.yaml is missing (found {[p.name for p in profiles]})")


def resolve_profile(name: str = AUTO) -> HardwareProfile:
    """`auto` → detect and match; otherwise the named profile (ValueError listing the names when unknown)."""
    profiles = load_profiles()
    if name == AUTO:
        return match_profile(_detected_machine(), profiles)
    if name not in {profile.name for profile in profiles}:
        raise ValueError(f"{name!r} is not one of {[AUTO, NO_PROFILE, *sorted(p.name for p in profiles)]}")
    return _by_name(profiles, name)


@functools.lru_cache(maxsize=1)
def _detected_machine() -> MachineInfo:
    """The machine, detected once per process: every load_config asks for its profile."""
    return detect_machine()


def profile_settings(name: str) -> tuple[str, dict[str, Any]]:
    """(profile applied, the config tree of defaults it sets) for `run.hardware_profile`; "none" sets nothing.

    The tree sits under the user's config file (yourai.config.load_config), so an explicit value wins.
    """
    if not isinstance(name, str):
        raise ValueError(f"expected a profile name, got {type(name).__name__} {name!r}")
    if name == NO_PROFILE:
        return NO_PROFILE, {}
    profile = resolve_profile(name)
    train: dict[str, Any] = {key: getattr(profile, attr) for attr, key in PROFILE_TRAIN_KEYS.items()}
    train["lora"] = {key: getattr(profile, attr) for attr, key in PROFILE_LORA_KEYS.items()}
    return profile.name, {"train": train, "memory": to_dict(profile.memory)}


def under_profile(data: dict, source: str) -> dict:
    """A config tree (file + overrides) on top of its hardware profile's settings, with run.hardware_profile
    naming the profile applied; yourai.config.load_config builds the Config from it."""
    run = data.get("run")
    if run is not None and not isinstance(run, Mapping):
        return data  # build() reports the malformed section
    requested = (run or {}).get("hardware_profile", RunConfig.hardware_profile)
    try:
        name, settings = profile_settings(requested)
    except ValueError as err:
        raise ConfigError(f"{source}: run.hardware_profile: {err}") from err
    merged = _merge(settings, data)
    merged["run"] = {**merged.get("run", {}), "hardware_profile": name}
    return merged


def _merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict:
    """Nested dicts merged key by key; `top` wins (lists and scalars are replaced whole)."""
    merged = dict(base)
    for key, value in top.items():
        both = isinstance(value, Mapping) and isinstance(merged.get(key), Mapping)
        merged[key] = _merge(merged[key], value) if both else value
    return merged


def doctor_report() -> dict:
    """Everything `yourai doctor` prints, as one JSON-able dict."""
    machine = detect_machine()
    profile = match_profile(machine, load_profiles())
    model_dir = default_model_dir()
    return {
        "machine": asdict(machine),
        "profile": profile.name,
        "profile_description": profile.description,
        "recommended_models": [asdict(model) for model in profile.recommended_models],
        "training_defaults": {
            "batch_size": profile.batch_size,
            "grad_accumulation": profile.grad_accumulation,
            "lora_rank": profile.lora_rank,
            "lora_num_layers": profile.lora_num_layers,
            "max_seq_length": profile.max_seq_length,
        },
        "default_model_dir": str(model_dir),
        "default_model_built": (model_dir / "config.json").exists(),
        "default_model_shipped": model_dir.resolve() == shipped_model_dir().resolve(),
        "blas": blas_report(),
    }


def _default_model_note(report: dict) -> str:
    if report["default_model_shipped"]:
        return "the shipped weights"
    if report["default_model_built"]:
        return "YOURAI_DEFAULT_MODEL"
    return "YOURAI_DEFAULT_MODEL, not built yet: built on first use"


def format_doctor(report: dict) -> str:
    """Human-readable doctor report."""
    machine = report["machine"]
    lines = [
        f"OS / arch        {machine['os']} / {machine['arch']}",
        f"Python           {machine['python']}",
        f"MLX              {machine['mlx_version']} (backend: {machine['backend']}), mlx-lm {machine['mlx_lm_version']}",
        f"Memory           {machine['total_memory_gb']} GiB total, {machine['available_memory_gb']} GiB available",
        f"CPU cores        {machine['cpu_cores']}",
        f"BLAS             {_blas_line(report['blas'])}",
        f"Profile          {report['profile']}: {report['profile_description']}",
        f"Default model    {report['default_model_dir']} ({_default_model_note(report)})",
        "Recommended models (hub id, parameters, approx. memory for 4-bit LoRA):",
    ]
    for model in report["recommended_models"]:
        lines.append(f"  {model['hub_id']:<48} {model['params_b']:>7.3f} B  {model['lora_4bit_memory_gb']:>6.2f} GB")
    return "\n".join(lines)


def _blas_line(blas: dict) -> str:
    gflops = blas[f"gflops_fp32_{BLAS_PROBE_SIZE}"]
    line = f"{blas['library']} [{blas['source']}] {gflops} GFLOP/s (fp32 {BLAS_PROBE_SIZE}² matmul)"
    line += f"\n                 {blas['note']}" if blas["note"] else ""
    return line + (f"\n                 -> {blas['advice']}" if blas["advice"] else "")
