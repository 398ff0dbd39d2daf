"""The Empirical Distrust loss family: Roemmele's faithful term and forms that really shape training.

Definitions (per sample i, authority weight ``w_i`` in [0, 0.99], provenance entropy ``H_i`` >= 0 bits):

* distrust residual  ``d_i = ln(1 - w_i + eps) + H_i``  (eps = 1e-8; the natural log is mixed with
  bits exactly as in Roemmele's formula, so published numbers reproduce)
* faithful term      ``L_emp,i = alpha * d_i**2``  (alpha in [2.3, 3.0], 2.7 by default)

The well-known implementation trains on ``CE + lambda * mean_i L_emp,i``. ``w`` and ``H`` come from the
data, so the term is a constant with respect to the model: its gradient is exactly zero and it changes
nothing that is learned. The ``weighted`` objective instead scales each sample's cross-entropy by a
per-sample weight (see :func:`distrust_weights`), which does change the gradient.

Host side (numpy, validated, reports the first offending index): :func:`empirical_distrust_loss`,
:func:`distrust_weights`, :func:`auto_lambda`. They answer in the caller's type: ``mx.array`` in →
``mx.array`` out (so code written for the reference's ``empirical_distrust_loss(mx.array, mx.array)``
keeps working), numpy in → numpy out, Python scalars in → ``float``. In-graph side (pure functions of ``mx.array``, safe inside
``mx.compile``, no validation): :func:`per_sample_ce`, :func:`distrust_term`, :func:`objective_loss` and
:func:`objective_from_token_ce` (the same objective from token cross-entropies, e.g. chunked ones).
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from yourai.formula import (ALPHA_RANGE, AUTHORITY_RANGE, DEFAULT_ALPHA, DEFAULT_LAMBDA, DEFAULT_WEIGHT_CAP, EPSILON,
                            OBJECTIVES, SCHEMES, combine_objective)

REDUCTIONS = ("mean", "sum", "none")

ArrayLike = Any  # float, sequence, numpy array or mx.array


# ---------------------------------------------------------------- host side: validation


_DATA_FIELD = {"w_auth": "authority_weight", "H_prov": "provenance_entropy"}  # formula name → data file name


class MetadataError(ValueError):
    """A bad authority weight or provenance entropy; `field` names it in the data file's terms."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field  # "authority_weight" | "provenance_entropy"


def _as_float64(name: str, values: ArrayLike) -> tuple[np.ndarray, type]:
    """Bring scalars, lists, numpy and mx arrays to float64, remembering the input's float type.

    The type matters for the bounds: 0.99 stored as float32 is 0.9900000095, which must still pass.
    """
    if isinstance(values, mx.array) and values.dtype == mx.bfloat16:
        values = values.astype(mx.float32)  # numpy has no bfloat16; float32 holds every bfloat16 exactly
    try:
        original = np.asarray(values)
        as_float64 = original.astype(np.float64)
    except (TypeError, ValueError) as error:
        raise MetadataError(_DATA_FIELD[name], f"{name} must be numeric, got {values!r}") from error
    is_float = np.issubdtype(original.dtype, np.floating)
    return as_float64, (original.dtype.type if is_float else np.float64)


def _where(name: str, array: np.ndarray, index: int) -> str:
    """Name the value for a user: ``w_auth`` for a scalar, ``w_auth[3]`` for an array element."""
    return name if array.ndim == 0 else f"{name}[{index}]"


def _first_offender(array: np.ndarray, bad: np.ndarray) -> tuple[int, float] | None:
    """The first flat index where ``bad`` holds, with its value, so errors point at one record."""
    flat_bad = np.flatnonzero(np.atleast_1d(bad))
    if flat_bad.size == 0:
        return None
    index = int(flat_bad[0])
    return index, float(np.atleast_1d(array).ravel()[index])


_MX_RESULT_DTYPES = (mx.float16, mx.bfloat16, mx.float32)  # float64 is CPU-only in MLX: answer in float32


