"""report.html: a real `yourai run` writes it; Chromium renders every figure, logs no error, asks the network for nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

from yourai.pipeline import run_pipeline
from yourai.runs.record import read_record
from yourai.runs.report import render_report

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebook"))  # browser_support lives there
from browser_support import CHROMIUM_ARGS, CHROMIUM_PATH  # noqa: E402

PLOTTING_STAGE = """
import json, pathlib
import matplotlib.pyplot as plt
from IPython.display import display
from yourai.notebook.summaries import write_summary
for figure_index in range(2):
    figure, axis = plt.subplots(figsize=(3, 2), dpi=60)
    axis.plot([0, 1, 2], [figure_index, 1, 0])
    display(figure)
    plt.close(figure)
from yourai.config import load_config
seed = load_config(config_path, overrides).train.seed
write_summary(pathlib.Path(run_dir) / STAGE, {"seed": seed}, {"seed": seed, "score": [0.5, 0.4, 0.6]})
"""
IMAGES_JS = """() => Array.from(document.images).map(img => ({
  complete: img.complete, width: img.naturalWidth, height: img.naturalHeight, data: img.src.startsWith('data:image/png')}))"""


def _notebook(path: Path, stage: str, body: str) -> None:
    params = nbformat.v4.new_code_cell("run_dir = 'x'\nconfig_path = None\noverrides = {}")
    params.metadata["tags"] = ["parameters"]
    notebook = nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell(f"STAGE = '{stage}'\n{body}")])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A `yourai run` over two plotting stages and a failing one: run.json and report.html as users get them."""
    root = tmp_path_factory.mktemp("report")
    notebooks = root / "notebooks"
    notebooks.mkdir()
    _notebook(notebooks / "01_plots.ipynb", "01", PLOTTING_STAGE)
    _notebook(notebooks / "04_more.ipynb", "04", PLOTTING_STAGE)
    _notebook(notebooks / "06_broken.ipynb", "06", "raise RuntimeError('broken on purpose')")
    run_pipeline("card", overrides={"train.seed": 5}, notebooks_dir=notebooks, runs_dir=root / "runs",
                 report=lambda line: None)
    return root / "runs" / "card"


def test_run_writes_a_record_and_a_self_contained_report(run_dir):
    record = read_record(run_dir)
    assert record["kind"] == "pipeline" and record["status"] == "failed"
    assert [record["stages"][s]["status"] for s in ("01", "04", "06")] == ["ok", "ok", "failed"]
    assert record["metrics"] == {"01 seed": 5, "01 score": 0.5, "04 seed": 5, "04 score": 0.5}  # every stage reads the overrides
    assert record["overrides"] == {"train.seed": 5} and record["config"]["train"]["seed"] == 5
    page = (run_dir / "report.html").read_text()
    assert page == render_report(run_dir)
    assert page.count('src="data:image/png;base64,') == 4
    assert "http://" not in page and "https://" not in page  # nothing to fetch
    assert 'href="notebooks/01_plots.ipynb"' in page and "RuntimeError: broken on purpose" in page


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM_PATH.exists(), reason=f"{CHROMIUM_PATH} not installed (apt-get install chromium)")
def test_report_renders_every_figure_in_chromium_without_errors(run_dir):
    from playwright.sync_api import sync_playwright

    console_errors, page_errors, requests = [], [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM_PATH), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda message: console_errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.on("request", lambda request: requests.append(request.url))
            page.goto((run_dir / "report.html").as_uri(), wait_until="load")
            images = page.evaluate(IMAGES_JS)
            title = page.title()
            page.screenshot(path=str(run_dir / "report.png"), full_page=True)
        finally:
            browser.close()
    assert title == "yourai run card"
    assert len(images) == 4 and all(image["data"] and image["complete"] for image in images)
    assert all(image["width"] > 0 and image["height"] > 0 for image in images), images  # decoded, so drawn
    assert console_errors == [] and page_errors == []
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
