"""`yourai score`: scored JSONL out, every unreadable or unscorable line in the rejects file with its line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from texts import RICH_TEXT

from yourai.cli.score import cli_main
from yourai.scoring import score


def _write_input(tmp_path: Path) -> Path:
    lines = [json.dumps({"id": "a", "text": RICH_TEXT, "year": 2001}), "{not json",
             json.dumps({"id": "b", "text": "   "}), json.dumps({"id": "c", "text": RICH_TEXT, "extra": [1]})]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_writes_scored_jsonl_and_rejects(tmp_path: Path) -> None:
    assert cli_main([str(_write_input(tmp_path)), "-o", str(tmp_path / "out.jsonl"), "--workers", "1"]) == 0
    scored = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    rejects = [json.loads(line) for line in (tmp_path / "out.rejects.jsonl").read_text().splitlines()]
    assert [r["id"] for r in scored] == ["a", "c"] and scored[1]["extra"] == [1]
    assert scored[0]["authority_weight"] == score(RICH_TEXT, {"year": 2001}).authority_weight
    assert sorted(r["line"] for r in rejects) == [2, 3] and all("in.jsonl:" in r["reason"] for r in rejects)


def test_cli_reads_csv_with_evidence(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text('id,text,year\nx,"' + RICH_TEXT.replace('"', "'") + '",1850\ny,,\n')
    assert cli_main([str(path), "-o", str(tmp_path / "o.jsonl"), "--rejects", str(tmp_path / "r.jsonl"), "--evidence"]) == 0
    (row,) = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert row["scoring"]["year"] == 1850 and row["scoring"]["evidence"]
    empty_row_line = 3 + RICH_TEXT.count("\n")  # x's quoted cell spans several lines
    assert f"in.csv:{empty_row_line}:" in json.loads((tmp_path / "r.jsonl").read_text())["reason"]


def test_cli_missing_input_returns_2(tmp_path: Path) -> None:
    assert cli_main([str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "o.jsonl")]) == 2


def test_python_dash_m_entry_point(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "yourai", "score", str(_write_input(tmp_path)),
                           "-o", str(tmp_path / "o.jsonl")], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "2 scored" in done.stderr