def _in_callers_type(result: np.ndarray | float, *inputs: ArrayLike) -> Any:
    """`result` (computed in float64 numpy) as the inputs came: mx.array, numpy, or float for scalars."""
    arrays = [v for v in inputs if isinstance(v, mx.array)]
    if arrays:
        dtype = next((a.dtype for a in arrays if a.dtype in _MX_RESULT_DTYPES), mx.float32)
        return mx.array(np.asarray(result, dtype=np.float32 if dtype != mx.float16 else np.float16), dtype=dtype)
    if all(np.ndim(v) == 0 and not isinstance(v, np.ndarray) for v in inputs):
        return float(result) if np.ndim(result) == 0 else np.asarray(result)
    return np.asarray(result) if np.ndim(result) else np.float64(result)


def validate_alpha(alpha: float) -> float:
    """Reject alpha outside the published range: the reference values are only defined inside it."""
    low, high = ALPHA_RANGE
    if not (isinstance(alpha, (int, float, np.floating)) and low <= float(alpha) <= high):
        raise ValueError(f"alpha must be in [{low}, {high}], got {alpha!r}")
    return float(alpha)


def validate_metadata(w_auth: ArrayLike, entropy_bits: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Check w_auth in [0, 0.99] and H >= 0 (finite, same shape); errors name the first bad index."""
    authority, authority_type = _as_float64("w_auth", w_auth)
    entropy, entropy_type = _as_float64("H_prov", entropy_bits)
    if authority.shape != entropy.shape:
        raise ValueError(f"w_auth and H_prov must have the same shape, got {authority.shape} and {entropy.shape}")
    low, high = AUTHORITY_RANGE
    high_in_input_precision = float(authority_type(high))
    offender = _first_offender(authority, ~((authority >= low) & (authority <= high_in_input_precision)))
    if offender is not None:
        index, value = offender
        raise MetadataError("authority_weight",
                            f"{_where('w_auth', authority, index)} must be in [{low}, {high}], got {authority_type(value)!s}")
    offender = _first_offender(entropy, ~(np.isfinite(entropy) & (entropy >= 0.0)))
    if offender is not None:
        index, value = offender
        raise MetadataError("provenance_entropy",
                            f"{_where('H_prov', entropy, index)} must be a finite number of bits >= 0, got {entropy_type(value)!s}")
    return authority, entropy


# ---------------------------------------------------------------- host side: the faithful term


def _residual(w_auth: ArrayLike, entropy_bits: ArrayLike) -> np.ndarray:
    authority, entropy = validate_metadata(w_auth, entropy_bits)
    return np.log(1.0 - authority + EPSILON) + entropy


def distrust_residual(w_auth: ArrayLike, entropy_bits: ArrayLike) -> Any:
    """d = ln(1 - w + eps) + H: zero on the valley ln(1 - w) = -H, where the faithful term vanishes."""
    return _in_callers_type(_residual(w_auth, entropy_bits), w_auth, entropy_bits)


def empirical_distrust_loss(
    w_auth: ArrayLike, entropy_bits: ArrayLike, alpha: float = DEFAULT_ALPHA, reduction: str = "mean"
) -> float | np.ndarray:
    """Roemmele's term alpha * (ln(1 - w_auth + eps) + H_prov)^2, exactly as published.

    Python scalars give a float. numpy arrays give a numpy float64 scalar for ``mean``/``sum`` (a
    ``float`` subclass) and a float64 array for ``none``; ``mx.array`` inputs give an ``mx.array``
    (a 0-d array for ``mean``/``sum``) in their float dtype.
    Reference values at alpha = 2.7: (0.05, 7.5) -> 149.80; (0.9, 1.0) -> 4.581; (0.99, 0.0) -> 57.26.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    alpha = validate_alpha(alpha)
    per_sample = alpha * _residual(w_auth, entropy_bits) ** 2
    if per_sample.ndim > 0 and reduction != "none":
        if per_sample.size == 0:
            raise ValueError(f"cannot take the {reduction} of an empty batch of metadata")
        per_sample = per_sample.mean() if reduction == "mean" else per_sample.sum()
    return _in_callers_type(per_sample, w_auth, entropy_bits)


# ---------------------------------------------------------------- host side: per-sample weights


def _softplus(values: np.ndarray) -> np.ndarray:
    """log(1 + e^x) without overflow: the smooth, strictly increasing stand-in for max(x, 0)."""
    return np.logaddexp(0.0, values)


def scheme_scores(w_auth: ArrayLike, entropy_bits: ArrayLike, scheme: str) -> np.ndarray:
    """Unnormalised weights: how much more a sample should count before normalisation and the cap.

    * ``roemmele``: d^2, proportional to the faithful term (alpha cancels under normalisation). Not
      monotone: the square mirrors d < 0 onto d > 0, so (0.99, 0.0) outranks (0.9, 1.0).
    * ``monotone``: softplus(d)^2. Strictly increasing in d, hence never increasing with authority
      nor decreasing with entropy; equals d^2 within 1 % wherever d >= 4 (the primary-source side,
      where the square is already monotone) and decays like e^(2d) on the consensus side.
    * ``none``: ones (the plain objective, written as a weighting).
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    residual = _residual(w_auth, entropy_bits)
    if scheme == "roemmele":
        return residual**2
    if scheme == "monotone":
        return _softplus(residual) ** 2
    return np.ones_like(residual)


def cap_ratio(scores: np.ndarray, cap: float) -> np.ndarray:
    """Raise every score to at least max/cap, so no sample counts more than cap x the least-trusted one.

    A floor (not a ceiling) keeps the ranking at the top, where primary sources are, and keeps the
    least-trusted samples in training instead of weighting them to ~0. Clipping is non-decreasing,
    so it preserves monotonicity.
    """
    largest = float(scores.max())
    if largest <= 0.0:  # every sample sits on the zero valley: nothing to prefer, weight all alike
        return np.ones_like(scores)
    return np.maximum(scores, largest / cap)


def distrust_weights(
    w_auth: ArrayLike, entropy_bits: ArrayLike, scheme: str = "monotone", *, cap: float = DEFAULT_WEIGHT_CAP
) -> np.ndarray:
    """Per-sample weights for the ``weighted`` objective, normalised over the whole DATASET.

    Pass the whole training set's metadata once. Returns float32 weights (an ``mx.array`` for
    ``mx.array`` inputs, else numpy) with ``weights.mean() == 1`` and ``weights.max() / weights.min() <= cap``.

    Effect on the learning rate: the ``weighted`` objective is ``sum_i w_i CE_i / sum_i w_i`` over a
    batch, a convex combination of per-sample losses, so a global scale of the weights cancels and the
    step size stays that of plain training. Sample i's share of a batch's update is
    ``w_i / sum_batch w``, i.e. its effective learning-rate multiplier is ``w_i / mean_batch(w)``.
    Because the dataset mean is 1, the batch mean is ~1 on average, so ``w_i`` itself reads as the
    sample's expected multiplier ("counts as w_i average samples") and the dataset-average multiplier is
    1: the overall learning rate is unchanged on average. Normalising per batch instead would make the
    numbers depend on which companions a sample drew, hide in the logs how distrust-rich a batch is
    (``mean_weight`` would always be 1), and, for an un-self-normalised sum ``sum_i w_i CE_i / B``,
    erase exactly the cross-batch emphasis the weights exist to create. The cap bounds any single
    sample's multiplier to at most ``cap`` x the least-trusted one, so a batch of B samples gives one
    sample at most ``cap / (cap + B - 1)`` of the update.
    """
    if not (isinstance(cap, (int, float, np.floating)) and np.isfinite(cap) and cap >= 1.0):
        raise ValueError(f"cap (max/min weight ratio) must be a finite number >= 1, got {cap!r}")
    scores = scheme_scores(w_auth, entropy_bits, scheme)
    if scores.size == 0:
        raise ValueError("distrust_weights needs at least one sample (pass the whole dataset's metadata)")
    capped = cap_ratio(np.atleast_1d(scores), float(cap))
    weights = (capped / capped.mean()).astype(np.float32).reshape(scores.shape)
    return mx.array(weights) if isinstance(w_auth, mx.array) or isinstance(entropy_bits, mx.array) else weights


def auto_lambda(ce_estimate: ArrayLike, distrust_mean: ArrayLike, target_ratio: ArrayLike) -> Any:
    """lambda with lambda * mean L_emp = target_ratio * CE: the reference implementation's "auto-lambda".

    It only rescales a constant, so it cannot change what is learned; it exists to reproduce the
    published loss curves. Scalars give a float; an ``mx.array`` scalar among the inputs gives one back.
    """
    inputs = (ce_estimate, distrust_mean, target_ratio)
    ce, mean, ratio = (float(np.asarray(v)) for v in inputs)
    for name, value in (("ce_estimate", ce), ("target_ratio", ratio)):
        if not (np.isfinite(value) and value >= 0.0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if not (np.isfinite(mean) and mean > 0.0):
        raise ValueError(f"distrust_mean must be > 0 to solve for lambda, got {mean!r}")
    return _in_callers_type(np.float64(ratio * ce / mean), *inputs)


# ---------------------------------------------------------------- in-graph side (mx, compile-safe)


def masked_token_ce(logits: mx.array, targets: mx.array, mask: mx.array) -> mx.array:
    """Token cross-entropy [B, T] in float32, zero where the mask does not count (as mlx-lm computes it)."""
    return (nn.losses.cross_entropy(logits, targets) * mask).astype(mx.float32)


def per_sample_ce(logits: mx.array, targets: mx.array, mask: mx.array) -> tuple[mx.array, mx.array]:
    """Each sample's token-mean cross-entropy [B] and counted tokens [B]: per-sample weighting needs both."""
    return per_sample_token_ce(masked_token_ce(logits, targets, mask), mask)


