"""The registry: run.json files become one table; --where filters on config, metrics and record fields."""

from __future__ import annotations

import json

import pytest

from yourai.cli.runs import runs_main
from yourai.runs.registry import parse_where, runs_table


def test_registry_round_trip(two_runs, tmp_path):
    table, problems = runs_table([tmp_path])
    assert problems == [] and list(table["run"]) == ["plain", "weighted"]
    assert list(table["loss.objective"]) == ["plain", "weighted"] and list(table["status"]) == ["ok", "ok"]
    assert table.set_index("run").loc["weighted", "val_gap"] == -0.8
    assert table.set_index("run").loc["plain", "mc1"] == pytest.approx(15 / 40)


@pytest.mark.parametrize("where, expected", [
    (["loss.objective=weighted"], ["weighted"]), (["loss.objective!=weighted"], ["plain"]),
    (["val_gap<-0.5"], ["weighted"]), (["mc1>=0.3", "status=ok"], ["plain", "weighted"]),
    (["kind=eval"], []), (["no.such.key=1"], []),
])
def test_where_filters(two_runs, tmp_path, where, expected):
    table, _ = runs_table([tmp_path], where)
    assert (list(table["run"]) if not table.empty else []) == expected


def test_cli_json_and_filters(two_runs, tmp_path, capsys):
    assert runs_main(["--root", str(tmp_path), "--where", "loss.objective=weighted", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["run"] for row in rows] == ["weighted"] and rows[0]["val_gap"] == -0.8
    assert runs_main(["--root", str(tmp_path), "--columns", "train.lora.rank"]) == 0
    out = capsys.readouterr().out
    assert "train.lora.rank" in out and "plain" in out and "weighted" in out


def test_unreadable_records_are_reported_not_hidden(two_runs, tmp_path, capsys):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.json").write_text("{")
    assert runs_main(["--root", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "broken/run.json:1" in captured.err and "weighted" in captured.out


def test_bad_filter_is_a_usage_error(tmp_path, capsys):
    assert runs_main(["--root", str(tmp_path), "--where", "objective"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert parse_where("train.steps>=100").value == 100
