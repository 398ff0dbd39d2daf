"""Figures for comparing models and arms: the reliability diagram (notebook 06) and the forest plot of paired deltas (07).

Both take plain data (the calibration bins of a results file; the comparison rows of a sweep summary), so
they are usable on any results, and both return the matplotlib Figure.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from yourai.notebook.display import FIGURE_DPI


def reliability_diagram(calibrations: Mapping[str, Mapping[str, Any]], title: str = "MC1 reliability") -> Any:
    """Accuracy vs confidence per bin for each model, the diagonal of perfect calibration, bin counts below.

    `calibrations` maps a model name to a calibration block (yourai.eval.calibration): its `bins`, `ece`, `brier`.
    """
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(5, 5), dpi=FIGURE_DPI, sharex=True,
                                         gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    width = 1.0 / max(len(block["bins"]) for block in calibrations.values())
    for offset, (name, block) in enumerate(calibrations.items()):
        filled = [b for b in block["bins"] if b["n"]]
        top.plot([b["confidence"] for b in filled], [b["accuracy"] for b in filled], marker="o",
                 label=f"{name}: ECE {block['ece']:.3f}, Brier {block['brier']:.3f}")
        shift = (offset - (len(calibrations) - 1) / 2) * width / len(calibrations)
        bottom.bar([(b["low"] + b["high"]) / 2 + shift for b in block["bins"]], [b["n"] for b in block["bins"]],
                   width=width / len(calibrations), label=name)
    top.set(ylabel="accuracy in bin", xlim=(0, 1), ylim=(0, 1), title=title)
    top.legend(fontsize=8, loc="upper left")
    bottom.set(xlabel="confidence (probability of the chosen answer)", ylabel="answers")
    figure.tight_layout()
    return figure


def forest_plot(comparisons: Sequence[Mapping[str, Any]], title: str = "paired deltas vs the baseline arm") -> Any:
    """One panel per eval set (metrics on one scale share it): each arm × metric delta with its 95 % interval."""
    import matplotlib.pyplot as plt

    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in comparisons:
        groups.setdefault(row["eval"], []).append(row)
    if not groups:
        raise ValueError("forest_plot: no comparisons (does the sweep have finished cells in two arms?)")
    heights = [max(1.2, 0.35 * len(rows) + 0.6) for rows in groups.values()]
    figure, axes = plt.subplots(len(groups), 1, figsize=(7, sum(heights)), dpi=FIGURE_DPI, squeeze=False,
                                gridspec_kw={"height_ratios": heights})
    for axis, (name, rows) in zip(axes[:, 0], groups.items()):
        labels = [f"{row['metric']} · {row['arm']}" for row in rows]
        deltas = [row["delta"] for row in rows]
        errors = [[row["delta"] - row["ci"][0] for row in rows], [row["ci"][1] - row["delta"] for row in rows]]
        excludes_zero = ["tab:red" if row["ci"][0] > 0 or row["ci"][1] < 0 else "tab:blue" for row in rows]
        positions = list(range(len(rows)))[::-1]
        for y, delta, low, high, color in zip(positions, deltas, errors[0], errors[1], excludes_zero):
            axis.errorbar(delta, y, xerr=[[low], [high]], fmt="o", color=color, capsize=3)
        axis.axvline(0, color="grey", linewidth=1)
        axis.set_yticks(positions, labels, fontsize=8)
        axis.set_title(f"{name}  (vs {rows[0]['vs']}; red: interval excludes 0)", fontsize=9)
    axes[-1, 0].set_xlabel("arm − baseline (95 % paired bootstrap over seeds × questions)")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure
