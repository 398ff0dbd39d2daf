"""Live training plots: one figure updated in place in JupyterLab, exactly one left in papermill output.

The verified pattern: render the figure to PNG bytes, ``display(Image(png), display_id=True)``
once, then ``handle.update(Image(png))``; nbclient applies the update to the same output, so a
headless run keeps a single final image. Outside IPython nothing is displayed; the PNG is saved.
Redraws are throttled (every ``min_interval_s``) so plotting never dominates a step.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

from yourai.notebook.display import FIGURE_DPI, in_kernel
from yourai.train.callbacks import TrainingCallback

LOSS_PARTS = ("loss", "ce", "weighted_ce")
MEMORY_KEYS = ("rss_mb", "mlx_active_mb", "mlx_cache_mb", "mlx_peak_mb")
MIN_INTERVAL_S = 2.0


def render(history: list[dict], evals: list[dict], title: str = "") -> bytes:
    """The figure as PNG bytes: loss parts + validation per tier (left), memory (right).

    Drawn on a bare Figure with its own Agg canvas: no pyplot and no `matplotlib.use`, so the
    notebook's backend (inline) and its later figures are left alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.2), dpi=FIGURE_DPI)
    FigureCanvasAgg(figure)
    loss_ax, memory_ax = figure.subplots(1, 2)
    for key in LOSS_PARTS:
        points = [(m["step"], m[key]) for m in history if m.get(key) is not None]
        if points:
            loss_ax.plot(*zip(*points), label=key, lw=1.2)
    for key, style in (("val_loss", "o-"), ("val_loss_primary", "^--"), ("val_loss_consensus", "v--")):
        points = [(e["step"], e[key]) for e in evals if e.get(key) is not None]
        if points:
            loss_ax.plot(*zip(*points), style, label=key.replace("val_loss", "val"), ms=3, lw=1)
    loss_ax.set(xlabel="step", ylabel="loss", title=title or "loss parts")
    loss_ax.legend(fontsize=7)
    for key in MEMORY_KEYS:
        points = [(m["step"], m[key]) for m in history if m.get(key) is not None]
        if points:
            memory_ax.plot(*zip(*points), label=key, lw=1.2)
    memory_ax.set(xlabel="step", ylabel="MiB", title="memory")
    memory_ax.legend(fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=FIGURE_DPI)
    return buffer.getvalue()


class LivePlot(TrainingCallback):
    """Plug into Trainer(callbacks=[LivePlot(...)]); `png_path` receives the final figure."""

    def __init__(self, png_path: str | Path | None = None, title: str = "", min_interval_s: float = MIN_INTERVAL_S,
                 display: bool | None = None) -> None:
        self.png_path = Path(png_path) if png_path else None
        self.title, self.min_interval_s = title, min_interval_s
        self.display = in_kernel() if display is None else display
        self.history: list[dict] = []
        self.evals: list[dict] = []
        self.handle: Any = None
        self.redraws = 0
        self._last_draw_s = -float("inf")

    def _show(self, final: bool = False) -> None:
        if not self.display:
            return
        now = time.monotonic()
        if not final and now - self._last_draw_s < self.min_interval_s:
            return
        from IPython.display import Image, display

        image = Image(render(self.history, self.evals, self.title))
        if self.handle is None:
            self.handle = display(image, display_id=True)
        else:
            self.handle.update(image)
        self.redraws += 1
        self._last_draw_s = now

    def on_step_end(self, step: int, metrics: dict) -> None:
        self.history.append(metrics)
        self._show()

    def on_eval(self, step: int, metrics: dict) -> None:
        self.evals.append(metrics)

    def on_train_end(self, summary: dict) -> None:
        """Always leave the complete figure: shown (in place) and saved."""
        png = render(self.history, self.evals, self.title)
        if self.png_path is not None:
            self.png_path.parent.mkdir(parents=True, exist_ok=True)
            self.png_path.write_bytes(png)
        self._show(final=True)
