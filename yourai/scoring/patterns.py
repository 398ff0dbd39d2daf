"""Pattern and constant tables for the citation & provenance scorer, each with its origin.

Every number here is either the anchor's (arosboro/your_ai, see ../shared/reference/anchor_your_ai.md §2)
or ours, and the `origin` column says which and why. `score.py` holds the arithmetic.
`scanner.py` compiles them all into ONE alternation, walked once per document; keyword hits are
classified by a dictionary lookup on the matched text, so adding a keyword costs a table row, not
another pass over the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from yourai.formula import AUTHORITY_RANGE

# ---------------------------------------------------------------- keyword tables


@dataclass(frozen=True)
class Keyword:
    """One word or phrase the scorer recognises, and what a hit means."""

    phrase: str  # lower-case unless case_sensitive; single spaces match any whitespace run
    family: str  # "institution" | "consensus" | "primary" | "type" (type-only evidence)
    weight: float = 0.0  # institutional weight (institution family only)
    evidence_type: str | None = None  # the provenance type a hit adds to
    case_sensitive: bool = False
    origin: str = "anchor"


def _kw(phrases: str, family: str, evidence_type: str | None = None, weight: float = 0.0,
        origin: str = "anchor", case_sensitive: bool = False) -> list[Keyword]:
    """Expand a '|'-separated phrase list into Keyword rows that share one meaning."""
    return [Keyword(p.strip(), family, weight, evidence_type, case_sensitive, origin)
            for p in phrases.split("|") if p.strip()]


_PLURAL = "ours: plural forms (anchor matches singular only, missing 'observations')"
_ACRONYM = "ours: upper-case acronym only (anchor's substring 'who' matched 'whole')"

# Institutional markers: anchor weights, word-bounded (anchor: substring), max over hits.
INSTITUTION_KEYWORDS: list[Keyword] = [
    *_kw("lancet|new england journal of medicine", "institution", "academic_paper", 0.35),
    *_kw("NEJM|WHO|CDC|FDA|NIH", "institution", "government", 0.30, _ACRONYM, True),
    *_kw("world health organization|centers for disease control|food and drug administration"
         "|national institutes of health|national institute of health",
         "institution", "government", 0.30, "ours: spelled-out form of the anchor's acronym"),
    *_kw("government|governments", "institution", "government", 0.25),
    *_kw("official", "institution", "government", 0.20),
    *_kw("university|universities", "institution", "academic_paper", 0.20),
    *_kw("institute|academy", "institution", "academic_paper", 0.18),
    *_kw("journal|peer-reviewed|peer reviewed|proceedings", "institution", "academic_paper", 0.15),
    *_kw("journals", "institution", "academic_paper", 0.15, _PLURAL),
    *_kw("wikipedia", "institution", "wiki", 0.10),
    *_kw("news", "institution", "news", 0.08),
    *_kw("media", "institution", "news", 0.08),
    *_kw("social media", "institution", "blog", 0.05),
    *_kw("blog|blogs", "institution", "blog", 0.05),
]

# Consensus phrases: the anchor's 12, now word-bounded (anchor: substring).
CONSENSUS_KEYWORDS: list[Keyword] = _kw(
    "widely accepted|experts agree|scientific consensus|established fact|well-established|"
    "well established|mainstream view|generally accepted|overwhelming evidence|settled science|"
    "according to experts|studies show|research confirms", "consensus")

# Primary-source markers: the anchor's 28 (word-bounded there too) plus plurals.
PRIMARY_KEYWORDS: list[Keyword] = [
    *_kw("patent|patents", "primary", "patent"),
    *_kw("lab notebook|laboratory notebook|experiment|experimental", "primary", "lab_notebook"),
    *_kw("experiments", "primary", "lab_notebook", origin=_PLURAL),
    *_kw("measurement|observation", "primary", "measurement"),
    *_kw("measurements|observations", "primary", "measurement", origin=_PLURAL),
    *_kw("field notes|specimen", "primary", "field_observation"),
    *_kw("specimens", "primary", "field_observation", origin=_PLURAL),
    *_kw("original research|firsthand|first-hand|primary source|original document|"
         "manuscript|archive|archival|photograph|scan|facsimile|sample", "primary", "archive"),
    *_kw("manuscripts|archives|photographs", "primary", "archive", origin=_PLURAL),
    *_kw("oral history|interview|correspondence|letter|diary|journal entry|logbook",
         "primary", "oral_history"),
    *_kw("interviews|letters|diaries", "primary", "oral_history", origin=_PLURAL),
]

_TYPE_ONLY = "anchor: keyword family for the evidence-type distribution"
# Words that show what kind of evidence a text rests on without being primary markers.
TYPE_KEYWORDS: list[Keyword] = [
    *_kw("apparatus|measured|weighed|thermometer|barometer|microscope", "type", "measurement",
         origin="ours: period lab vocabulary for the measurement family"),
    *_kw("observed|fieldwork|field work|expedition|collected", "type", "field_observation",
         origin="ours: field-report vocabulary (Bureau of Ethnology reports)"),
    *_kw("communicated|informant|informants", "type", "oral_history",
         origin="ours: 'communicated by' is how early Phil. Trans. papers cite"),
    *_kw("abstract|introduction|methods|results|discussion|conclusion|conclusions|references|"
         "et al", "type", "academic_paper", origin=_TYPE_ONLY),
    *_kw("textbook|handbook|encyclopedia|encyclopaedia|chapter", "type", "textbook",
         origin=_TYPE_ONLY),
    *_kw("newspaper|reporter|journalist|press release", "type", "news", origin=_TYPE_ONLY),
    *_kw("wiki", "type", "wiki", origin=_TYPE_ONLY),
    *_kw("agency|federal|ministry|department of", "type", "government", origin=_TYPE_ONLY),
    *_kw("blogger|posted by|tweet|tweets", "type", "blog", origin=_TYPE_ONLY),
]

ALL_KEYWORDS: list[Keyword] = [*INSTITUTION_KEYWORDS, *CONSENSUS_KEYWORDS, *PRIMARY_KEYWORDS,
                               *TYPE_KEYWORDS]

# The 12 provenance evidence types (anchor: 12 keyword families; we name ours explicitly).
EVIDENCE_TYPES: tuple[str, ...] = (
    "patent", "lab_notebook", "measurement", "field_observation", "archive", "oral_history",
    "academic_paper", "textbook", "news", "wiki", "government", "blog",
)


def keyword_lookup(keywords: list[Keyword]) -> tuple[dict[str, list[Keyword]], dict[str, list[Keyword]]]:
    """Index keywords by their normalised text: (case-insensitive table, case-sensitive table)."""
    folded: dict[str, list[Keyword]] = {}
    exact: dict[str, list[Keyword]] = {}
    for kw in keywords:
        table = exact if kw.case_sensitive else folded
        table.setdefault(kw.phrase if kw.case_sensitive else kw.phrase.lower(), []).append(kw)
    return folded, exact


# ---------------------------------------------------------------- structured patterns


@dataclass(frozen=True)
class StructuredPattern:
    """A citation/provenance form that needs a real regex rather than a keyword.

    `lead` is the pattern's first character (a literal or a one-character class) kept outside
    the named group so that sre can reject a position with one comparison; `boundary` puts the
    pattern behind a shared `\b`. The full pattern is `lead + body`.
    """

    name: str  # named group in the combined regex
    lead: str
    body: str
    family: str  # "citation" | "institution" | "type"
    evidence_type: str | None
    origin: str
    boundary: bool = False

    @property
    def regex(self) -> str:
        """The stand-alone pattern (with its word boundary when it needs one)."""
        return (r"\b" if self.boundary else "") + self.lead + self.body


_YEAR = r"(?:1[5-9]\d\d|20\d\d)"
_CAPITAL = r"[A-ZÀ-ÖØ-Þ]"  # case-aware: an author name starts with a capital
_AUTHOR = _CAPITAL + r"[^\W\d_'’\-]*(?:['’\-][^\W\d_]+)*"  # van't Hoff, O'Brien, Müller-Lyer
_ACADEMIC = "academic_paper"
_URL_TAIL = r"[^\s\"<>|\]}]+"
_LINE_START = r"\n"  # the scan runs over "\n" + text, so every line (the first too) starts after \n

STRUCTURED_PATTERNS: list[StructuredPattern] = [
    StructuredPattern("numbered_ref", r"\[", r"\d{1,4}(?:\s*[-–—,]\s*\d{1,4})*\]", "citation",
                      _ACADEMIC, "anchor: [n]; ours: ranges and lists [3–5], [1, 4]"),
    StructuredPattern("bracket_author_year", r"\[", rf"{_CAPITAL}[^\[\]\n]{{0,80}}?\(?{_YEAR}[a-z]?\)?\]",
                      "citation", _ACADEMIC, "anchor: [Word YYYY]; ours: multi-word names"),
    StructuredPattern("footnote_markdown", r"\[", r"\^\w{1,12}\]", "citation", _ACADEMIC,
                      "ours: markdown footnote [^n]"),
    StructuredPattern("author_year", r"\(",
                      rf"(?:e\.g\.,?\s+|see\s+)?{_AUTHOR}(?:\s+(?:and|&)\s+{_AUTHOR})?"
                      rf"(?:\s+et\s+al\.?)?,?\s+{_YEAR}[a-z]?"
                      rf"(?:;\s*{_CAPITAL}[^;()\n]{{0,60}}?\s{_YEAR}[a-z]?)*\)",
                      "citation", _ACADEMIC,
                      "anchor: (Word, YYYY), (Word et al., YYYY); ours: capitalised author, "
                      "'and'/'&' pairs, ';'-separated lists counted per item"),
    StructuredPattern("ref_tag", "<", r"ref(?=[\s>/])[^>]{0,300}>", "citation", "wiki",
                      "ours: wikitext <ref> and <ref name=… />"),
    StructuredPattern("footnote_sup", "<", r"sup>\s*\[?\d{1,4}\]?\s*</sup>", "citation", _ACADEMIC,
                      "ours: HTML footnote <sup>n</sup>"),
    StructuredPattern("cite_template", r"\{", r"\{\s*(?:[Cc]ite|[Cc]itation)\b[ _]?(?P<cite_kind>\w*)",
                      "citation", "wiki", "ours: wikitext {{cite …}} / {{citation …}}"),
    StructuredPattern("footnote_wiki", r"\{", r"\{\s*(?:[Ss]fn|[Ee]fn|[Hh]arv(?:nb)?)\s*\|",
                      "citation", "wiki", "ours: wikitext {{sfn|…}}, {{efn|…}}, {{harv|…}}"),
    StructuredPattern("reference_section", _LINE_START,
                      r"[ \t]*(?:#{1,6}|={2,6})?[ \t]*(?:References|REFERENCES|Bibliography|"
                      r"BIBLIOGRAPHY|Works [Cc]ited|Literature [Cc]ited|Notes and references)"
                      r"[ \t]*=*[ \t]*\r?$", "citation", _ACADEMIC,
                      "ours: a reference-list heading (markdown, wikitext or plain line)"),
    StructuredPattern("bibliography_line", _LINE_START,
                      rf"[ \t]*\[?\d{{1,4}}[.\])][ \t]+{_CAPITAL}[^\n]{{0,160}}?\(?{_YEAR}[a-z]?\)?"
                      r"(?=[\s.,;:)])", "citation", _ACADEMIC,
                      "anchor: 'N. Author, … YYYY' lines; ours: case-aware, stops at the year so "
                      "the rest of the line is still scanned"),
    StructuredPattern("ibid", "[Ii]", r"bid\b\.?", "citation", _ACADEMIC, "anchor: ibid", True),
    StructuredPattern("op_cit", "[Oo]", r"p\.\s?cit\b\.?", "citation", _ACADEMIC,
                      "anchor: op. cit", True),
    StructuredPattern("loc_cit", "[Ll]", r"oc\.\s?cit\b\.?", "citation", _ACADEMIC,
                      "anchor: loc. cit", True),
    StructuredPattern("doi", "1", r"0\.\d{4,9}/" + _URL_TAIL, "citation", _ACADEMIC,
                      "ours: a DOI is a resolvable citation", True),
    StructuredPattern("url", "h", r"ttps?://" + _URL_TAIL, "citation", None,
                      "ours: a URL is a citation; a .gov/.edu host also counts as institutional",
                      True),
    StructuredPattern("www_url", "w", r"ww\." + _URL_TAIL, "citation", None,
                      "ours: a bare www. address, as url", True),
    StructuredPattern("patent_number", "[Pp]", r"at(?:ent)?\.?\s+[Nn]o\.?\s*\d[\d,]{4,}", "type",
                      "patent", "anchor: patent-number pattern", True),
    StructuredPattern("journal_nature", "N", r"ature(?=,?\s+\d)", "institution", _ACADEMIC,
                      "ours: 'Nature' only as a journal citation (followed by a volume); "
                      "anchor's substring hit 'the nature of'", True),
    StructuredPattern("journal_science", "S", r"cience(?=,?\s+\d)", "institution", _ACADEMIC,
                      "ours: 'Science' only as a journal citation; anchor's substring hit "
                      "'conscience'", True),
    StructuredPattern("published_in_journal", "[PpRrAa]",
                      r"(?:ublished|eported|ppeared)\s+in\s+(?:the\s+journal\s+|[Tt]he\s+)?"
                      r"(?:Nature|Science|Lancet|New\s+England\s+Journal\s+of\s+Medicine|NEJM)\b(?!,?\s+\d)",
                      "institution", _ACADEMIC, "ours: 'published in Nature / Science / The Lancet' names the "
                      "journal without a volume number (with one, journal_nature/_science match)", True),
]

# Institutional weights for structured hits (by pattern name, or by URL host).
STRUCTURED_INSTITUTION_WEIGHTS: dict[str, float] = {
    "journal_nature": 0.35,  # anchor: nature 0.35
    "journal_science": 0.35,  # anchor: science 0.35
    "published_in_journal": 0.35,  # anchor: nature / science / lancet 0.35
}
GOV_HOST_WEIGHT = 0.25  # anchor: ".gov" 0.25
EDU_HOST_WEIGHT = 0.20  # ours: a .edu/.ac.xx host carries the anchor's "university" weight
GOV_HOST_RE = re.compile(r"^(?:https?://)?[^/\s]*\.(?:gov|mil)(?:\.[a-z]{2})?(?:[/:?#]|$)", re.I)
EDU_HOST_RE = re.compile(r"^(?:https?://)?[^/\s]*\.(?:edu|ac\.[a-z]{2})(?:[/:?#]|$)", re.I)

# {{cite <kind>}} → provenance type (ours: the template names its source kind)
CITE_KIND_TYPES: dict[str, str] = {
    "news": "news", "journal": _ACADEMIC, "conference": _ACADEMIC, "thesis": _ACADEMIC,
    "book": "textbook", "encyclopedia": "textbook", "report": "government", "press": "news",
    "interview": "oral_history", "patent": "patent",
}

# An author-year parenthesis with ';' lists several works: count each (ours).
AUTHOR_YEAR_ITEM_RE = re.compile(_YEAR + r"[a-z]?(?=\s*[;)])")

KEYWORDS_FOLDED, KEYWORDS_EXACT = keyword_lookup(ALL_KEYWORDS)
STRUCTURED_BY_NAME: dict[str, StructuredPattern] = {p.name: p for p in STRUCTURED_PATTERNS}
WHITESPACE_RE = re.compile(r"\s+")

# ---------------------------------------------------------------- year detection

# anchor: "copyright|©|published|written YYYY", else any 18xx–202x year in the first 2,000 chars
YEAR_HEAD_CHARS = 2000
YEAR_STATEMENT_RE = re.compile(rf"(?:[Cc]opyright|©|\([Cc]\)|[Pp]ublished|[Ww]ritten)\D{{0,20}}?\b({_YEAR})\b")
YEAR_BARE_RE = re.compile(r"\b(1[89]\d\d|20[0-2]\d)\b")

# ---------------------------------------------------------------- score constants


@dataclass(frozen=True)
class Constant:
    """A named number with the rule that produced it."""

    value: float
    origin: str


AUTHORITY = {
    "base": Constant(0.30, "anchor: starting authority before evidence"),
    "max": Constant(AUTHORITY_RANGE[1], "anchor/loss contract (yourai.formula): w_auth ≤ 0.99 keeps ln(1 − w) finite"),
    "citation_log_scale": Constant(0.05, "anchor: 0.05·log10(count + 1)"),
    "citation_cap": Constant(0.25, "anchor: citations add at most 0.25"),
    "institution_cap": Constant(0.35, "anchor: max institutional weight, capped 0.35"),
    "consensus_per_hit": Constant(0.10, "anchor: 0.10 per consensus phrase"),
    "consensus_cap": Constant(0.20, "anchor: consensus adds at most 0.20"),
    "primary_per_hit": Constant(0.15, "anchor: −0.15 per primary marker"),
    "primary_cap": Constant(0.45, "anchor: primary markers subtract at most 0.45"),
    "age_pre_modern": Constant(-0.15, "anchor: before 1970"),
    "age_modern": Constant(0.15, "anchor: from 1995"),
}
ENTROPY = {
    "base_pre_modern": Constant(5.5, "anchor: base entropy before 1970"),
    "base_mid": Constant(3.5, "anchor: base entropy 1970–1994"),
    "base_modern": Constant(1.5, "anchor: base entropy from 1995"),
    "base_unknown_year": Constant(3.0, "ours: the anchor's 'unknown' prior; the anchor used the "
                                       "modern 1.5, treating undated text as modern"),
    "primary_bonus_per_hit": Constant(0.5, "anchor"),
    "primary_bonus_cap": Constant(2.0, "anchor"),
    "variety_per_type": Constant(0.3, "anchor: per evidence type present"),
    "variety_cap": Constant(1.5, "anchor"),
    "institution_penalty": Constant(1.5, "anchor: −1.5 × institutional score"),
    "consensus_penalty_per_hit": Constant(0.4, "anchor"),
    "consensus_penalty_cap": Constant(1.0, "anchor"),
}
ERA_PRE_MODERN_BEFORE = 1970  # anchor: "before 1970"
ERA_MODERN_FROM = 1995  # anchor: "+0.15 from 1995"
# anchor: shorter documents get a flat neutral (0.50, 3.0). Ours: they are scored on their evidence
# (a 1923 patent number is primary evidence at any length) and flagged `low_confidence`.
SHORT_TEXT_CHARS = 50
PRIOR_BLEND = 0.70  # anchor: 70 % source-type prior, 30 % text
SOURCE_TYPE_EVIDENCE_HITS = 1  # ours: a declared source_type counts as one hit of its family


@dataclass(frozen=True)
class Prior:
    """A source type's (authority, entropy) prior and the evidence family it implies."""

    authority_weight: float
    provenance_entropy_bits: float
    evidence_type: str | None
    origin: str


