"""The `yourai` dispatcher: every command resolves to its module's function and answers --help; usage errors exit 2."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from yourai.cli import COMMANDS, main


def test_no_arguments_prints_usage_and_exits_2(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: yourai [--debug] COMMAND") and all(name in out for name in COMMANDS)


def test_help_lists_every_command_and_exits_0(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name}" in out for name in COMMANDS)


def test_unknown_command_is_named_and_exits_2(capsys):
    assert main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_resolves_to_a_cli_function(name):
    module_name, function_name, help_text = COMMANDS[name]
    assert module_name.startswith("yourai.cli.") and help_text
    assert callable(getattr(importlib.import_module(module_name), function_name))


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_answers_help(name, capsys):
    with pytest.raises(SystemExit) as exited:
        main([name, "--help"])
    assert exited.value.code == 0
    assert f"yourai {name}" in capsys.readouterr().out


def test_python_dash_m_yourai_is_the_same_dispatcher():
    done = subprocess.run([sys.executable, "-m", "yourai", "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "commands:" in done.stdout
