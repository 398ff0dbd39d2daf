"""word_starts.candidates, the numpy prefilter: every word start the regex prefilter finds, only at word starts."""

from __future__ import annotations

import re
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from yourai.scoring import scanner, word_starts


def _candidates(text: str) -> list[int]:
    lowered = ("\n" + text).lower()
    return word_starts.candidates(lowered, scanner.WORD_STARTS)


def _regex_starts(text: str) -> list[int]:
    return [m.start() + 1 for m in scanner.WORD_RE.finditer(("\n" + text).lower())]


def test_a_start_counts_only_after_a_non_word_character() -> None:
    assert _candidates("news") == [1]
    assert _candidates("the news") == [5]
    assert _candidates("\u2014news and (university") == [2, 12]  # em dash, parenthesis
    assert _candidates("\u00e9news x_news 3news") == []  # after é, _ and a digit the word has begun
    assert _candidates("ΣNEWS") == []
    assert _candidates("\ud800news") == [2]  # a lone surrogate (JSON can hold one) is not a word character


def test_a_phrase_space_is_any_whitespace_run() -> None:
    """'et al' is found across a tab, several spaces or U+00A0 (a non-ASCII space: the 'unknown' symbol)."""
    for text in ("et al", "et \t al", "et\u00a0al", "ET  AL"):
        assert _candidates(text) == [1], text
    assert _candidates("etal ettle") == []


def test_short_starts_and_the_text_end() -> None:
    """Starts shorter than four characters ('who', '10.', 'pat') match anything after them, the text end too."""
    assert _candidates("WHO") == [1] and _candidates("10.1000") == [1] and _candidates("pat") == [1]
    assert _candidates("wh") == [] and _candidates("") == []


_WORDS = st.sampled_from(list(scanner.WORD_STARTS) + [
    "Who", "NEWS", "peer-reviewed", "10.1/x", "the", "pa", "é", "Σ", "\u00a0", "\u2014", "_", "-", ".", "1", " ", "\n",
    "\t", "İ", "ǅ", "ß", "x", "\ud800"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_WORDS, min_size=1, max_size=40))
def test_candidates_hold_every_regex_start_and_only_word_starts(pieces: list[str]) -> None:
    text = "".join(pieces)
    found = _candidates(text)
    lowered = ("\n" + text).lower()
    assert set(_regex_starts(text)) <= set(found)
    assert all(re.match(r"\W", lowered[p - 1]) and re.match(r"\w", lowered[p]) for p in found)
    assert found == sorted(found)


@settings(max_examples=100, deadline=None)
@given(st.lists(_WORDS, min_size=1, max_size=40), st.integers(1, 9))
def test_blocks_find_what_one_pass_finds(pieces: list[str], block: int) -> None:
    """Long texts go in blocks; a start across a block's end (or its look-ahead) is found all the same."""
    text = "".join(pieces)
    whole = _candidates(text)
    with mock.patch.object(word_starts, "BLOCK_CHARS", block):
        assert _candidates(text) == whole
