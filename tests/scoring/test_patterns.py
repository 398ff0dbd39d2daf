"""The pattern tables (yourai.scoring.patterns): every structured pattern and keyword is found where it should be,
missed where it should not, carries its origin, and the combined regex is one alternation over all of them."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from texts import FILLER

from yourai.scoring import patterns as P
from yourai.scoring import score


def patterns_in(text: str) -> list[str]:
    """Pattern names (or keyword phrases) the scorer found in `text`."""
    return [e.pattern for e in score(FILLER + text + FILLER).evidence if e.field == "text"]


POSITIVES = [
    ("see [12] here", "numbered_ref"),
    ("shown [3–5] before", "numbered_ref"),
    ("shown [1, 4] before", "numbered_ref"),
    ("as argued (Smith, 2001).", "author_year"),
    ("as argued (Smith et al. 2003).", "author_year"),
    ("as argued (Müller-Lyer and O'Brien, 1999).", "author_year"),
    ("as in [Blackburn and Rowley (2004)].", "bracket_author_year"),
    ("a claim[^3] here", "footnote_markdown"),
    ("a claim<sup>4</sup> here", "footnote_sup"),
    ("a claim{{sfn|Smith|2001}} here", "footnote_wiki"),
    ("Smith, ibid. p. 4", "ibid"),
    ("Smith, op. cit. p. 4", "op_cit"),
    ("Smith, loc. cit. p. 4", "loc_cit"),
    ("doi:10.1371/journal.pbio.0020188 ok", "doi"),
    ("at https://example.org/page ok", "url"),
    ("at www.example.org ok", "www_url"),
    ("fact<ref>Smith 2001</ref> more", "ref_tag"),
    ('fact<ref name="a" /> more', "ref_tag"),
    ("fact{{cite journal |title=x}} more", "cite_template"),
    ("fact{{Citation |title=x}} more", "cite_template"),
    ("\n== References ==\n", "reference_section"),
    ("\n## References\n", "reference_section"),
    ("\n1. Blackburn E, Rowley J (2004) Reason as our guide.\n", "bibliography_line"),
    ("granted as U.S. Pat. No. 1,234,567 to him", "patent_number"),
    ("reported in Nature 405, 123", "journal_nature"),
    ("reported in Science 287: 1", "journal_science"),
    ("the WHO guidance", "WHO"),
    ("the NIH guidance", "NIH"),
    ("the World Health Organization says", "world health organization"),
    ("our observations were", "observations"),
    ("an experimental method", "experimental"),
    ("a laboratory notebook entry", "laboratory notebook"),
    ("it is widely accepted that", "widely accepted"),
    ("it is well-established that", "well-established"),
    ("a peer-reviewed venue", "peer-reviewed"),
]


NEAR_MISSES = [
    ("the whole of it", "WHO"),
    ("who said so", "WHO"),
    ("a matter of conscience", "journal_science"),
    ("the nature of light", "journal_nature"),
    ("Nature is vast", "journal_nature"),
    ("the array[i] value", "numbered_ref"),
    ("as noted (see above)", "author_year"),
    ("as noted (in 2001)", "author_year"),
    ("see [[Link]] there", "bracket_author_year"),
    ("list <references /> here", "ref_tag"),
    ("a {{citeseer}} link", "cite_template"),
    ("a sampled value", "sample"),
    ("experimentally shown", "experimental"),
    ("letterpress printing", "letter"),
    ("patently absurd", "patent"),
    ("studies showed little", "studies show"),
    ("these references below", "reference_section"),
    ("the newsletter", "news"),
    ("a universal law", "university"),
]


@pytest.mark.parametrize("text, pattern", POSITIVES)
def test_pattern_recognised(text: str, pattern: str) -> None:
    assert pattern in patterns_in(text)


@pytest.mark.parametrize("text, pattern", NEAR_MISSES)
def test_near_miss_not_recognised(text: str, pattern: str) -> None:
    assert pattern not in patterns_in(text)


def test_author_year_list_counts_each_work() -> None:
    assert score(FILLER + "(Smith and Jones 2004; Brown, 2005; Lee 2006a)" + FILLER).citation_count == 3


def test_cite_template_kind_sets_evidence_type() -> None:
    result = score(FILLER + "{{cite news |title=x}} and {{cite book |title=y}}" + FILLER)
    assert {"news", "textbook"} <= set(result.source_type_counts)


def test_gov_url_is_citation_and_institution() -> None:
    families = {e.family for e in score(FILLER + "see https://www.cdc.gov/flu" + FILLER).evidence}
    assert families == {"citation", "institution"}


def test_every_pattern_has_an_origin() -> None:
    assert all(p.origin for p in P.STRUCTURED_PATTERNS) and all(k.origin for k in P.ALL_KEYWORDS)
    assert all(k.evidence_type in P.EVIDENCE_TYPES for k in P.ALL_KEYWORDS if k.evidence_type)


def test_every_keyword_phrase_is_reachable_through_the_combined_regex() -> None:
    for keyword in P.ALL_KEYWORDS:
        match = P.COMBINED_RE.search(f"\n{keyword.phrase} ")
        assert match is not None and match.group(0).strip().lower() == keyword.phrase.lower(), keyword.phrase


def test_authority_constants_cap_at_the_formula_bound() -> None:
    from yourai.formula import AUTHORITY_RANGE

    assert P.AUTHORITY["max"].value == AUTHORITY_RANGE[1]


# ---------------------------------------------------------------- the three-stream scan equals the one alternation

SCORE_MODULE = sys.modules["yourai.scoring.score"]  # `yourai.scoring.score` the attribute is the function


def _reference(padded: str) -> list[tuple[int, int, str | None]]:
    return [(m.start(), m.end(), m.lastgroup) for m in P.COMBINED_RE.finditer(padded)]


def _streams(padded: str) -> list[tuple[int, int, str | None]]:
    return [(m.start(), m.end(), m.lastgroup) for m in SCORE_MODULE.combined_matches(padded)]


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


_PIECES = st.sampled_from([k.phrase for k in P.ALL_KEYWORDS] + [
    "[12]", "(Smith, 2001)", "[Blackburn 2004]", "\nReferences\n", "\n1. Smith J. Title 1999.", "Ibid.", "op. cit",
    "https://www.cdc.gov/x", "www.nih.gov", "10.1000/xyz", "Patent No. 123,456", "Nature 12", "Science, 3",
    "<ref name=a/>", "{{cite news|x}}", "{{sfn|A|2000}}", "<sup>3</sup>", "WHO", "Who", "İstanbul", "\u212aelvin",
    "NEWS", "News", "x", "-", "_", " ", "\n", "  ", ".", "é", "É", "ǅ", "ß", "Σ", "1", "(", "[", "{", "<"])


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES, min_size=1, max_size=30))
def test_streams_find_exactly_what_the_combined_regex_finds(pieces: list[str]) -> None:
    padded = "\n" + "".join(pieces)
    assert _streams(padded) == _reference(padded)


def test_texts_that_lowercase_unsafely_take_the_combined_regex() -> None:
    for text in ("\nİ news of the WHO", "\n\u212aelvin's news"):
        assert _streams(text) == _reference(text)


@pytest.mark.shared
def test_streams_equal_the_combined_regex_on_the_real_corpora(shared_dir) -> None:
    from yourai.notebook.scoring_tables import load_corpora

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
    monkeypatch.setattr(SCORE_MODULE, "combined_matches", lambda padded: P.COMBINED_RE.finditer(padded))
    old = [score(r["text"], r) for r in records]
    assert new == old and len(records) > 300
