"""The tier rule: boundaries are exclusive, so the configured thresholds themselves are 'middle'."""

from __future__ import annotations

from yourai.config import CurateConfig
from yourai.tiers import TIERS, tier_of


def test_tier_boundaries_follow_the_given_thresholds():
    assert [tier_of(w, 0.2, 0.8) for w in (0.0, 0.19, 0.2, 0.5, 0.8, 0.81, 0.99)] == \
        ["primary", "primary", "middle", "middle", "middle", "consensus", "consensus"]


def test_config_defaults_are_the_rules_defaults():
    config = CurateConfig()
    for w in (0.0, 0.29, 0.3, 0.7, 0.71):
        assert tier_of(w) == tier_of(w, config.primary_max_authority, config.consensus_min_authority)
    assert [tier_of(w) for w in (0.29, 0.3, 0.71)] == ["primary", "middle", "consensus"]
    assert TIERS == ("primary", "middle", "consensus")
