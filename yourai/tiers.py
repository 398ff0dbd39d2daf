"""Authority tiers: the names and the rule that puts a record in one, defined once for every stage.

Curation balances and splits by tier, training reports validation loss per tier, notebooks plot
them; all of them read TIERS and `tier_of` from here. The thresholds' defaults live here too so the
config and the rule cannot drift apart.
"""

from __future__ import annotations

TIERS = ("primary", "middle", "consensus")  # low → high authority
PRIMARY_MAX_AUTHORITY = 0.3  # below: primary evidence (anchor: "1923 patent" sits at 0.05)
CONSENSUS_MIN_AUTHORITY = 0.7  # above: consensus restatement (anchor: "2024 Wikipedia" at 0.9)


def tier_of(authority_weight: float, primary_max: float = PRIMARY_MAX_AUTHORITY,
            consensus_min: float = CONSENSUS_MIN_AUTHORITY) -> str:
    """primary below `primary_max`, consensus above `consensus_min`, middle in between."""
    if authority_weight < primary_max:
        return "primary"
    if authority_weight > consensus_min:
        return "consensus"
    return "middle"