def per_sample_token_ce(token_ce: mx.array, mask: mx.array) -> tuple[mx.array, mx.array]:
    """per_sample_ce from token cross-entropies [B, T] (however they were computed, e.g. chunked)."""
    token_ce = token_ce * mask
    tokens = mask.astype(mx.float32).sum(axis=1)
    return token_ce.sum(axis=1) / mx.maximum(tokens, 1.0), tokens


def distrust_term(w_auth: mx.array, entropy_bits: mx.array, alpha: float) -> mx.array:
    """Batch mean of alpha * (ln(1 - w + eps) + H)^2 in-graph: a constant with respect to the model."""
    residual = mx.log(1.0 - w_auth.astype(mx.float32) + EPSILON) + entropy_bits.astype(mx.float32)
    return alpha * mx.mean(residual * residual)


def weighted_ce(ce_per_sample: mx.array, tokens: mx.array, weights: mx.array) -> mx.array:
    """sum_i w_i CE_i / sum_i w_i over samples that have at least one counted token."""
    counted = weights.astype(mx.float32) * (tokens > 0)
    return (counted * ce_per_sample).sum() / mx.maximum(counted.sum(), 1e-12)


def objective_loss(
    logits: mx.array,
    targets: mx.array,
    mask: mx.array,
    weights: mx.array,
    w_auth: mx.array,
    entropy_bits: mx.array,
    *,
    mode: str,
    lambda_weight: float,
    alpha: float,
) -> tuple[mx.array, dict[str, mx.array]]:
    """The training objective and its parts from whole logits [B, T, V] (see objective_from_token_ce)."""
    return objective_from_token_ce(masked_token_ce(logits, targets, mask), mask, weights, w_auth, entropy_bits,
                                   mode=mode, lambda_weight=lambda_weight, alpha=alpha)


