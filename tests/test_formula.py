"""The objective rule, defined once in yourai.formula, combines floats and MLX arrays the same way."""

from __future__ import annotations

import mlx.core as mx
import pytest

from yourai.config import LossConfig
from yourai.formula import (ALPHA_RANGE, DEFAULT_ALPHA, DEFAULT_LAMBDA, DEFAULT_WEIGHT_CAP, OBJECTIVES,
                            combine_objective)


@pytest.mark.parametrize(("objective", "expected"), [("plain", 2.0), ("faithful", 2.0 + 0.5 * 10.0),
                                                     ("weighted", 3.0), ("both", 3.0 + 0.5 * 10.0)])
def test_each_objective_combines_its_parts(objective, expected):
    assert combine_objective(2.0, 3.0, 10.0, objective=objective, lambda_weight=0.5) == expected
    as_array = combine_objective(mx.array(2.0), mx.array(3.0), mx.array(10.0), objective=objective, lambda_weight=0.5)
    assert float(as_array) == pytest.approx(expected)


def test_modes_without_the_term_return_the_base_itself():
    base = mx.array([1.5])
    assert combine_objective(base, mx.array([9.0]), mx.array([float("nan")]), objective="plain", lambda_weight=0.6) is base


def test_unknown_objective_is_refused():
    with pytest.raises(ValueError, match="objective must be one of"):
        combine_objective(1.0, 1.0, 1.0, objective="mixed", lambda_weight=0.6)


def test_config_defaults_come_from_the_formula():
    loss = LossConfig()
    assert (loss.alpha, loss.lambda_weight, loss.weight_cap) == (DEFAULT_ALPHA, DEFAULT_LAMBDA, DEFAULT_WEIGHT_CAP)
    assert ALPHA_RANGE[0] <= loss.alpha <= ALPHA_RANGE[1] and loss.objective in OBJECTIVES
