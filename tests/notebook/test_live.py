"""Live plot: throttled in-place updates in a kernel, a saved PNG everywhere, nothing shown outside IPython."""

from __future__ import annotations

import sys
import types

import yourai  # noqa: F401

from yourai.notebook import live

PNG_MAGIC = b"\x89PNG"


def step(i: int) -> dict:
    return {"step": i, "loss": 5.0 - 0.1 * i, "ce": 5.1 - 0.1 * i, "weighted_ce": 4.9 - 0.1 * i, "rss_mb": 150.0 + i,
            "mlx_active_mb": 4.0, "mlx_cache_mb": 20.0, "mlx_peak_mb": 30.0}


def test_outside_ipython_only_the_png_is_written(tmp_path):
    plot = live.LivePlot(tmp_path / "loss.png")
    assert plot.display is False
    for i in range(1, 6):
        plot.on_step_end(i, step(i))
    plot.on_eval(5, {"step": 5, "val_loss": 4.0, "val_loss_primary": 3.5, "val_loss_consensus": 4.5})
    plot.on_train_end({})
    assert (tmp_path / "loss.png").read_bytes().startswith(PNG_MAGIC) and plot.redraws == 0


class FakeHandle:
    def __init__(self) -> None:
        self.updates = 0

    def update(self, obj) -> None:
        assert obj.data.startswith(PNG_MAGIC)
        self.updates += 1


def test_in_a_kernel_one_display_is_updated_in_place_and_throttled(tmp_path, monkeypatch):
    shown = []

    def display(obj, display_id=False):
        assert display_id is True and obj.data.startswith(PNG_MAGIC)
        shown.append(FakeHandle())
        return shown[-1]

    from IPython.display import Image  # a dependency (papermill, ipykernel): an import error must fail, not skip

    fake = types.ModuleType("IPython.display")
    fake.display, fake.Image = display, Image
    monkeypatch.setitem(sys.modules, "IPython.display", fake)
    plot = live.LivePlot(tmp_path / "loss.png", display=True, min_interval_s=3600.0)
    for i in range(1, 20):
        plot.on_step_end(i, step(i))
    plot.on_train_end({})
    assert len(shown) == 1  # one output, ever
    assert shown[0].updates == 1  # throttled: first draw, then only the final one
    assert (tmp_path / "loss.png").is_file()


def _open_figures() -> set[int]:
    """pyplot's open figure numbers (none when pyplot was never imported)."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    return set(pyplot.get_fignums()) if pyplot else set()


def test_rendering_leaves_the_matplotlib_backend_alone(tmp_path):
    """A kernel's inline backend must survive a live plot, or later figures show only text."""
    import matplotlib

    original = matplotlib.get_backend()
    figures_before = _open_figures()  # other tests may leave figures open; this one must add none
    matplotlib.use("svg")  # any backend other than Agg: rendering must not switch away from it
    try:
        before = matplotlib.get_backend()
        plot = live.LivePlot(tmp_path / "loss.png")
        for i in range(1, 4):
            plot.on_step_end(i, step(i))
        plot.on_train_end({})
        after = matplotlib.get_backend()
    finally:
        matplotlib.use(original)
    assert (tmp_path / "loss.png").read_bytes().startswith(PNG_MAGIC)
    assert after == before
    assert _open_figures() == figures_before