def objective_from_token_ce(
    token_ce: mx.array,
    mask: mx.array,
    weights: mx.array,
    w_auth: mx.array,
    entropy_bits: mx.array,
    *,
    mode: str,
    lambda_weight: float,
    alpha: float,
) -> tuple[mx.array, dict[str, mx.array]]:
    """The training objective and its parts, all mx scalars, so the trainer can log and plot them.

    ``token_ce`` is each position's float32 cross-entropy [B, T] (masked here), whole or chunked.
    ``plain``: token-mean CE (mlx-lm's default_loss). ``faithful``: plain + lambda * L_emp, whose
    gradient is bit-for-bit that of plain (the term is added, never used to rescale CE). ``weighted``:
    sum_i w_i CE_i / sum_i w_i. ``both``: weighted + lambda * L_emp. Pure and compile-safe: ``mode`` is
    resolved at trace time and nothing here validates data values (do that on the host).
    """
    if mode not in OBJECTIVES:
        raise ValueError(f"mode must be one of {OBJECTIVES}, got {mode!r}")
    token_ce = token_ce * mask  # one pass over the vocabulary (upstream) serves every part
    ce_per_sample, tokens_per_sample = per_sample_token_ce(token_ce, mask)
    tokens = tokens_per_sample.sum()
    ce = token_ce.sum() / tokens  # token-mean over the batch, exactly mlx-lm's default_loss
    weighted = weighted_ce(ce_per_sample, tokens_per_sample, weights)
    term = distrust_term(w_auth, entropy_bits, alpha)
    total = combine_objective(ce, weighted, term, objective=mode, lambda_weight=lambda_weight)
    parts = {
        "ce": ce,
        "distrust_term": term,
        "weighted_ce": weighted,
        "mean_weight": mx.mean(weights.astype(mx.float32)),
        "tokens": tokens,
    }
    return total, parts


