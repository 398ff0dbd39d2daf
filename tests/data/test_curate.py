"""The curation pipeline end to end: rejects accounted for, determinism, split stability, guard, CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from yourai.config import CurateConfig, TierTargets, load_config
from yourai.cli.curate import EXIT_DATA_ERROR, EXIT_OK, EXIT_USAGE, cli_main, split_cli_items
from yourai.data.curate import chunk_text, curate, for_mlx, plan_balance, split_of
from yourai.data.report import CurateError
from yourai.paths import sample_corpus_path

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "broken_records"
OUTPUTS = ("curated.jsonl", "train.jsonl", "valid.jsonl", "test.jsonl", "rejects.jsonl", "report.json")


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _records(n: int, seed: int = 0, start: int = 0, scored: bool = True) -> list[dict]:
    """n distinct records spread over the three tiers (supplied scores keep tests fast and exact)."""
    rng = random.Random(seed * 1_000_003 + start)  # distinct texts for distinct (seed, start)
    out = []
    for i in range(start, start + n):
        record = {"id": f"r{i:05d}", "text": " ".join(f"w{rng.randrange(5000)}" for _ in range(30)),
                  "source_type": "letter", "year": 1900, "origin": "test", "license": "CC0-1.0"}
        if scored:
            record.update(authority_weight=(0.1, 0.5, 0.9)[i % 3], provenance_entropy=2.0)
        out.append(record)
    return out


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _config(**changes) -> CurateConfig:
    return load_config(None, {f"curate.{k}": v for k, v in changes.items()}).curate


def _run(tmp_path: Path, sources: list, name: str = "out", **changes) -> tuple[Path, dict]:
    out = tmp_path / name
    report = curate([str(s) for s in sources], out, _config(**changes), truthfulqa_csv=None, workers=1)
    return out, report


# ------------------------------------------------------------------ rejects and reconciliation


def test_broken_fixture_every_record_rejected_with_its_reason_or_kept(tmp_path: Path) -> None:
    expected = json.loads((FIXTURE / "expected.json").read_text())
    assert sum(e["reason"] != "good" for e in expected) >= 30
    out, report = _run(tmp_path, [FIXTURE / "broken.jsonl", FIXTURE / "broken.csv", FIXTURE / "noheader.csv",
                                  FIXTURE / "texts"],
                       balance=False)
    rejects = {(Path(r["source"]).name, r["line"]): r for r in _read_jsonl(out / "rejects.jsonl")}
    kept_lines = len(_read_jsonl(out / "curated.jsonl"))
    for case in expected:
        got = rejects.get((case["file"], case["line"]))
        if case["reason"] == "good":
            assert got is None, f"{case} was rejected: {got}"
        else:
            assert got is not None, f"{case} was not rejected"
            assert (got["reason"], got["field"]) == (case["reason"], case["field"]), case
    assert len(rejects) + kept_lines == len(expected)
    assert report["reconciliation"]["ok"], report["reconciliation"]["checks"]
    assert report["funnel"]["read"] == len(expected)


def test_fail_policy_stops_at_first_bad_record_naming_file_line_field(tmp_path: Path) -> None:
    with pytest.raises(CurateError, match=r"broken\.jsonl:2: invalid_utf8"):
        _run(tmp_path, [FIXTURE / "broken.jsonl"], on_error="fail")


def test_supplied_scores_are_kept_and_flagged_missing_ones_computed(tmp_path: Path) -> None:
    records = _records(2) + _records(1, start=2, scored=False)
    out, report = _run(tmp_path, [_write(tmp_path / "in.jsonl", records)], balance=False)
    by_id = {r["id"]: r for r in _read_jsonl(out / "curated.jsonl")}
    assert by_id["r00000"]["authority_weight"] == 0.1 and by_id["r00000"]["scores_supplied"] is True
    assert by_id["r00002"]["scores_supplied"] is False and 0 <= by_id["r00002"]["authority_weight"] <= 0.99
    assert report["scores"] == {"supplied": 2, "computed": 1}


def test_extra_keys_survive_and_contract_keys_come_first(tmp_path: Path) -> None:
    record = {**_records(1)[0], "author": "A. Keeper", "references": [1, 2], "_note": "kept too"}
    out, _ = _run(tmp_path, [_write(tmp_path / "in.jsonl", [record])], balance=False)
    row = _read_jsonl(out / "curated.jsonl")[0]
    assert list(row)[:3] == ["id", "text", "source_type"]
    assert row["author"] == "A. Keeper" and row["references"] == [1, 2] and row["tier"] == "primary"
    assert row["_note"] == "kept too" and "_source" not in row


# ------------------------------------------------------------------ chunking


def test_long_text_is_chunked_with_overlap_and_no_word_lost(tmp_path: Path) -> None:
    words = [f"w{i}" for i in range(1000)]
    chunks = chunk_text(" ".join(words), max_words=400, overlap_words=40)
    assert [len(c.split()) for c in chunks] == [400, 400, 280]
    assert chunks[1].split()[:40] == chunks[0].split()[-40:]
    covered = chunks[0].split() + [w for c in chunks[1:] for w in c.split()[40:]]
    assert covered == words
    record = {**_records(1)[0], "text": " ".join(words)}
    out, report = _run(tmp_path, [_write(tmp_path / "in.jsonl", [record])], balance=False)
    rows = _read_jsonl(out / "curated.jsonl")
    assert [r["id"] for r in rows] == ["r00000#c1", "r00000#c2", "r00000#c3"]
    assert {r["parent_id"] for r in rows} == {"r00000"} and len({r["split"] for r in rows}) == 1
    assert report["chunking"] == {"records_chunked": 1, "extra_chunks": 2}


def test_chunk_overlap_not_smaller_than_window_is_an_error() -> None:
    with pytest.raises(ValueError, match="chunk_overlap_words"):
        chunk_text("a b c", max_words=16, overlap_words=16)


# ------------------------------------------------------------------ dedup in the pipeline


def test_planted_duplicates_are_logged_as_kept_dropped_pairs(tmp_path: Path) -> None:
    records = _records(6)
    copy = {**records[1], "id": "copy", "text": records[1]["text"].upper()}
    near_words = records[2]["text"].split()
    near = {**records[2], "id": "near", "text": " ".join(near_words[:-1] + ["changed"]) + " " + " ".join(near_words)}
    out, report = _run(tmp_path, [_write(tmp_path / "in.jsonl", records + [copy, near])], balance=False)
    pairs = {r["id"]: r for r in _read_jsonl(out / "rejects.jsonl")}
    assert pairs["copy"]["reason"] == "exact_duplicate" and pairs["copy"]["kept_id"] == "r00001"
    assert pairs["near"]["reason"] == "near_duplicate" and pairs["near"]["kept_id"] == "r00002"
    assert report["funnel"]["balanced"] == 6


# ------------------------------------------------------------------ balance, determinism, split


def test_plan_balance_matches_targets_and_renormalises_empty_tiers() -> None:
    assert plan_balance({"primary": 100, "middle": 100, "consensus": 50},
                        {"primary": 0.4, "middle": 0.2, "consensus": 0.4}) == \
        {"primary": 50, "middle": 25, "consensus": 50}
    assert plan_balance({"primary": 30, "middle": 0, "consensus": 90},
                        {"primary": 0.4, "middle": 0.2, "consensus": 0.4}) == \
        {"primary": 30, "middle": 0, "consensus": 30}
    assert plan_balance({"primary": 10, "middle": 10, "consensus": 10},
                        {"primary": 0.5, "middle": 0.0, "consensus": 0.5})["middle"] == 0


def test_balanced_output_hits_tier_targets_exactly(tmp_path: Path) -> None:
    records = _records(90) + [{**r, "authority_weight": 0.9} for r in _records(60, start=90)]
    _, report = _run(tmp_path, [_write(tmp_path / "in.jsonl", records)])
    after = report["tiers"]["after_balance"]
    assert after == {"primary": 30, "middle": 15, "consensus": 30}
    assert report["reconciliation"]["ok"]


def test_same_seed_same_bytes_other_seed_other_selection(tmp_path: Path) -> None:
    source = _write(tmp_path / "in.jsonl", _records(120) + [{**r, "authority_weight": 0.9}
                                                            for r in _records(80, start=120)])
    first, _ = _run(tmp_path, [source], "a", seed=5)
    second, _ = _run(tmp_path, [source], "b", seed=5)
    third, _ = _run(tmp_path, [source], "c", seed=6)
    for name in OUTPUTS[:-1]:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert (first / "curated.jsonl").read_bytes() != (third / "curated.jsonl").read_bytes()


def test_adding_records_never_moves_existing_ones_between_splits(tmp_path: Path) -> None:
    base = _records(200)
    small, _ = _run(tmp_path, [_write(tmp_path / "a.jsonl", base)], "small", balance=False)
    large, _ = _run(tmp_path, [_write(tmp_path / "b.jsonl", base + _records(300, seed=9, start=200))],
                    "large", balance=False)
    before = {r["id"]: r["split"] for r in _read_jsonl(small / "curated.jsonl")}
    after = {r["id"]: r["split"] for r in _read_jsonl(large / "curated.jsonl")}
    assert before and all(after[i] == s for i, s in before.items())
    assert set(before.values()) == {"train", "valid", "test"}


def test_split_fractions_are_close_to_config() -> None:
    splits = [split_of(f"id-{i}", 0.1, 0.1) for i in range(20000)]
    assert abs(splits.count("valid") / 20000 - 0.1) < 0.01 and abs(splits.count("test") / 20000 - 0.1) < 0.01


def test_mixed_formats_nest_structured_keys_for_mlx(tmp_path: Path) -> None:
    chat = {**_records(1, start=50)[0], "messages": [{"role": "user", "content": "What was seen at dawn today?"}]}
    chat.pop("text")
    out, report = _run(tmp_path, [_write(tmp_path / "in.jsonl", _records(3) + [chat])], balance=False)
    rows = [r for s in ("train", "valid", "test") for r in _read_jsonl(out / f"{s}.jsonl")]
    assert all("text" in r and "messages" not in r for r in rows)
    assert report["formats"] == {"text": 3, "chat": 1}
    assert for_mlx({"text": "t", "prompt": "p"}, nest_structured=False) == {"text": "t", "prompt": "p"}


# ------------------------------------------------------------------ contamination


def test_planted_truthfulqa_question_and_answer_are_dropped_and_reported(tmp_path: Path) -> None:
    tqa = tmp_path / "tqa.csv"
    tqa.write_text("Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers,Source\n"
                   "A,B,What happens if you crack your knuckles a lot?,Nothing in particular happens,"
                   "Nothing in particular happens to your joints over time at all,You get arthritis,x\n",
                   encoding="utf-8")
    records = _records(4)
    records[1]["text"] += " what happens if you  crack your knuckles a lot? Asked the doctor."
    records[2]["text"] += " Nothing in particular happens to your joints over time at all, he said."
    out = tmp_path / "out"
    report = curate([str(_write(tmp_path / "in.jsonl", records))], out, _config(balance=False),
                    truthfulqa_csv=tqa, workers=1)
    dropped = {r["id"]: r["reason"] for r in _read_jsonl(out / "rejects.jsonl")}
    assert dropped == {"r00001": "truthfulqa_question", "r00002": "truthfulqa_answer"}
    assert report["contamination"]["checked"] and report["contamination"]["dropped"] == 2


def test_guard_off_or_data_absent_is_reported_not_silent(tmp_path: Path) -> None:
    source = _write(tmp_path / "in.jsonl", _records(3))
    report = curate([str(source)], tmp_path / "o", _config(balance=False), truthfulqa_csv=tmp_path / "none.csv")
    assert report["contamination"]["checked"] is False and "not found" in report["contamination"]["why"]


# ------------------------------------------------------------------ CLI


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    broken = str(FIXTURE / "broken.jsonl")
    assert cli_main([broken, "--out", str(tmp_path / "skip"), "--no-progress"]) == EXIT_OK
    assert all((tmp_path / "skip" / name).is_file() for name in OUTPUTS)
    assert cli_main([broken, "--out", str(tmp_path / "fail"), "on_error=fail"]) == EXIT_DATA_ERROR
    assert "broken.jsonl:2" in capsys.readouterr().err
    assert cli_main([str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "x")]) == EXIT_USAGE
    assert cli_main([broken, "--out", str(tmp_path / "y"), "curate.seed=notanint"]) == EXIT_USAGE
    assert cli_main([broken, "--out", str(tmp_path / "z"), "curate.on_error=maybe"]) == EXIT_USAGE


def test_cli_items_split_into_sources_and_overrides() -> None:
    assert split_cli_items(["a.jsonl", "seed=3", "train.steps=2", "dir"]) == \
        (["a.jsonl", "dir"], ["curate.seed=3", "train.steps=2"])


# ------------------------------------------------------------------ the sample corpus


@pytest.mark.slow
def test_sample_corpus_gives_valid_split_with_primary_and_consensus(tmp_path: Path) -> None:
    assert sample_corpus_path().is_file(), f"{sample_corpus_path()} is committed: a checkout without it is broken"
    out = tmp_path / "sample"
    report = curate(None, out, CurateConfig(), truthfulqa_csv=None, workers=1)
    assert report["reconciliation"]["ok"]
    valid_tiers = {r["tier"] for r in _read_jsonl(out / "valid.jsonl")}
    assert {"primary", "consensus"} <= valid_tiers
    assert report["tiers"]["after_balance"]["primary"] > 0 and report["splits"]["train"] > 100


def test_default_config_targets_sum_to_one() -> None:
    targets = TierTargets()
    assert abs(targets.primary + targets.middle + targets.consensus - 1.0) < 1e-9


def _fake_shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ../shared stand-in with two corpora in the shared layout (no source_type, url_or_origin)."""
    for folder, start in (("phil_trans_1665_1869", 0), ("medquad_nih_consensus", 100)):
        records = [{k: v for k, v in r.items() if k not in ("source_type", "origin", "authority_weight",
                                                             "provenance_entropy")} | {"url_or_origin": "test"}
                   for r in _records(6, start=start)]
        (tmp_path / "shared" / "data" / "corpora" / folder).mkdir(parents=True)
        _write(tmp_path / "shared" / "data" / "corpora" / folder / "part.jsonl", records)
    monkeypatch.setenv("YOURAI_SHARED", str(tmp_path / "shared"))
    return tmp_path / "shared" / "data" / "corpora"


