"""The house plan holds: stages as folders, dependencies pointing one way, no cycles, argparse only in the CLI,
modules of a readable size, and every shared rule defined exactly once (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from yourai.paths import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "yourai"
# Layers, lowest first. A module may import its own unit and any lower layer; units in the same layer are
# independent of each other (train and eval, say, never import one another), except in the base, whose
# small modules build on one another (config on formula and tiers); the cycle test keeps that one-way.
LAYERS = (
    {"_blas", "paths", "formula", "tiers", "schema", "config", "records", "stats", "hardware", "stopping", ""},  # the base
    {"scoring", "loss", "models"},
    {"data"},
    {"train", "eval"},
    {"notebook"},
    {"runs"},  # recorded runs and sweeps compose train + eval (and default data from notebook/); the pipeline records through it
    {"pipeline", "readme_numbers"},
    {"cli"},
    {"__main__"},
)
MAX_MODULE_LINES = 400
# Each shared rule or constant, and the one module allowed to define it.
RULE_HOMES = {
    "TIERS": "tiers.py", "PRIMARY_MAX_AUTHORITY": "tiers.py", "CONSENSUS_MIN_AUTHORITY": "tiers.py",
    "AUTHORITY_RANGE": "formula.py", "EPSILON": "formula.py", "DEFAULT_ALPHA": "formula.py",
    "ALPHA_RANGE": "formula.py", "DEFAULT_LAMBDA": "formula.py", "DEFAULT_WEIGHT_CAP": "formula.py",
    "OBJECTIVES": "formula.py", "SCHEMES": "formula.py", "WEIGHTED_OBJECTIVES": "formula.py",
    "TERM_OBJECTIVES": "formula.py", "combine_objective": "formula.py",
    "FIGURE_DPI": "notebook/display.py", "in_kernel": "notebook/display.py",
    "is_interactive_session": "notebook/display.py",
    "bootstrap_mean_ci": "stats.py", "sign_flip_p_value": "stats.py", "paired_comparison": "stats.py",
    "theil_sen": "stats.py", "mean_ci95": "stats.py", "roc_auc": "stats.py",
    "iter_jsonl": "records.py", "iter_csv": "records.py", "record_text": "records.py",
    "lora_parameters": "train/lora.py", "attach_lora": "train/lora.py", "build_lora_model": "train/lora.py",
    "TrainingCallback": "train/callbacks.py", "tier_of": "tiers.py",
    "STOP_SIGNALS": "stopping.py", "graceful_stop": "stopping.py", "exit_code": "stopping.py",
    "paired_bootstrap_ci": "stats.py", "expected_calibration_error": "stats.py", "brier_score": "stats.py",
    "RUN_RECORD": "runs/record.py", "config_hash": "runs/record.py", "TASK_METRICS": "eval/tasks.py",
    "DEQUANTIZE_MODES": "config.py", "PACKAGED_MODELS": "models/registry.py", "resolve_model": "models/load.py",
}
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


def _unit(module: Path) -> str:
    """The unit a module belongs to: its sub-package, or its own name for a top-level module."""
    relative = module.relative_to(PACKAGE)
    if len(relative.parts) > 1:
        return relative.parts[0]
    return "" if relative.stem == "__init__" else relative.stem


def _layer(unit: str) -> int:
    return next(index for index, units in enumerate(LAYERS) if unit in units)


def _yourai_imports(module: Path, top_level_only: bool = False) -> list[tuple[int, str]]:
    """(line, imported yourai unit) for every import in the module (function-level too, unless asked)."""
    tree = ast.parse(module.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = []
    for node in nodes:
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "yourai" and len(parts) > 1 and (PACKAGE / parts[1]).with_suffix(".py").exists() \
                    or parts[0] == "yourai" and len(parts) > 1 and (PACKAGE / parts[1]).is_dir():
                found.append((node.lineno, parts[1]))
    return found


def _imported_module(module: str, name: str) -> str:
    """`from yourai.x import y` imports the module yourai.x.y when there is one, else names from yourai.x."""
    candidate = PROJECT_ROOT.joinpath(*f"{module}.{name}".split("."))
    return f"{module}.{name}" if candidate.with_suffix(".py").exists() or candidate.is_dir() else module


def test_every_unit_has_a_layer():
    units = {_unit(module) for module in MODULES}
    assert units <= set().union(*LAYERS), f"units without a layer: {units - set().union(*LAYERS)}"


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_dependencies_point_down_only(module):
    own = _unit(module)
    for line, imported in _yourai_imports(module):
        if imported == own or _layer(imported) == _layer(own) == 0:
            continue
        assert _layer(imported) < _layer(own), \
            f"{module.relative_to(PROJECT_ROOT)}:{line} imports yourai.{imported} (layer {_layer(imported)}) " \
            f"from layer {_layer(own)}: dependencies must point down (docs/ARCHITECTURE.md)"


def test_no_import_cycles_between_modules():
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        name = ".".join(module.relative_to(PROJECT_ROOT).with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(module.read_text(encoding="utf-8"))
        graph[name] = {_imported_module(node.module, alias.name) for node in tree.body
                       if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("yourai.")
                       for alias in node.names}
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in graph.get(name, ()):
            if state.get(target) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path + [name, target]))
            if target in graph and state.get(target) is None:
                visit(target, path + [name])
        state[name] = 2

    for name in graph:
        if state.get(name) is None:
            visit(name, [])


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_argparse_lives_only_in_the_cli(module):
    if _unit(module) == "cli":
        return
    assert not re.search(r"^\s*(import argparse|from argparse)", module.read_text(encoding="utf-8"), re.M), \
        f"{module.relative_to(PROJECT_ROOT)} uses argparse: commands belong in yourai/cli/"


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_readable(module):
    lines = module.read_text(encoding="utf-8").count("\n")
    docstring = ast.get_docstring(ast.parse(module.read_text(encoding="utf-8"))) or ""
    assert lines <= MAX_MODULE_LINES or "lines because" in docstring, \
        f"{module.relative_to(PROJECT_ROOT)} has {lines} lines: split it, or say at its top why it is one module"


@pytest.mark.parametrize("name", sorted(RULE_HOMES))
def test_every_rule_is_defined_once(name):
    definition = re.compile(rf"^(?:{name}\s*(?::[^=]*)?=|def {name}\b|class {name}\b)", re.M)
    homes = [str(module.relative_to(PACKAGE)) for module in MODULES if definition.search(module.read_text(encoding="utf-8"))]
    assert homes == [RULE_HOMES[name]], f"{name} is defined in {homes}; its one home is {RULE_HOMES[name]}"
