"""The scanner (yourai.scoring.scanner): its two fast streams find exactly what the one alternation finds."""

from __future__ import annotations

from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yourai.scoring import patterns as P
from yourai.scoring import scanner, score


def _reference(padded: str) -> list[tuple[int, int, str | None]]:
    return [(m.start(), m.end(), m.lastgroup) for m in scanner.COMBINED_RE.finditer(padded)]


def _streams(padded: str) -> list[tuple[int, int, str | None]]:
    return [(m.start(), m.end(), m.lastgroup) for m in scanner.combined_matches(padded)]


def test_folded_keywords_are_plain_lower_case_ascii() -> None:
    """The folded stream runs on text.lower(): a phrase with a capital or non-ASCII letter would never match."""
    for keyword in P.ALL_KEYWORDS:
        if not keyword.case_sensitive:
            assert keyword.phrase == keyword.phrase.lower() and keyword.phrase.isascii(), keyword.phrase


def test_no_folded_phrase_starts_like_an_exact_keyword() -> None:
    """Exact keywords sit in the bounded stream, which wins ties; the alternation tries folded first."""
    exact = [k.phrase.lower() for k in P.ALL_KEYWORDS if k.case_sensitive]
    folded = [k.phrase for k in P.ALL_KEYWORDS if not k.case_sensitive]
    assert not [(f, e) for f in folded for e in exact if f.startswith(e)]


def test_literal_starts_are_the_prefixes_every_match_begins_with() -> None:
    assert scanner.literal_starts(r"[PpRrAa](?:ublished|eported)\s+in") == {
        a + b for a in "pra" for b in ("ublished", "eported")}
    assert scanner.literal_starts(r"N(?P<n>ature(?=,?\s+\d))") == {"nature"}
    assert scanner.literal_starts(r"h(?P<url>ttps?://)") == {"http"}
    assert scanner.literal_starts(r"1(?P<doi>0\.\d{4,9}/)") == {"10."}
    assert scanner.literal_starts(r"[A-Z]bc") == {""}  # a range is no literal start


def test_every_bounded_match_starts_with_one_of_its_verify_prefixes() -> None:
    """The word stream only checks bounded patterns where a prefix matched: the prefixes must be necessary."""
    samples = ["Ibid.", "ibid", "op. cit.", "Op.cit", "loc. cit", "10.1000/x", "https://a.gov", "http://b",
               "www.x.org", "Patent No. 123,456", "pat. no 12345", "Nature, 12", "Science 3", "Published in Nature",
               "reported in the Lancet", "Appeared in the New England Journal of Medicine", "NEJM", "WHO", "CDC",
               "FDA", "NIH"]
    prefixes = scanner.bounded_prefixes()
    assert len(prefixes) > 10 and all(len(prefix) >= 3 for prefix in prefixes)
    for sample in samples:
        match = scanner.BOUNDED_AT_RE.match(sample)
        assert match is not None, sample
        assert any(match.group().lower().startswith(prefix) for prefix in prefixes), sample
        assert scanner.WORD_RE.match("\n" + sample.lower()) is not None, sample  # the prefilter finds its start


def test_the_word_prefilter_keeps_only_the_shortest_start_of_each_family() -> None:
    """A word start needs one phrase to fit; 'patent' adds nothing where 'pat' is already a start."""
    assert scanner._minimal_prefixes({"pat", "patent", "journal", "journals", "journal entry", "wiki", "who"}) == [
        "journal", "pat", "who", "wiki"]


def test_every_folded_keyword_start_is_a_prefilter_start() -> None:
    """The prefilter may find more word starts than hold a match, never fewer (the trie matches at the word)."""
    for keyword in P.ALL_KEYWORDS:
        padded = "\n" + keyword.phrase.lower()
        assert scanner.WORD_RE.match(padded) is not None, keyword.phrase


_PIECES = st.sampled_from([k.phrase for k in P.ALL_KEYWORDS] + [
    "[12]", "(Smith, 2001)", "[Blackburn 2004]", "\nReferences\n", "\n1. Smith J. Title 1999.", "Ibid.", "op. cit",
    "https://www.cdc.gov/x", "www.nih.gov", "10.1000/xyz", "Patent No. 123,456", "Nature 12", "Science, 3",
    "<ref name=a/>", "{{cite news|x}}", "{{sfn|A|2000}}", "<sup>3</sup>", "WHO", "Who", "İstanbul", "\u212aelvin",
    "published in Nature", "Reported in the Lancet", "appeared in Science", "Loc. cit.", "OP. CIT", "HTTP://x",
    "who", "nih", "Nature", "pat", "NEWS", "News", "x", "-", "_", " ", "\n", "  ", ".", "é", "É", "ǅ", "ß", "Σ", "1", "(", "[", "{", "<"])


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES, min_size=1, max_size=30))
def test_streams_find_exactly_what_the_combined_regex_finds(pieces: list[str]) -> None:
    padded = "\n" + "".join(pieces)
    assert _streams(padded) == _reference(padded)


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES | st.sampled_from(["\u00a0", "\u2014", "\t", "et\u00a0al", "et \t al", "\u00e9news"]),
                min_size=1, max_size=30))
def test_streams_with_numpy_word_starts_find_what_the_combined_regex_finds(pieces: list[str]) -> None:
    """Short texts take WORD_RE; here every text takes word_starts.candidates, as long ones do."""
    padded = "\n" + "".join(pieces)
    with mock.patch.object(scanner, "VECTORIZED_FROM", 0):
        assert _streams(padded) == _reference(padded)


def test_texts_that_lowercase_unsafely_take_the_combined_regex() -> None:
    for text in ("\nİ news of the WHO", "\n\u212aelvin's news"):
        assert _streams(text) == _reference(text)


@pytest.mark.shared
@pytest.mark.parametrize("vectorized_from", [0, scanner.VECTORIZED_FROM, 10**9], ids=["numpy", "by length", "regex"])
def test_streams_equal_the_combined_regex_on_the_real_corpora(shared_dir, monkeypatch, vectorized_from: int) -> None:
    from yourai.notebook.scoring_tables import load_corpora

    monkeypatch.setattr(scanner, "VECTORIZED_FROM", vectorized_from)
    for records in load_corpora(shared_dir / "data" / "corpora").values():
        for record in records[::5]:
            padded = "\n" + record["text"]
            assert _streams(padded) == _reference(padded), record.get("id")


@pytest.mark.shared
def test_scores_equal_those_of_the_single_alternation_scan(shared_dir, monkeypatch) -> None:
    """Old (one combined finditer) vs new scan, whole Score objects, on a sample of every ../shared corpus."""
    from yourai.notebook.scoring_tables import load_corpora

    records = [r for rs in load_corpora(shared_dir / "data" / "corpora").values() for r in rs[::9]]
    new = [score(r["text"], r) for r in records]
    monkeypatch.setattr(scanner, "combined_matches", lambda padded: scanner.COMBINED_RE.finditer(padded))
    old = [score(r["text"], r) for r in records]
    assert new == old and len(records) > 300
