"""Every path a user takes does what it says: each case drives the `yourai` command as a user types it
(`yourai.cli.main`, the same dispatcher the console script runs) and checks the message and the files left.

Module-specific behaviour is tested beside its module; this file is the user's view across them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from yourai.cli import main

TEXTS = ["The specimen was weighed on the brass balance at noon and measured twice.",
         "Experts agree that the official agency guidance is widely accepted by everyone.",
         "A letter from the field station describing the barometer readings after the storm.",
         "The government handbook states the established fact as the committee approved it."]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _curate(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["curate", *args, "--no-progress", "curate.balance=false", "curate.contamination_check=false"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------- 3. curation takes what users have


@pytest.mark.parametrize("layout", ["text", "prompt_completion", "messages", "shared"])
def test_curate_accepts_the_common_record_layouts_and_fills_provenance(tmp_path, capsys, layout):
    rows = {
        "text": [{"text": t} for t in TEXTS],
        "prompt_completion": [{"prompt": "What was recorded?", "completion": t} for t in TEXTS],
        "messages": [{"messages": [{"role": "user", "content": "Report."}, {"role": "assistant", "content": t}]}
                     for t in TEXTS],
        "shared": [{"id": f"s{i}", "text": t, "source": "a field report", "year": 1880,
                    "url_or_origin": f"https://example.org/{i}", "license": "public domain"}
                   for i, t in enumerate(TEXTS)],
    }[layout]
    source = _jsonl(tmp_path / f"{layout}.jsonl", rows)
    code, out, err = _curate(capsys, str(source), "--out", str(tmp_path / "out"))
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["reconciliation"]["output_records"] == len(TEXTS) and report["reconciliation"]["ok"]
    curated = _lines(tmp_path / "out" / "curated.jsonl")
    filled = report["filled_fields"]
    assert filled["source_type"] == {"unknown": 4}
    if layout == "shared":
        assert filled["origin"] == {"from 'url_or_origin'": 4} and "license" not in filled and "id" not in filled
        assert [r["origin"] for r in curated] == [f"https://example.org/{i}" for i in range(4)]
    else:
        assert filled["id"] == filled["origin"] == {"file:line": 4} and filled["license"] == {"unknown": 4}
        assert {r["origin"] for r in curated} == {f"{source}:{line}" for line in range(1, 5)}
    assert "filled in: " in out and "source_type 4 (unknown 4)" in out


def test_curate_defaults_and_field_mapping_from_flags(tmp_path, capsys):
    source = _jsonl(tmp_path / "mine.jsonl", [{"body": t, "url": f"u{i}"} for i, t in enumerate(TEXTS)])
    code, out, err = _curate(capsys, str(source), "--out", str(tmp_path / "out"), "--field", "text=body",
                             "--field", "origin=url", "--default", "license=CC0-1.0", "--default", "source_type=letter")
    assert code == 0, err
    curated = _lines(tmp_path / "out" / "curated.jsonl")
    assert {(r["license"], r["source_type"]) for r in curated} == {("CC0-1.0", "letter")}
    assert sorted(r["origin"] for r in curated) == ["u0", "u1", "u2", "u3"]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["filled_fields"]["text"] == {"from 'body'": 4} and report["filled_fields"]["license"] == {"default": 4}


def test_curate_defaults_from_a_config_file(tmp_path, capsys):
    source = _jsonl(tmp_path / "mine.jsonl", [{"text": t} for t in TEXTS])
    config = tmp_path / "my.yaml"
    config.write_text(f"curate:\n  sources: [{source}]\n  defaults: {{license: CC-BY-4.0}}\n")
    code, _, err = _curate(capsys, "-c", str(config), "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert {r["license"] for r in _lines(tmp_path / "out" / "curated.jsonl")} == {"CC-BY-4.0"}


def test_curate_with_nothing_left_exits_1_and_names_the_top_reasons(tmp_path, capsys):
    source = _jsonl(tmp_path / "wrong.jsonl", [{"body": t, "title": "x"} for t in TEXTS] + [{"text": "too short"}])
    code, _, err = _curate(capsys, str(source), "--out", str(tmp_path / "out"))
    assert code == 1
    assert "nothing was curated: all 5 input record(s) were rejected" in err
    assert "missing_field (field 'text'): 4; too_short (field 'text'): 1" in err
    assert len(_lines(tmp_path / "out" / "rejects.jsonl")) == 5  # the file says why, line by line


def test_curate_csv_with_a_huge_cell_and_one_without_a_header(tmp_path, capsys):
    big = tmp_path / "big.csv"
    long_text = " ".join(f"reading{i}" for i in range(20_000))  # ~190 KB: over csv's 128 KiB default
    big.write_text(f"id,text\nlong,{long_text}\nshort,{TEXTS[0]}\n", encoding="utf-8")
    bare = tmp_path / "bare.csv"
    bare.write_text(f"1923,{TEXTS[1]}\n1924,{TEXTS[2]}\n", encoding="utf-8")
    code, _, err = _curate(capsys, str(big), str(bare), "--out", str(tmp_path / "out"))
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["chunking"]["records_chunked"] == 1  # the long cell was read and chunked, not fatal
    rejects = _lines(tmp_path / "out" / "rejects.jsonl")
    assert [(Path(r["source"]).name, r["line"], r["reason"]) for r in rejects] == \
        [("bare.csv", 1, "csv_no_header"), ("bare.csv", 2, "csv_no_header")]
    assert report["reconciliation"]["ok"] and report["funnel"]["read"] == 4


def test_curate_header_less_csv_with_named_columns(tmp_path, capsys):
    bare = tmp_path / "bare.csv"
    bare.write_text(f"1923,{TEXTS[1]}\n1924,{TEXTS[2]}\n", encoding="utf-8")
    code, _, err = _curate(capsys, str(bare), "--csv-columns", "year,text", "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert sorted(r["year"] for r in _lines(tmp_path / "out" / "curated.jsonl")) == [1923, 1924]


def test_curate_front_matter_of_any_type_and_non_finite_extras(tmp_path, capsys):
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "dated.md").write_text(f"---\npublished: 2020-01-31\ntags: [a, b]\n---\n{TEXTS[0]}", encoding="utf-8")
    source = _jsonl(tmp_path / "nan.jsonl", [{"text": TEXTS[1], "score": float("nan")}, {"text": TEXTS[2]}])
    code, _, err = _curate(capsys, str(texts), str(source), "--out", str(tmp_path / "out"))
    assert code == 0, err
    curated = {r["id"]: r for r in _lines(tmp_path / "out" / "curated.jsonl")}
    assert curated["dated"]["published"] == "2020-01-31" and curated["dated"]["tags"] == ["a", "b"]
    (reject,) = _lines(tmp_path / "out" / "rejects.jsonl")
    assert (reject["line"], reject["reason"], reject["field"]) == (1, "not_finite", "score")
    for name in ("curated.jsonl", "train.jsonl", "valid.jsonl", "test.jsonl"):  # strict JSON only
        assert "NaN" not in (tmp_path / "out" / name).read_text()


def test_curate_bad_sources_setting_is_one_line(tmp_path, capsys):
    code, _, err = _curate(capsys, "--out", str(tmp_path / "out"), "curate.sources=[1,2]")
    assert code == 2
    assert err.strip().endswith("curate.sources[0]: expected str or a mapping, got int 1")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
