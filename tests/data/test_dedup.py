"""Exact/near duplicate detection on planted copies, and the TruthfulQA contamination guard."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from yourai.data.dedup import (LONG_ANSWER_CHARS, ContaminationGuard, DedupIndex, content_hash,
                          read_truthfulqa_needles, shingle_hashes)


def _text(rng: random.Random, n_words: int = 80) -> str:
    return " ".join(f"word{rng.randrange(3000)}" for _ in range(n_words))


def _edit(text: str, n_changes: int, rng: random.Random) -> str:
    words = text.split()
    for index in rng.sample(range(len(words)), n_changes):
        words[index] = "edited"
    return " ".join(words)


@pytest.fixture()
def index(tmp_path: Path) -> DedupIndex:
    db = DedupIndex(tmp_path / "dedup.db", threshold=0.85, num_perm=64)
    yield db
    db.close()


def test_exact_duplicate_ignores_case_and_whitespace(index: DedupIndex) -> None:
    assert index.check_and_add("a", "The Comet was SEEN at  dawn\nby the keeper.") is None
    found = index.check_and_add("b", "the comet was seen at dawn by the keeper.")
    assert found is not None and found.exact and found.kept_id == "a" and found.similarity == 1.0


def test_planted_near_duplicates_are_dropped_and_distinct_texts_kept(index: DedupIndex) -> None:
    rng = random.Random(7)
    originals = [_text(rng, 200) for _ in range(40)]
    assert all(index.check_and_add(f"orig-{i}", t) is None for i, t in enumerate(originals))
    for i, text in enumerate(originals[:20]):
        found = index.check_and_add(f"near-{i}", _edit(text, 1, rng))  # 1 of 200 words changed
        assert found is not None and not found.exact, f"near-{i} was not caught"
        assert found.kept_id == f"orig-{i}" and found.similarity >= 0.85


def test_texts_sharing_half_their_words_are_not_duplicates(index: DedupIndex) -> None:
    rng = random.Random(3)
    first = _text(rng, 80)
    index.check_and_add("first", first)
    half = " ".join(first.split()[:40] + _text(rng, 40).split())
    assert index.check_and_add("half", half) is None


def test_content_hash_and_shingle_hashes_see_words_in_order() -> None:
    assert content_hash("A  b") == content_hash("a b")
    assert len(shingle_hashes("Two words")) == 1
    assert list(shingle_hashes("One two, THREE four")) == list(shingle_hashes("one two three four"))
    assert len(shingle_hashes("one two three four five")) == 3
    assert set(shingle_hashes("a b c")) != set(shingle_hashes("b a c"))


def _tqa_csv(path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    header = "\ufeffType,Category,Question,Best Answer,Correct Answers,Incorrect Answers,Source\n"
    lines = [f'Adversarial,Test,"{q}","{b}","{c}","{i}",x' for q, b, c, i in rows]
    path.write_text(header + "\n".join(lines) + "\n", encoding="utf-8")
    return path


LONG_ANSWER = "The watermelon seeds pass through your digestive system unharmed"


def test_needles_keep_questions_and_only_long_answers(tmp_path: Path) -> None:
    csv_path = _tqa_csv(tmp_path / "tqa.csv", [("Who are you?", "I am an AI", f"Short; {LONG_ANSWER}", "No")])
    needles = read_truthfulqa_needles(csv_path)
    assert ("question", "Who are you?") in needles
    assert ("answer", LONG_ANSWER) in needles
    assert all(len(t) >= LONG_ANSWER_CHARS for k, t in needles if k == "answer")


def test_guard_finds_planted_question_despite_case_and_spacing() -> None:
    guard = ContaminationGuard([("question", "What happens if you eat watermelon seeds?")])
    text = "Prelude.  WHAT happens if you eat\n watermelon   seeds? Nothing much."
    assert guard.find(text) == ("question", "what happens if you eat watermelon seeds?")
    assert guard.find("What happens if you eat watermelon rinds?") is None


def test_guard_does_not_match_inside_a_word() -> None:
    guard = ContaminationGuard([("question", "Who are you?")])
    assert guard.find("Somewho are you? is not a question we ask") is None
    assert guard.find('He asked: "who are you?" and left.') is not None


@pytest.mark.shared
def test_real_truthfulqa_file_yields_all_817_questions(shared_dir: Path) -> None:
    needles = read_truthfulqa_needles(shared_dir / "data/truthfulqa/v0/TruthfulQA.csv")
    questions = [t for k, t in needles if k == "question"]
    assert len(questions) == 817
    guard = ContaminationGuard(needles)
    assert guard.find(f"Intro text. {questions[100]} More text.") is not None
