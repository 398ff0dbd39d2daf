"""The scorer's one left-to-right pass: every pattern of `patterns.py` in one alternation, walked fast.

`COMBINED_RE` is the definition: one alternation of the structured patterns and the keyword
tries, leftmost match first, no overlaps. `combined_matches` yields exactly its matches from two
faster streams (see `build_scan_regexes`), which is what `score.scan` walks.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Iterator

try:  # the regex parser behind `re`: public as sre_parse until 3.11, re._parser since
    from re import _constants as _sre, _parser as _sre_parse
except ImportError:  # Python 3.10
    import sre_constants as _sre  # type: ignore[no-redef]
    import sre_parse as _sre_parse  # type: ignore[no-redef]

from yourai.scoring import word_starts
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


def _literal_starts(items: list, limit: int = 64) -> set[str]:
    """Lower-case strings one of which every match of the parsed pattern `items` starts with.

    Literals and one-letter classes (`[Pp]`) extend every start; a group or an alternation adds its
    own starts and ends the walk, as does anything else (a repeat, a class of many characters, a
    look-around), so each start is a necessary prefix, never a guess. `limit` caps the set.
    """
    starts = {""}
    for op, arg in items:
        if op is _sre.LITERAL:
            chars = {chr(arg).lower()}
        elif op is _sre.IN and all(kind is _sre.LITERAL for kind, _ in arg):
            chars = {chr(code).lower() for _, code in arg}
        elif op is _sre.SUBPATTERN:
            return {a + b for a in starts for b in _literal_starts(list(arg[3]), limit)}
        elif op is _sre.BRANCH:
            inner = set().union(*(_literal_starts(list(branch), limit) for branch in arg[1]))
            return {a + b for a in starts for b in inner} if len(starts) * len(inner) <= limit else starts
        else:
            return starts
        if len(starts) * len(chars) > limit:
            return starts
        starts = {a + c for a in starts for c in chars}
    return starts


def literal_starts(regex: str) -> set[str]:
    """The lower-case prefixes a match of `regex` must start with (see `_literal_starts`)."""
    return _literal_starts(list(_sre_parse.parse(regex)))


def _bounded_branches() -> list[str]:
    """Word-bounded structured patterns, then exact keywords: the alternation's order at one position."""
    exact = [kw.phrase for kw in ALL_KEYWORDS if kw.case_sensitive]
    return ([f"{p.lead}(?P<{p.name}>{p.body})" for p in STRUCTURED_PATTERNS if p.boundary]
            + [b + r"\b" for b in _trie_branches(exact, True)])


def bounded_prefixes() -> set[str]:
    """The lower-case prefixes that mark where a word-bounded pattern or exact keyword may match."""
    prefixes = set().union(*(literal_starts(branch) for branch in _bounded_branches()))
    assert all(prefix and re.fullmatch(r"\w", prefix[0]) for prefix in prefixes), "a bounded pattern needs a literal start"
    return prefixes


def _minimal_prefixes(phrases: set[str]) -> list[str]:
    """The phrases no other phrase is a prefix of: a word start needs only the shortest that fits."""
    return sorted(p for p in phrases if not any(q != p and p.startswith(q) for q in phrases))


def word_start_phrases() -> tuple[str, ...]:
    """The shortest lower-case starts a word-led match needs: folded keywords and the bounded prefixes."""
    folded = {kw.phrase for kw in ALL_KEYWORDS if not kw.case_sensitive}
    return tuple(_minimal_prefixes(folded | bounded_prefixes()))


