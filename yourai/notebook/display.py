"""Where a notebook helper is running, and how big its figures are: one answer for every helper."""

from __future__ import annotations

FIGURE_DPI = 80  # small embedded PNGs (tens of kB): notebooks are committed with their outputs
NON_INTERACTIVE_PARENTS = ("papermill", "pytest", "nbconvert", "nbclient")  # batch runners of notebooks


def in_kernel() -> bool:
    """True inside a Jupyter kernel (display updates work there, live frontend or papermill alike)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return getattr(get_ipython(), "kernel", None) is not None


def is_interactive_session() -> bool:
    """True in a live frontend (JupyterLab); False when papermill, nbval or nbconvert drive the kernel."""
    import psutil  # the kernel's ancestors tell who is driving it; no frontend comm exists before display

    if not in_kernel():  # a script or a terminal IPython: no widgets
        return False
    try:
        ancestors = psutil.Process().parents()
        command_lines = " ".join(" ".join(process.cmdline()) for process in ancestors)
    except psutil.Error:
        return False
    try:
        import ipywidgets  # noqa: F401  (a frontend without widgets cannot show the panel)
    except ImportError:
        return False
    return not any(runner in command_lines for runner in NON_INTERACTIVE_PARENTS)