def test_shared_corpora_are_added_by_name_with_their_source_types(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpora = _fake_shared(tmp_path, monkeypatch)
    out, report = _run(tmp_path, [], shared_corpora=["medquad_nih_consensus"], balance=False)
    kept = _read_jsonl(out / "curated.jsonl")
    assert report["funnel"]["read"] == 6 and {r["source_type"] for r in kept} == {"medical_guidelines"}
    # the same file named as a source too is read once, with the shared defaults
    again, report = _run(tmp_path, [corpora / "medquad_nih_consensus" / "part.jsonl"], "again",
                         shared_corpora=["medquad_nih_consensus"], balance=False)
    assert report["funnel"]["read"] == 6 and {r["source_type"] for r in _read_jsonl(again / "curated.jsonl")} == {"medical_guidelines"}


def test_notebooks_read_the_same_sources_stage_01_curates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A config whose only input is curate.shared_corpora (configs/smollm2.yaml): notebook 03's score table
    reads those corpora, as curation does, instead of an empty curate.sources."""
    from yourai.data.curate import curation_sources
    from yourai.notebook.scoring_tables import load_sources

    _fake_shared(tmp_path, monkeypatch)
    config = _config(sources=[], shared_corpora=["medquad_nih_consensus", "phil_trans_1665_1869"], balance=False)
    groups = load_sources(curation_sources(config), config)
    _, report = _run(tmp_path, [], shared_corpora=config.shared_corpora, balance=False)
    assert sum(len(records) for records in groups.values()) == report["funnel"]["read"] == 12
    assert sorted(groups) == ["medquad_nih_consensus/part", "phil_trans_1665_1869/part"]  # same stem: both kept
    # each record as curation sees it: the corpus's source type is a source default, not a field of the file
    assert {name: {r["source_type"] for r in records} for name, records in groups.items()} == {
        "medquad_nih_consensus/part": {"medical_guidelines"}, "phil_trans_1665_1869/part": {"letter"}}
    assert curation_sources(config, ["mine.jsonl"])[0] == "mine.jsonl" and len(curation_sources(config, [])) == 2
    # the run-wide curate.defaults reach the notebooks' table as they reach curation
    mine = tmp_path / "mine.jsonl"
    _write(mine, [{k: v for k, v in r.items() if k != "source_type"} for r in _records(2)])
    with_default = _config(sources=[str(mine)], defaults={"source_type": "patent"}, balance=False)
    assert {r["source_type"] for r in load_sources(with_default.sources, with_default)["mine"]} == {"patent"}
    assert {r["source_type"] for r in load_sources(with_default.sources)["mine"]} == {"unknown"}


def test_unknown_or_missing_shared_corpus_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from yourai.data.sources import SourceError

    _fake_shared(tmp_path, monkeypatch)
    with pytest.raises(SourceError, match=r"curate.shared_corpora: unknown \['arxiv'\]; known: \["):
        _run(tmp_path, [], shared_corpora=["arxiv"])
    with pytest.raises(SourceError, match=r"gutenberg_science_fieldreports: no .jsonl under"):
        _run(tmp_path, [], shared_corpora=["gutenberg_science_fieldreports"])
