"""Notebook 03 as a person meets it: JupyterLab in a real Chromium, Run All, the live widget panel redraws.

Skipped when Debian's Chromium is absent (`.ci/run` installs it, so CI runs it). Playwright drives
/usr/bin/chromium and never downloads a browser; the server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from browser_support import CHROMIUM_ARGS, CHROMIUM_PATH, LabServer, start_lab

PROJECT_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = "03_loss_exploration.ipynb"
VIEWPORT = {"width": 1400, "height": 1200}   # tall enough for the widget panel and its figure in one shot
KERNEL_READY_TIMEOUT_MS = 90_000             # lab assets + kernel start on 2 cores
RUN_ALL_TIMEOUT_MS = 360_000                 # includes building the default model when it is not cached
PANEL_IMAGE = ".widget-vbox img"           # the panel's figure (an Output's PNG or an Image widget)
# Anything the panel's callback wrote to stderr (a traceback renders with this MIME type too).
PANEL_STDERR = '.widget-vbox .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
SCHEME_SELECT = ".widget-vbox .widget-dropdown select"
MIN_NOTEBOOK_IMAGES = 3                      # landscape, weights by source, the live panel
PANEL_QUIET_S = 3.0                          # the panel's figure must stay unchanged this long to count as drawn
PANEL_SETTLE_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.25

# In CI (CI=true) the browser is required: a missing Chromium fails the run instead of skipping it silently.
IN_CI = os.environ.get("CI", "").strip().lower() in ("true", "1")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM_PATH.exists() and not IN_CI,
                       reason=f"{CHROMIUM_PATH} not installed (apt-get install chromium; .ci/run does it)"),
]


@pytest.fixture(scope="module", autouse=True)
def chromium_installed() -> None:
    """Reached only when the module is not skipped: in CI without Chromium, say so and fail."""
    if not CHROMIUM_PATH.exists():
        pytest.fail(f"CI=true but {CHROMIUM_PATH} is missing: the real-browser test must run in CI "
                    "(.ci/run installs Debian's chromium)")

# JavaScript run in the page (window.jupyterapp exists because the server sets expose_app_in_browser).
KERNEL_IDLE_JS = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const kernel = panel && panel.sessionContext && panel.sessionContext.session
                 && panel.sessionContext.session.kernel;
  return !!(kernel && kernel.status === 'idle' && panel.context.isReady);
}"""
START_RUN_ALL_JS = """() => {
  window.__runAllResult = undefined;
  window.jupyterapp.commands.execute('notebook:run-all-cells').then(
    ok => { window.__runAllResult = String(ok); },
    error => { window.__runAllResult = 'rejected: ' + error; });
}"""
SETTLED_JS = """() => {
  const busy = Array.from(document.querySelectorAll('.jp-InputPrompt')).some(p => p.textContent.includes('*'));
  const panel = window.jupyterapp.shell.currentWidget;
  return !busy && panel.sessionContext.session.kernel.status === 'idle';
}"""
# What the notebook model holds after the run: errors (ename: evalue) and code cells left unexecuted.
# (In the DOM a traceback renders with the stderr MIME type, so only the model tells errors from warnings.)
CELL_REPORT_JS = """() => {
  const cells = window.jupyterapp.shell.currentWidget.content.widgets;
  const errors = [], unexecuted = [];
  cells.forEach((cell, index) => {
    if (cell.model.type !== 'code') return;
    if (cell.model.executionCount === null) unexecuted.push(index);
    cell.model.outputs.toJSON().filter(o => o.output_type === 'error')
      .forEach(o => errors.push(`cell ${index}: ${o.ename}: ${o.evalue}`));
  });
  return {errors, unexecuted};
}"""


@pytest.fixture(scope="module")
def default_model() -> Path:
    """Build (or find) the embedded default before the browser's clock starts, not inside the kernel."""
    from yourai.models import ensure_default_model

    return ensure_default_model()


