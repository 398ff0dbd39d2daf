"""The tier rule: boundaries are exclusive, so the configured thresholds themselves are 'middle'."""

from __future__ import annotations

from yourai.config import CurateConfig
from yourai.tiers import tier_of


def test_tier_boundaries_follow_the_config():
    config = CurateConfig(primary_max_authority=0.2, consensus_min_authority=0.8)
    assert [tier_of(w, config) for w in (0.0, 0.19, 0.2, 0.5, 0.8, 0.81, 0.99)] == \
        ["primary", "primary", "middle", "middle", "middle", "consensus", "consensus"]
