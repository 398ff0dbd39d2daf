"""The pattern tables (yourai.scoring.patterns): every structured pattern and keyword is found where it should be,
missed where it should not, carries its origin, and the combined regex is one alternation over all of them."""

from __future__ import annotations

import pytest
from texts import FILLER

from yourai.scoring import patterns as P
from yourai.scoring import scanner
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
    ("it was published in Nature.", "published_in_journal"),
    ("it appeared in the journal Science", "published_in_journal"),
    ("the society's journals", "journals"),
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
    ("published in natural history", "published_in_journal"),
    ("interested in science fairs", "published_in_journal"),
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
        match = scanner.COMBINED_RE.search(f"\n{keyword.phrase} ")
        assert match is not None and match.group(0).strip().lower() == keyword.phrase.lower(), keyword.phrase


def test_authority_constants_cap_at_the_formula_bound() -> None:
    from yourai.formula import AUTHORITY_RANGE

    assert P.AUTHORITY["max"].value == AUTHORITY_RANGE[1]