@pytest.fixture
def lab_server(tmp_path: Path, default_model: Path) -> Iterator[LabServer]:
    """JupyterLab serving a tmp copy of notebook 03, laid out so its ../data and ../runs paths resolve."""
    root = tmp_path / "lab-root"
    (root / "notebooks").mkdir(parents=True)
    shutil.copy2(PROJECT_ROOT / "notebooks" / NOTEBOOK, root / "notebooks" / NOTEBOOK)
    (root / "data").symlink_to(PROJECT_ROOT / "data", target_is_directory=True)  # read-only use
    server = start_lab(root, tmp_path / "lab-state")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def lab_page(lab_server: LabServer) -> Iterator[Page]:
    """A Chromium page (fresh profile, Playwright's default) with notebook 03 open and its kernel idle."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM_PATH), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(f"{lab_server.url}/lab/tree/notebooks/{NOTEBOOK}")
            page.wait_for_function(KERNEL_IDLE_JS, timeout=KERNEL_READY_TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def run_all_cells(page: Page) -> str:
    """Run All from the command registry; wait until it resolves and no cell is queued or running."""
    page.evaluate(START_RUN_ALL_JS)
    page.wait_for_function("() => window.__runAllResult !== undefined", timeout=RUN_ALL_TIMEOUT_MS)
    page.wait_for_function(SETTLED_JS, timeout=KERNEL_READY_TIMEOUT_MS)
    return page.evaluate("() => window.__runAllResult")


def panel_image_state(page: Page) -> dict:
    """The panel's figures (count, src of the first, decoded width) and any stderr text inside the panel."""
    return page.evaluate("""([imageSelector, stderrSelector]) => {
      const images = Array.from(document.querySelectorAll(imageSelector));
      const stderr = Array.from(document.querySelectorAll(stderrSelector)).map(e => e.textContent);
      return {count: images.length, src: images.length ? images[0].src : null,
              width_px: images.length ? images[0].naturalWidth : 0, stderr};
    }""", [PANEL_IMAGE, PANEL_STDERR])


def wait_for_settled_panel(page: Page, previous_src: str | None = None) -> dict:
    """The panel once it shows one decoded figure (other than previous_src) that stays put for PANEL_QUIET_S.

    Slider views may snap their values on first render and send them back, so the kernel can redraw a few
    times right after the cell ran; the test compares figures only after that settles.
    """
    deadline = time.monotonic() + PANEL_SETTLE_TIMEOUT_S
    state, stable_since = panel_image_state(page), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL_S)
        current = panel_image_state(page)
        if current != state:
            state, stable_since = current, time.monotonic()
            continue
        drawn = state["count"] == 1 and state["width_px"] > 0 and state["src"] != previous_src
        if (drawn or state["stderr"]) and time.monotonic() - stable_since >= PANEL_QUIET_S:
            return state
    pytest.fail(f"the live panel did not settle within {PANEL_SETTLE_TIMEOUT_S:.0f} s: {state}")


def save_screenshot(page: Page, path: Path) -> None:
    """Full-page PNG with the widget panel's cell scrolled to the top (the notebook scrolls inside the page)."""
    page.evaluate("""() => {
      const panel = document.querySelector('.widget-vbox');
      if (panel) panel.closest('.jp-Cell').scrollIntoView({block: 'start'});
    }""")
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def test_notebook_03_runs_all_cells_in_jupyterlab_and_its_live_panel_redraws(
        lab_page: Page, lab_server: LabServer, tmp_path: Path) -> None:
    page = lab_page
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
    assert page.locator(".jp-OutputArea-output img").count() == 0, "committed outputs survived Clear All Outputs"

    result = run_all_cells(page)
    try:
        panel = wait_for_settled_panel(page)
    finally:
        save_screenshot(page, tmp_path / "notebook03.png")  # also on failure, to see what went wrong

    report = page.evaluate(CELL_REPORT_JS)
    assert report["errors"] == [], f"error outputs: {report['errors']}\nserver log:\n{lab_server.log_tail()}"
    assert report["unexecuted"] == [], f"code cells not executed: {report['unexecuted']}"
    assert result == "true", f"Run All resolved {result!r}"
    assert panel["stderr"] == [], f"the live panel wrote to stderr: {panel['stderr']}"
    assert panel["count"] == 1 and panel["width_px"] > 0, f"the live panel should show one decoded figure: {panel}"
    images = page.locator(".jp-OutputArea-output img").count()
    assert images >= MIN_NOTEBOOK_IMAGES, f"{images} rendered images, expected >= {MIN_NOTEBOOK_IMAGES}"

    # The panel is live: choosing another weighting scheme makes the kernel redraw the figure.
    current = page.locator(SCHEME_SELECT).input_value()
    page.locator(SCHEME_SELECT).select_option("roemmele" if current != "roemmele" else "monotone")
    redrawn = wait_for_settled_panel(page, previous_src=panel["src"])
    assert redrawn["stderr"] == [], f"redrawing the panel wrote to stderr: {redrawn['stderr']}"
    assert redrawn["src"] != panel["src"], "the figure did not change after choosing another scheme"
    save_screenshot(page, tmp_path / "notebook03_redrawn.png")
