"""Stage 02: citation & provenance scoring — text (+ metadata) → authority_weight, provenance_entropy, evidence."""

from yourai.scoring.batch import Rejected, score_many
from yourai.scoring.metadata import EARLIEST_YEAR
from yourai.scoring.score import Evidence, Score, score

__all__ = ["EARLIEST_YEAR", "Evidence", "Rejected", "Score", "score", "score_many"]
