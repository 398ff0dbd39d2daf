"""The word stream's prefilter for long texts, vectorized: where may a word-led pattern start?

The scanner's word regex (`scanner.WORD_RE`) answers this with sre, which enters its pattern at
every non-word character — ~4.9 M times in the 22 MB of ../shared, 0.47 s of CPU, half the
scorer's time. Here the same question is asked of the whole text at once with numpy: a position
is a candidate when the character before it is not a word character and its next four characters
fit the first four of one of the starts a match needs (`scanner.WORD_STARTS`). On those corpora
that is 0.22 s for ~180,000 candidates (a superset of the ~47,000 the regex keeps); the scanner
then tries the real patterns at each, so what is found is unchanged (tests compare both paths).
Below ~1,000 characters numpy's fixed cost per call loses to the regex (`scanner.VECTORIZED_FROM`).

The four characters are read as symbols: each character of the starts' alphabet is its own
symbol, every ASCII whitespace one shared symbol (a phrase's space matches any whitespace run,
so a start is cut after its first space), every other ASCII character a shared "other", and every
non-ASCII character one "unknown" symbol that a space may stand for (U+00A0 is whitespace).
"""

from __future__ import annotations

import itertools
from functools import cache

import numpy as np

KEY_CHARS = 4  # how many characters of a start the table checks
BLOCK_CHARS = 1 << 20  # characters per numpy pass (arrays of ~16 bytes per character)


class _Tables:
    """Symbol of each character code (non-ASCII folded to 128), and which 4-symbol keys are starts."""

    def __init__(self, starts: list[str]) -> None:
        starts = [s[: s.index(" ") + 1] if " " in s else s for s in starts]
        alphabet = sorted(set("".join(starts)) - {" "})
        assert all(ch.isascii() for ch in alphabet), "a start with a non-ASCII character needs another symbol rule"
        self.space, self.unknown = len(alphabet) + 1, len(alphabet) + 2
        self.symbols = self.unknown + 1  # other (0), the alphabet, space, unknown
        self.symbol = np.zeros(129, np.uint16)
        for i, ch in enumerate(alphabet, start=1):
            self.symbol[ord(ch)] = i
        for code in range(128):
            if chr(code).isspace():
                self.symbol[code] = self.space
        self.symbol[128] = self.unknown
        self.non_word = np.array([not (chr(code).isalnum() or code == ord("_")) for code in range(128)] + [True])
        self.is_start = np.zeros(self.symbols ** KEY_CHARS, bool)
        for start in starts:
            for key in itertools.product(*self._choices(start)):
                self.is_start[self._key(key)] = True

    def _choices(self, start: str) -> list[list[int]]:
        """The symbols each of the start's first four characters may be; past its end, any."""
        choices = [[self.space, self.unknown] if ch == " " else [int(self.symbol[ord(ch)])] for ch in start]
        return (choices + [list(range(self.symbols))] * KEY_CHARS)[:KEY_CHARS]

    def _key(self, symbols: tuple[int, ...]) -> int:
        key = 0
        for symbol in symbols:
            key = key * self.symbols + symbol
        return key


@cache
def _tables(starts: tuple[str, ...]) -> _Tables:
    return _Tables(list(starts))


def candidates(lowered: str, starts: tuple[str, ...]) -> list[int]:
    """Positions p >= 1 where lowered[p - 1] is not a word character and lowered[p:] may begin one of `starts`.

    `lowered` is a lower-cased text (ASCII letters lower case); a position is kept unless its
    four characters cannot begin any start, so no match the scanner would find is lost. Long
    texts go in blocks of `BLOCK_CHARS`, so the arrays stay ~16 MB whatever a document's size.
    """
    tables, found = _tables(starts), []
    for first in range(1, len(lowered), BLOCK_CHARS):
        last = min(first + BLOCK_CHARS, len(lowered))
        block = _block(lowered[first - 1 : last + KEY_CHARS - 1], last - first, tables)
        found += (block + (first - 1)).tolist()
    if lowered.isascii():
        return found
    # a non-ASCII character before a candidate was only "maybe not a word character": ask exactly (rare)
    return [p for p in found if lowered[p - 1].isascii() or not lowered[p - 1].isalnum()]


def _block(segment: str, count: int, tables: _Tables) -> np.ndarray:
    """Candidates 1..count of `segment`, whose character 0 is the one before the first of them."""
    if segment.isascii():
        codes = np.frombuffer(segment.encode("ascii"), np.uint8)
    else:
        # one code unit per character, as str indexes them (a lone surrogate from JSON included)
        codes = np.minimum(np.frombuffer(segment.encode("utf-32-le", "surrogatepass"), np.uint32), 128)
    symbols = np.zeros(len(segment) + KEY_CHARS, np.uint16)
    symbols[: len(segment)] = tables.symbol[codes]
    pairs = symbols[:-1] * tables.symbols + symbols[1:]  # pairs[i]: characters i and i + 1
    keys = pairs[1 : count + 1].astype(np.int32) * tables.symbols ** 2 + pairs[3 : count + 3]  # characters j .. j + 3
    return np.flatnonzero(tables.is_start[keys] & tables.non_word[codes[:count]]) + 1
