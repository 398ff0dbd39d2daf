"""Notebook 03's helpers: the L_emp landscape, per-scheme weight tables, a token batch, the widget panel.

Thin plotting and table code around :mod:`yourai.loss`; the arithmetic lives there.
"""

from __future__ import annotations

import io
import threading
from typing import Any, Sequence

import matplotlib.pyplot as plt
import mlx.core as mx
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm

from yourai.formula import AUTHORITY_RANGE, EPSILON, SCHEMES
from yourai.loss import distrust_weights, empirical_distrust_loss
from yourai.notebook.display import FIGURE_DPI

LANDSCAPE_MAX_BITS = 10.0  # covers the scorer's range: pre-1970 base 5.5 + type entropy + bonuses
LANDSCAPE_POINTS = 160  # grid resolution per axis; finer adds nothing visible at dpi 80
LANDSCAPE_FLOOR = 1e-2  # log colour scale needs a floor: the valley itself is exactly 0
ANCHOR_PRIMARY = (0.05, 7.5)  # the anchor's "1923 patent" point (w_auth, H bits)
ANCHOR_CONSENSUS = (0.9, 1.0)  # the anchor's "2024 Wikipedia" point


def valley_entropy_bits(w_auth: np.ndarray) -> np.ndarray:
    """H on the zero valley for each w_auth: ln(1 - w + eps) + H = 0, so H = -ln(1 - w + eps) (>= 0)."""
    return np.maximum(-np.log(1.0 - np.asarray(w_auth, dtype=np.float64) + EPSILON), 0.0)


def landscape(alpha: float, points: int = LANDSCAPE_POINTS,
              max_bits: float = LANDSCAPE_MAX_BITS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """L_emp on a (w_auth, H) grid: rows are H, columns w_auth, as imshow/pcolormesh expect."""
    authority = np.linspace(*AUTHORITY_RANGE, points)
    entropy = np.linspace(0.0, max_bits, points)
    grid_w, grid_h = np.meshgrid(authority, entropy)
    values = empirical_distrust_loss(grid_w, grid_h, alpha=alpha, reduction="none")
    return authority, entropy, values


def plot_landscape(ax: plt.Axes, alpha: float, samples: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Heatmap of alpha*d^2 with the zero valley, the anchor's two points and, optionally, the data."""
    authority, entropy, values = landscape(alpha)
    mesh = ax.pcolormesh(authority, entropy, np.maximum(values, LANDSCAPE_FLOOR), shading="auto",
                         norm=LogNorm(vmin=LANDSCAPE_FLOOR, vmax=values.max()), cmap="magma")
    plt.colorbar(mesh, ax=ax, label="L_emp (log scale)")
    valley_h = valley_entropy_bits(authority)
    shown = valley_h <= entropy[-1]
    ax.plot(authority[shown], valley_h[shown], color="cyan", lw=1.5, label="valley: ln(1-w) = -H  (L_emp = 0)")
    if samples is not None:
        ax.scatter(*samples, s=6, color="lightgrey", alpha=0.6, label="sample corpus")
    for (w, h), name, offset_x in ((ANCHOR_PRIMARY, "patent", 6), (ANCHOR_CONSENSUS, "wiki", -6)):
        ax.plot(w, h, "o", color="white", mec="black")
        ax.annotate(f"{name} {empirical_distrust_loss(w, h, alpha=alpha):.1f}", (w, h), textcoords="offset points",
                    xytext=(offset_x, 4), ha="left" if offset_x > 0 else "right", color="white", fontsize=8)
    ax.set(xlabel="authority weight w_auth", ylabel="provenance entropy H (bits)", title=f"L_emp, alpha = {alpha}")
    ax.legend(loc="upper right", fontsize=7)


def weight_table(w_auth: Sequence[float], entropy_bits: Sequence[float], source_types: Sequence[str],
                 cap: float, schemes: Sequence[str] = SCHEMES) -> pd.DataFrame:
    """Long table (source_type, scheme, weight): every scheme's dataset-normalised weight per sample."""
    frames = [pd.DataFrame({"source_type": list(source_types), "scheme": scheme,
                            "weight": distrust_weights(w_auth, entropy_bits, scheme, cap=cap)})
              for scheme in schemes]
    return pd.concat(frames, ignore_index=True)


def weight_stats(table: pd.DataFrame) -> pd.DataFrame:
    """Per scheme: dataset mean (1 by construction), min, max and the max/min ratio the cap bounds."""
    stats = table.groupby("scheme")["weight"].agg(["mean", "min", "max"])
    stats["max_over_min"] = stats["max"] / stats["min"]
    return stats.round(4)


def mean_weight_by_source(table: pd.DataFrame) -> pd.DataFrame:
    """Source types as rows, schemes as columns: which sources each scheme up- or down-weights."""
    return table.pivot_table(index="source_type", columns="scheme", values="weight", aggfunc="mean").round(3)


def plot_weights(ax: plt.Axes, table: pd.DataFrame, scheme: str) -> None:
    """Each sample's weight under one scheme, grouped by source type (log scale: the cap is a ratio)."""
    rows = table[table["scheme"] == scheme]
    order = rows.groupby("source_type")["weight"].mean().sort_values().index
    data = [rows.loc[rows["source_type"] == name, "weight"].to_numpy() for name in order]
    ax.boxplot(data, orientation="horizontal", tick_labels=list(order), widths=0.6)
    ax.axvline(1.0, color="grey", ls="--", lw=1, label="dataset mean = 1")
    ax.set_xscale("log")
    ax.set(xlabel="per-sample weight", title=f"weights: {scheme}")
    ax.legend(loc="lower right", fontsize=7)


def plot_additive_term(ax: plt.Axes, per_sample_term: np.ndarray, source_types: Sequence[str],
                       lambda_weight: float) -> None:
    """lambda * L_emp by source type: what the faithful objective adds (a constant, so no gradient)."""
    frame = pd.DataFrame({"source_type": list(source_types), "added": lambda_weight * per_sample_term})
    means = frame.groupby("source_type")["added"].mean().sort_values()
    ax.barh(means.index, means.to_numpy(), color="tab:orange")
    ax.set(xlabel="mean lambda * L_emp added to CE", title=f"faithful term, lambda = {lambda_weight}")


def draw_panel(w_auth: np.ndarray, entropy_bits: np.ndarray, source_types: Sequence[str], *, alpha: float,
               lambda_weight: float, scheme: str, cap: float) -> plt.Figure:
    """One figure for one setting: landscape, the scheme's weights, and the faithful additive term."""
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2), dpi=FIGURE_DPI)
    plot_landscape(axes[0], alpha, samples=(w_auth, entropy_bits))
    plot_weights(axes[1], weight_table(w_auth, entropy_bits, source_types, cap, schemes=[scheme]), scheme)
    term = empirical_distrust_loss(w_auth, entropy_bits, alpha=alpha, reduction="none")
    plot_additive_term(axes[2], term, source_types, lambda_weight)
    figure.tight_layout()
    return figure