# ---------------------------------------------------------------- gradient check (host side, eager)


def objective_gradients(model: nn.Module, batch: dict[str, mx.array], *, mode: str, lambda_weight: float = DEFAULT_LAMBDA,
                        alpha: float = DEFAULT_ALPHA) -> dict[str, mx.array]:
    """Gradients of one objective w.r.t. the model's trainable parameters, flattened by name.

    ``batch`` holds ``inputs``, ``targets``, ``mask``, ``weights``, ``authority_weight`` and ``provenance_entropy``.
    Exists so the claim "the faithful term changes nothing learned" can be checked on any model.
    """
    from mlx.utils import tree_flatten  # local: only this eager check needs it

    def loss(model_: nn.Module) -> mx.array:
        logits = model_(batch["inputs"])
        return objective_loss(logits, batch["targets"], batch["mask"], batch["weights"], batch["authority_weight"],
                              batch["provenance_entropy"], mode=mode, lambda_weight=lambda_weight, alpha=alpha)[0]

    _, grads = nn.value_and_grad(model, loss)(model)
    flat = dict(tree_flatten(grads))
    mx.eval(flat)
    return flat


def max_gradient_difference(first: dict[str, mx.array], second: dict[str, mx.array]) -> float:
    """max |g1 - g2| over every parameter: exactly 0.0 means the two objectives train identically."""
    if set(first) != set(second):
        raise ValueError(f"gradient sets differ: {sorted(set(first) ^ set(second))[:5]}")
    return max(float(mx.max(mx.abs(first[name] - second[name]))) for name in first)


def gradient_check(model: nn.Module, batch: dict[str, mx.array], *, lambda_weight: float = DEFAULT_LAMBDA,
                   alpha: float = DEFAULT_ALPHA) -> dict[str, float]:
    """The notebook's evidence in four numbers: is the faithful gradient exactly plain CE's?

    `faithful` is compared with `plain` (0.0 ⇔ the term is inert); `weighted` with `plain` and
    with `weighted` under uniform weights, which separates the distrust signal from the switch
    from token-mean to per-sample-mean averaging.
    """
    grads = {mode: objective_gradients(model, batch, mode=mode, lambda_weight=lambda_weight, alpha=alpha)
             for mode in ("plain", "faithful", "weighted")}
    uniform = objective_gradients(model, {**batch, "weights": mx.ones_like(batch["weights"])}, mode="weighted")
    return {
        "lora_tensors": len(grads["plain"]),
        "max_abs_grad_plain": max(float(mx.max(mx.abs(g))) for g in grads["plain"].values()),
        "max_abs_dgrad_faithful": max_gradient_difference(grads["plain"], grads["faithful"]),
        "max_abs_dgrad_weighted": max_gradient_difference(grads["plain"], grads["weighted"]),
        "max_abs_dgrad_weighted_vs_uniform": max_gradient_difference(uniform, grads["weighted"]),
    }
