"""Overlap with text already seen: exact and near duplicates, and benchmark contamination.

Both indexes live in an on-disk SQLite file so memory stays flat however many records pass
through. Near duplicates use MinHash signatures from `datasketch`; the LSH banding (b bands of
r rows, chosen by datasketch's own optimiser for the threshold) is stored as SQLite rows, and
every bucket hit is confirmed by the estimated Jaccard similarity before a record is dropped.
The first record seen is kept, so the result is deterministic for a given input order.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import re
import sqlite3
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from datasketch import MinHash, MinHashLSH

from yourai.data.sources import normalize_text

SHINGLE_WORDS = 3  # word 3-grams: robust to small edits, still specific for 5+ word records
MINHASH_SEED = 1  # fixed so signatures (and hence decisions) never change between runs
SQLITE_CACHE_KIB = 2 * 1024  # SQLite page cache cap (its default): memory independent of the input
LSH_WEIGHTS = (0.05, 0.95)  # (false positive, false negative): recall first, every hit is verified
LONG_ANSWER_CHARS = 40  # a reference answer this long is specific enough to flag (shared corpora README)
_SHINGLE_BASE = np.uint64(1_000_003)  # polynomial base: the n-gram hash depends on word order
_WORD_RE = re.compile(r"\w+")
_WORD_START_RE = re.compile(r"\b\w")
_LEADING_NONWORD_RE = re.compile(r"^\W+")


def content_hash(text: str) -> bytes:
    """Digest of the normalised text: equal for texts differing only in case or whitespace."""
    return hashlib.blake2b(normalize_text(text).encode("utf-8"), digest_size=16).digest()


def shingle_hashes(text: str) -> np.ndarray:
    """32-bit hashes of the word n-grams, combined from per-word CRC32s with numpy.

    Equal n-grams get equal hashes (same words in the same order), and it is ~5x faster than
    joining and hashing each n-gram string. CRC32 is process-independent (hash() is salted).
    """
    words = _WORD_RE.findall(text.casefold())
    if len(words) <= SHINGLE_WORDS:
        return np.array([zlib.crc32(" ".join(words).encode("utf-8"))], dtype=np.uint64)
    word_hashes = np.fromiter((zlib.crc32(w.encode("utf-8")) for w in words), dtype=np.uint64, count=len(words))
    n = len(words) - SHINGLE_WORDS + 1
    combined = np.zeros(n, dtype=np.uint64)
    for offset in range(SHINGLE_WORDS):
        combined = combined * _SHINGLE_BASE + word_hashes[offset:offset + n]  # wraps mod 2^64
    return (combined ^ (combined >> np.uint64(32))) & np.uint64(0xFFFFFFFF)


@functools.lru_cache(maxsize=4)
def _template(num_perm: int) -> MinHash:
    """datasketch's permutations for this size, made once (they cost more than hashing a record)."""
    return MinHash(num_perm=num_perm, seed=MINHASH_SEED)


def signature(text: str, num_perm: int) -> np.ndarray:
    """The MinHash signature of a text (datasketch, vectorised over all shingles)."""
    template = _template(num_perm)
    minhash = MinHash(num_perm=num_perm, seed=MINHASH_SEED, hashfunc=int, permutations=template.permutations,
                      scheme=template.scheme)
    minhash.update_batch(shingle_hashes(text))
    return minhash.hashvalues


@dataclass(frozen=True)
class Duplicate:
    """A dropped record's partner: the id that was kept and how alike they are."""

    kept_id: str
    similarity: float  # 1.0 for exact duplicates, else estimated Jaccard of word 3-grams
    exact: bool