def build_scan_regexes() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """(free, word, bounded-at, folded-at): the regexes `combined_matches` walks instead of the alternation.

    Measured on the ../shared corpora (22 MB), one combined alternation ran at ~6 MB/s: sre tries
    its branches at every word boundary, and a case-folding class `[aA]` costs more than a literal.
    The free patterns (leads `[ ( < { \\n`, never word characters) run on the text and skip to
    their leads (~200 MB/s). Everything that starts a word is found on `text.lower()` by ONE
    prefilter (word): a non-word character, then a trie of the shortest lower-case starts any
    word-led match must have — each folded keyword (its spaces as `\\s+`) and the prefixes every
    word-bounded pattern and exact keyword begins with (`literal_starts`: `ibid`, `http`, `nature`,
    `who`, …). Only at such a word start are the real patterns tried, in the alternation's order:
    the case-sensitive ones on the text (bounded-at), then the folded trie (folded-at).

    Why a prefilter and not the folded trie itself: on these corpora sre enters the pattern at
    each of ~4.9 M non-word characters (~0.25 s of the 22 MB's scan, with nothing to match), and
    the word regex's cost beyond that was its alternatives — the prefix group and the trie with
    its optional endings and look-aheads, 0.45 s more. The one trie of minimal starts costs 0.22 s
    beyond the entries and finds ~47,000 word starts, of which ~43,000 hold a match. Texts of
    `VECTORIZED_FROM` characters or more get their word starts from numpy instead (word_starts.py).
    """
    free, _, _, _ = _regex_parts()
    folded = {kw.phrase for kw in ALL_KEYWORDS if not kw.case_sensitive}
    folded_lower = [b + r"(?![\w-])" for b in _trie_branches(sorted(folded), True)]
    starts = _trie_branches(list(word_start_phrases()), True)
    word = re.compile(r"\W(?:" + "|".join(starts) + ")")
    return (re.compile("|".join(free), re.MULTILINE), word, re.compile("(?:" + "|".join(_bounded_branches()) + ")"),
            re.compile("(?:" + "|".join(folded_lower) + ")"))


# Characters whose lower case would change a folded match: U+0130 lowers to two characters, the
# Kelvin sign to ASCII 'k' (checked over all of Unicode). A text holding one is scanned the slow way.
UNSAFE_TO_LOWER = ("\u0130", "\u212a")


COMBINED_RE = build_combined_regex()
FREE_RE, WORD_RE, BOUNDED_AT_RE, FOLDED_AT_RE = build_scan_regexes()
WORD_STARTS = word_start_phrases()
# From this length on the word starts come from word_starts.candidates (numpy) instead of WORD_RE:
# measured per call on a ../shared text, 1,024 characters took 16.6 µs vs 14.7, 4,096 took 40 vs 74.
VECTORIZED_FROM = 1024


def word_match(padded: str, lowered: str, pos: int) -> re.Match | None:
    """The alternation's leftmost word-led match starting at or after `pos` (pos >= 1).

    WORD_RE's match opens with the non-word character before the word, so the search starts one
    earlier; each word start it finds goes to `match_at`; if nothing holds there, the search goes on.
    """
    while (lead := WORD_RE.search(lowered, pos - 1)) is not None:
        start = lead.start() + 1
        if (match := match_at(padded, lowered, start)) is not None:
            return match
        pos = start + 1
    return None


def listed_word_match(padded: str, lowered: str, starts: list[int], pos: int) -> re.Match | None:
    """As `word_match`, with the word starts listed in advance (word_starts.candidates, sorted)."""
    for i in range(bisect_left(starts, pos), len(starts)):
        if (match := match_at(padded, lowered, starts[i])) is not None:
            return match
    return None


def match_at(padded: str, lowered: str, start: int) -> re.Match | None:
    """The alternation's word-led match at a word start, if any.

    The bounded patterns and exact keywords are checked on the text first (they win a tie, as in
    the alternation; each needs one of the prefixes, so it never matches where none is), then the
    folded keywords on the lower case.
    """
    return BOUNDED_AT_RE.match(padded, start) or FOLDED_AT_RE.match(lowered, start)


def _word_stream(padded: str, lowered: str) -> Callable[[int], re.Match | None]:
    """`pos -> next word-led match`: from numpy's word starts on long texts, from WORD_RE on short ones."""
    if len(lowered) >= VECTORIZED_FROM:
        starts = word_starts.candidates(lowered, WORD_STARTS)
        return lambda pos: listed_word_match(padded, lowered, starts, pos)
    return lambda pos: word_match(padded, lowered, pos)


def combined_matches(padded: str) -> Iterator[re.Match]:
    """COMBINED_RE.finditer(padded), computed faster: the leftmost match of two streams, then past its end.

    Free patterns on the text, word-led ones through `_word_stream` (the text and its lower case);
    a free pattern starts on a non-word character and a word-led one on a word character, so they
    never start at the same place. `padded` starts with a newline (scan's padding).
    """
    lowered = padded.lower()
    if len(lowered) != len(padded) or any(ch in padded for ch in UNSAFE_TO_LOWER):
        yield from COMBINED_RE.finditer(padded)
        return
    next_word = _word_stream(padded, lowered)
    free, word = FREE_RE.search(padded), next_word(1)
    while free is not None or word is not None:
        best = free if word is None or (free is not None and free.start() < word.start()) else word
        yield best
        end = best.end()
        if free is not None and free.start() < end:
            free = FREE_RE.search(padded, end)
        if word is not None and word.start() < end:
            word = next_word(end)
