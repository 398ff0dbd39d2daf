"""The curation tier rule on its own: training reads it without importing curation (dedup, scoring)."""

from __future__ import annotations

from yourai.config import CurateConfig


def tier_of(authority_weight: float, config: CurateConfig) -> str:
    """primary below `primary_max_authority`, consensus above `consensus_min_authority`."""
    if authority_weight < config.primary_max_authority:
        return "primary"
    if authority_weight > config.consensus_min_authority:
        return "consensus"
    return "middle"