_A = "anchor"
SOURCE_TYPE_PRIORS: dict[str, Prior] = {
    "patent_pre1970": Prior(0.05, 7.0, "patent", _A),
    "classical_philosophy": Prior(0.08, 7.5, "archive", _A),
    "historical_book": Prior(0.10, 6.0, "textbook", _A),
    "classical_literature": Prior(0.10, 6.5, "archive", _A),
    "classical_rhetoric": Prior(0.12, 6.0, "archive", _A),
    "historical_newspaper": Prior(0.15, 6.0, "news", _A),
    "preprint": Prior(0.50, 3.5, "academic_paper", _A),
    "logic_training": Prior(0.55, 3.2, None, _A),
    "academic_paper": Prior(0.60, 3.0, "academic_paper", _A),
    "news_modern": Prior(0.75, 1.5, "news", _A),
    "medical_guidelines": Prior(0.85, 1.2, "government", _A),
    "wiki": Prior(0.90, 1.0, "wiki", _A),
    "government": Prior(0.95, 0.5, "government", _A),
    # our curated data contract's types, mapped onto the anchor's nearest row
    "patent": Prior(0.05, 7.0, "patent", "ours: = anchor patent_pre1970"),
    "lab_notebook": Prior(0.05, 7.0, "lab_notebook", "ours: raw primary record, as a patent"),
    "letter": Prior(0.10, 6.5, "oral_history", "ours: first-hand correspondence, as classical_literature"),
    "journal_paper": Prior(0.60, 3.0, "academic_paper", "ours: = anchor academic_paper"),
    "encyclopedia": Prior(0.90, 1.0, "textbook", "ours: = anchor wiki (compiled consensus)"),
    "news": Prior(0.75, 1.5, "news", "ours: = anchor news_modern"),
    "blog": Prior(0.30, 2.5, "blog", "ours: opinion, neither vetted consensus nor primary record"),
}
UNKNOWN_SOURCE_TYPE = "unknown"  # anchor's (0.50, 3.0) row: means "no prior", so no blend
