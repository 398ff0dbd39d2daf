"""The scorer's one left-to-right pass: every pattern of `patterns.py` in one alternation, walked fast.

`COMBINED_RE` is the definition: one alternation of the structured patterns and the keyword
tries, leftmost match first, no overlaps. `combined_matches` yields exactly its matches from three
faster regexes (see `build_scan_regexes`), which is what `score.scan` walks.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from yourai.scoring.patterns import ALL_KEYWORDS, STRUCTURED_PATTERNS


def _trie_branches(phrases: list[str], case_sensitive: bool) -> list[str]:
    """Top-level branches of a prefix trie; each starts with a one-character test sre can skip on."""
    trie: dict = {}
    for phrase in phrases:
        node = trie
        for ch in phrase:
            node = node.setdefault(ch, {})
        node[""] = {}
    return [_trie_char(ch, case_sensitive) + _trie_node(child, case_sensitive)
            for ch, child in sorted(trie.items()) if ch]


def _trie_char(ch: str, case_sensitive: bool) -> str:
    """One trie character: a space matches any whitespace run, letters fold case via a class."""
    if ch == " ":
        return r"\s+"
    if not case_sensitive and ch.lower() != ch.upper():
        return f"[{ch.lower()}{ch.upper()}]"
    return re.escape(ch)


def _trie_node(node: dict, case_sensitive: bool) -> str:
    """Emit a trie node, longer continuations first so the longest phrase wins."""
    branches = [_trie_char(ch, case_sensitive) + _trie_node(child, case_sensitive)
                for ch, child in sorted(node.items()) if ch]
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    return f"(?:{body})?" if "" in node else body


def _regex_parts() -> tuple[list[str], list[str], list[str], list[str]]:
    """(free structured, word-bounded structured, case-folded keyword, exact keyword) branches, in priority order."""
    folded = [kw.phrase for kw in ALL_KEYWORDS if not kw.case_sensitive]
    exact = [kw.phrase for kw in ALL_KEYWORDS if kw.case_sensitive]
    free = [f"{p.lead}(?P<{p.name}>{p.body})" for p in STRUCTURED_PATTERNS if not p.boundary]
    bounded = [f"{p.lead}(?P<{p.name}>{p.body})" for p in STRUCTURED_PATTERNS if p.boundary]
    return (free, bounded, [b + r"(?![\w-])" for b in _trie_branches(folded, False)],
            [b + r"\b" for b in _trie_branches(exact, True)])


def build_combined_regex() -> re.Pattern[str]:
    """Every pattern in ONE alternation: the definition of what a scan finds (leftmost first, no overlaps).

    A keyword hit has no group (`lastgroup is None`) and is classified by lookup. `scan` walks three
    faster regexes (below) whose merged matches equal this one's; it is used as is when the
    text cannot be lowered safely.
    """
    free, bounded, folded, exact = _regex_parts()
    return re.compile("|".join(free) + r"|\b(?:" + "|".join(bounded + folded + exact) + ")", re.MULTILINE)


def _lead_chars(lead: str) -> str:
    """The characters a one-character lead (`N`, `1`, `[Pp]`) accepts."""
    return lead[1:-1] if lead.startswith("[") else lead


def _bounded_regex() -> re.Pattern[str]:
    """`\\b(?:bounded structured | exact keywords)`, rewritten so sre can skip to candidate characters.

    Every branch starts with a word character, so the regex opens with the class of all first
    characters (sre's search then skips every other position in C), checks the boundary behind
    it (`(?<!\\w\\w)`: the character before the lead is no word character), and lets each branch
    claim its lead by a one-character look-behind; branch order, hence priority, is unchanged.
    """
    exact = [kw.phrase for kw in ALL_KEYWORDS if kw.case_sensitive]
    branches = [(p.lead, f"(?P<{p.name}>{p.body})") for p in STRUCTURED_PATTERNS if p.boundary]
    branches += [(trie[0], trie[1:] + r"\b") for trie in _trie_branches(exact, True)]
    firsts = "".join(dict.fromkeys(ch for lead, _ in branches for ch in _lead_chars(lead)))
    assert all(re.fullmatch(r"\w", ch) for ch in firsts), "a word-bounded pattern must start with a word character"
    body = "|".join(f"(?<=[{_lead_chars(lead)}]){rest}" for lead, rest in branches)
    return re.compile(f"[{firsts}]" + r"(?<!\w\w)(?:" + body + ")")


def build_scan_regexes() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """(free, bounded + exact, folded) regexes; the folded one runs on the lower-cased text.

    Measured on the ../shared corpora (22 MB), one combined alternation ran at ~6 MB/s: sre tries
    the branches at every word boundary, and each case-folding class `[aA]` costs more than a
    literal. Split, the free patterns (leads `[ ( < { \\n`) and the bounded ones skip to their lead
    characters (~80 and ~35 MB/s), and the keyword trie runs as plain lower-case literals on
    `text.lower()` (~25 MB/s). Equivalence: free leads are never word characters and bounded ones
    always are, so at most one stream matches at a position except bounded vs folded, where the
    bounded stream wins as in the alternation; no folded phrase begins with an exact keyword
    (tests/scoring/test_patterns.py checks that, and the merged matches on real text).
    """
    free, _, _, _ = _regex_parts()
    folded_lower = [b + r"(?![\w-])" for b in _trie_branches([kw.phrase for kw in ALL_KEYWORDS
                                                              if not kw.case_sensitive], True)]
    return (re.compile("|".join(free), re.MULTILINE), _bounded_regex(),
            re.compile(r"\b(?:" + "|".join(folded_lower) + ")"))


# Characters whose lower case would change a folded match: U+0130 lowers to two characters, the
# Kelvin sign to ASCII 'k' (checked over all of Unicode). A text holding one is scanned the slow way.
UNSAFE_TO_LOWER = ("\u0130", "\u212a")


COMBINED_RE = build_combined_regex()
FREE_RE, BOUNDED_RE, FOLDED_RE = build_scan_regexes()


def combined_matches(padded: str) -> Iterator[re.Match]:
    """COMBINED_RE.finditer(padded), computed faster: the leftmost match of three streams, then past its end.

    Streams in the alternation's priority order (free, bounded + exact on the text; folded keywords
    on its lower case): at equal starts the earlier stream wins, as the earlier branch would.
    """
    lowered = padded.lower()
    if len(lowered) != len(padded) or any(ch in padded for ch in UNSAFE_TO_LOWER):
        yield from COMBINED_RE.finditer(padded)
        return
    streams = ((FREE_RE, padded), (BOUNDED_RE, padded), (FOLDED_RE, lowered))
    pending = [regex.search(string) for regex, string in streams]
    while True:
        best = None
        for match in pending:
            if match is not None and (best is None or match.start() < best.start()):
                best = match
        if best is None:
            return
        yield best
        end = best.end()
        for index, (regex, string) in enumerate(streams):
            if pending[index] is not None and pending[index].start() < end:
                pending[index] = regex.search(string, end)
