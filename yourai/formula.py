"""Roemmele's Empirical Distrust formula: its published constants and the rule that combines its parts.

    L_emp = alpha * (ln(1 - w_auth + eps) + H_prov)^2        (public domain, 2025-11-25)

Every number of the formula lives here, once: the config takes its defaults and bounds from this
module, the scorer clamps to AUTHORITY_RANGE, curation validates against it, and the loss and the
trainer's logging combine the parts with :func:`combine_objective`. This module imports nothing,
so the lightest corner of the package (config, tiers) can depend on it.
"""

from __future__ import annotations

from typing import Any

EPSILON = 1e-8  # Roemmele's guard inside the log, so w_auth = 1 would not give ln(0)
DEFAULT_ALPHA = 2.7  # the published default
ALPHA_RANGE = (2.3, 3.0)  # the range the reference implementation accepts
AUTHORITY_RANGE = (0.0, 0.99)  # w_auth is clamped here by every scorer: 1 - w_auth stays > 0
DEFAULT_LAMBDA = 0.6  # the reference implementation's weight on the additive term
DEFAULT_WEIGHT_CAP = 30.0  # max/min per-sample weight ratio: the anchor's "30x reward multiplier"

SCHEMES = ("roemmele", "monotone", "none")  # how a sample's residual becomes its weight (see yourai.loss)
OBJECTIVES = ("plain", "faithful", "weighted", "both")
WEIGHTED_OBJECTIVES = ("weighted", "both")  # the token loss is sum_i w_i CE_i / sum_i w_i
TERM_OBJECTIVES = ("faithful", "both")  # lambda * L_emp is added (a constant: zero gradient)


def combine_objective(ce: Any, weighted_ce: Any, term: Any, *, objective: str, lambda_weight: float) -> Any:
    """The objective from its parts, the one place the modes are defined (floats or mx arrays alike).

    ``plain``: CE. ``faithful``: CE + lambda * L_emp (the published form). ``weighted``: the per-sample
    weighted CE. ``both``: weighted CE + lambda * L_emp. A mode without the term returns the base
    unchanged (not ``base + 0 * term``), so plain and weighted stay bit-identical to their definitions.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    base = weighted_ce if objective in WEIGHTED_OBJECTIVES else ce
    return base + lambda_weight * term if objective in TERM_OBJECTIVES else base