CAP_CHOICES = (1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 50.0, 100.0, 300.0, 1000.0)


def _grid(low: float, high: float, step: float, value: float) -> list[float]:
    """Slider positions rounded to the step, always holding `value` exactly.

    Float sliders snap and echo values such as 2.6999999999999997 back to the kernel on
    first display, which triggers redraws before the user touches anything.
    """
    points = {round(low + step * i, 6) for i in range(int(round((high - low) / step)) + 1)}
    return sorted(points | {float(value)})


def _png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def panel_widget(w_auth: np.ndarray, entropy_bits: np.ndarray, source_types: Sequence[str], *, alpha: float,
                 lambda_weight: float, scheme: str, cap: float) -> Any:
    """Sliders for alpha, lambda, scheme and cap that redraw :func:`draw_panel` as they move (JupyterLab).

    The figure goes into an `ipywidgets.Image` rather than an Output widget: under ipykernel 7
    an Output widget can lose outputs produced from widget callbacks, leaving a blank panel.
    A lock keeps overlapping callbacks from drawing at once.
    """
    import ipywidgets as widgets  # only the interactive path needs it

    controls = {
        "alpha": widgets.SelectionSlider(options=_grid(2.3, 3.0, 0.05, alpha), value=float(alpha), description="alpha"),
        "lambda_weight": widgets.SelectionSlider(options=_grid(0.0, 2.0, 0.05, lambda_weight),
                                                 value=float(lambda_weight), description="lambda"),
        "scheme": widgets.Dropdown(options=list(SCHEMES), value=scheme, description="scheme"),
        "cap": widgets.SelectionSlider(options=sorted(set(CAP_CHOICES) | {float(cap)}), value=float(cap),
                                       description="cap"),
    }
    image = widgets.Image(format="png")
    lock = threading.Lock()

    def redraw(_change: Any = None) -> None:
        with lock:
            settings = {name: control.value for name, control in controls.items()}
            image.value = _png(draw_panel(w_auth, entropy_bits, source_types, **settings))

    for control in controls.values():
        control.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox(list(controls.values())), image])


def gradient_sample(groups: Sequence[str], weights: Sequence[float], size: int) -> list[int]:
    """Row indices for notebook 03's gradient check: the first record of each source type, in order, then records
    at evenly spaced weight ranks until `size`.

    With one source type (a user's corpus without `source_type`, or records whose type was not filled) a
    one-record batch would make weighted CE equal plain CE, and the check would prove nothing; filling by
    weight rank keeps the batch's weights spread as the corpus's are.
    """
    first: dict[str, int] = {}
    for index, group in enumerate(groups):
        first.setdefault(group, index)
    picked = list(first.values())[:size]
    taken = set(picked)
    rest = [int(i) for i in np.argsort(np.asarray(weights, dtype=np.float64), kind="stable") if int(i) not in taken]
    if len(picked) < size and rest:
        ranks = np.linspace(0, len(rest) - 1, num=min(size - len(picked), len(rest)))
        picked += [rest[int(round(r))] for r in ranks]
    return picked


def token_batch(tokenizer: Any, texts: Sequence[str], max_tokens: int) -> dict[str, mx.array]:
    """Right-padded next-token batch (inputs, targets, mask) from texts, truncated to max_tokens targets."""
    encoded = [tokenizer.encode(text)[: max_tokens + 1] for text in texts]
    too_short = [index for index, ids in enumerate(encoded) if len(ids) < 2]
    if too_short:
        raise ValueError(f"texts {too_short} give fewer than 2 tokens: nothing to predict")
    width = max(len(ids) for ids in encoded) - 1
    tokens = np.zeros((len(encoded), width + 1), dtype=np.int32)
    mask = np.zeros((len(encoded), width), dtype=np.float32)
    for row, ids in enumerate(encoded):
        tokens[row, : len(ids)] = ids
        mask[row, : len(ids) - 1] = 1.0
    return {"inputs": mx.array(tokens[:, :-1]), "targets": mx.array(tokens[:, 1:]), "mask": mx.array(mask)}