class DedupIndex:
    """First-seen-wins duplicate detection over an on-disk SQLite index."""

    def __init__(self, db_path: Path, threshold: float, num_perm: int) -> None:
        self.threshold = threshold
        self.num_perm = num_perm
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=LSH_WEIGHTS)  # only for (b, r)
        self.bands, self.rows = lsh.b, lsh.r
        self.db = sqlite3.connect(db_path)
        self.db.executescript(f"""
            PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-{SQLITE_CACHE_KIB};
            CREATE TABLE IF NOT EXISTS exact(hash BLOB PRIMARY KEY, id TEXT) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS sigs(unit INTEGER PRIMARY KEY, id TEXT, sig BLOB);
            CREATE TABLE IF NOT EXISTS bands(key INTEGER, unit INTEGER);
            CREATE INDEX IF NOT EXISTS bands_key ON bands(key);""")

    def _band_keys(self, sig: np.ndarray) -> list[int]:
        keys = []
        for band in range(self.bands):
            chunk = sig[band * self.rows:(band + 1) * self.rows].astype("<u8").tobytes()
            digest = hashlib.blake2b(band.to_bytes(2, "little") + chunk, digest_size=8).digest()
            keys.append(int.from_bytes(digest, "little", signed=True))
        return keys

    def _best_candidate(self, sig: np.ndarray, keys: list[int]) -> Duplicate | None:
        marks = ",".join("?" * len(keys))
        query = f"SELECT DISTINCT s.unit, s.id, s.sig FROM bands b JOIN sigs s ON s.unit = b.unit " \
                f"WHERE b.key IN ({marks}) ORDER BY s.unit"
        best: Duplicate | None = None
        for _, kept_id, blob in self.db.execute(query, keys):
            other = np.frombuffer(blob, dtype=np.uint64)
            similarity = float(np.mean(other == sig))
            if similarity >= self.threshold and (best is None or similarity > best.similarity):
                best = Duplicate(kept_id, similarity, exact=False)
        return best

    def check_and_add(self, record_id: str, text: str) -> Duplicate | None:
        """The kept record this one duplicates, or None (and then it is remembered as kept)."""
        digest = content_hash(text)
        row = self.db.execute("SELECT id FROM exact WHERE hash = ?", (digest,)).fetchone()
        if row:
            return Duplicate(row[0], 1.0, exact=True)
        sig = signature(text, self.num_perm).astype(np.uint64)
        keys = self._band_keys(sig)
        if found := self._best_candidate(sig, keys):
            return found
        self.db.execute("INSERT INTO exact VALUES (?, ?)", (digest, record_id))
        unit = self.db.execute("INSERT INTO sigs(id, sig) VALUES (?, ?)", (record_id, sig.tobytes())).lastrowid
        self.db.executemany("INSERT INTO bands VALUES (?, ?)", [(key, unit) for key in keys])
        return None

    def close(self) -> None:
        self.db.close()


# ------------------------------------------------------------------ contamination


def _needle_form(text: str) -> str:
    """Normalised, starting at a word, so a match can only begin where a word begins."""
    return _LEADING_NONWORD_RE.sub("", normalize_text(text))


def read_truthfulqa_needles(csv_path: Path) -> list[tuple[str, str]]:
    """(kind, text) for every TruthfulQA question and every reference answer ≥ LONG_ANSWER_CHARS."""
    needles: list[tuple[str, str]] = []
    with open(csv_path, encoding="utf-8-sig", newline="") as handle:
        for number, row in enumerate(csv.DictReader(handle), start=2):
            if not row.get("Question"):
                raise ValueError(f"{csv_path}:{number}: field 'Question' is missing or empty")
            needles.append(("question", row["Question"]))
            answers = [row.get("Best Answer") or ""]
            for column in ("Correct Answers", "Incorrect Answers"):
                answers += (row.get(column) or "").split(";")
            needles += [("answer", a.strip()) for a in answers if len(normalize_text(a)) >= LONG_ANSWER_CHARS]
    return needles


class ContaminationGuard:
    """Finds any benchmark string inside a text: one dict lookup per word start, then a verify."""

    def __init__(self, needles: Iterable[tuple[str, str]]) -> None:
        forms = {(_needle_form(text), kind) for kind, text in needles}
        forms = {(form, kind) for form, kind in forms if form}
        if not forms:
            raise ValueError("contamination guard: no benchmark strings to look for")
        self.prefix_chars = min(len(form) for form, _ in forms)
        self.by_prefix: dict[str, list[tuple[str, str]]] = {}
        for form, kind in sorted(forms):
            self.by_prefix.setdefault(form[:self.prefix_chars], []).append((form, kind))
        self.size = len(forms)

    def find(self, text: str) -> tuple[str, str] | None:
        """(kind, matched benchmark string) for the first hit, or None."""
        normal = normalize_text(text)
        width = self.prefix_chars
        for match in _WORD_START_RE.finditer(normal):
            start = match.start()
            for form, kind in self.by_prefix.get(normal[start:start + width], ()):
                if normal.startswith(form, start):
                    return kind, form
        return None
