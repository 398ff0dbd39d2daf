"""The README's headline numbers are the demo's: rendered from a run summary, never typed.

The block between the demo-numbers markers must equal what `yourai.readme_numbers.render` makes of the
numbers of the most recent demo on this machine (runs/demo/summary.json, written by `make demo`) or,
in a fresh clone, of the committed docs/demo_numbers.json (which `make demo` rewrote from the run).
Either way the assertion runs: there is no case in which the README's numbers go unchecked.
"""

from __future__ import annotations

import json

import pytest

from yourai.paths import PROJECT_ROOT
from yourai.readme_numbers import NUMBERS_FILE, README, demo_numbers, readme_block, render, update

DEMO_SUMMARY = PROJECT_ROOT / "runs" / "demo" / "summary.json"


def _run_summary(gap_plain=-0.27, gap_weighted=-1.14, status="ok") -> dict:
    return {"name": "demo", "stages": {
        "01": {"status": "ok", "summary": {"records_in": 280, "records_out": 232, "reconciled": True}},
        "04": {"status": status, "summary": {
            "steps": 60, "seeds": [0, 1, 2], "scheme": "monotone", "faithful_bit_identical_to_plain": True,
            "gap_plain_mean": gap_plain, "gap_plain_ci95": 0.06, "gap_weighted_mean": gap_weighted,
            "gap_weighted_ci95": 0.02, "val_loss": 4.9}}}}


def test_readme_numbers_are_the_demos():
    if DEMO_SUMMARY.is_file():  # a demo ran here: the README must carry its numbers (make demo puts them there)
        numbers, source = demo_numbers(json.loads(DEMO_SUMMARY.read_text())), f"{DEMO_SUMMARY} (run make demo)"
    else:  # a fresh clone: the committed numbers, which make demo wrote from its run
        numbers, source = json.loads(NUMBERS_FILE.read_text()), str(NUMBERS_FILE)
    assert readme_block(README.read_text(encoding="utf-8")) == render(numbers), \
        f"README.md's demo numbers differ from {source}: `yourai readme-numbers` rewrites them"


def test_render_states_the_numbers_it_is_given():
    text = render(demo_numbers(_run_summary()))
    assert "(60 steps, 3 seeds)" in text and "plain CE\n−0.27 ± 0.06 nats" in text
    assert "faithful **identical bit for bit**" in text and "weighted (`monotone`) −1.14 ± 0.02" in text
    assert "keeps 232 of the 280 sample records" in text
    assert "+0.50 ± 0.06" in render(demo_numbers(_run_summary(gap_plain=0.5)))


def test_a_run_whose_training_failed_cannot_feed_the_readme():
    with pytest.raises(ValueError, match=r"stages \['04'\] did not finish ok"):
        demo_numbers(_run_summary(status="failed"))


def test_update_rewrites_only_the_block(tmp_path):
    readme, numbers_file, summary = tmp_path / "README.md", tmp_path / "numbers.json", tmp_path / "summary.json"
    readme.write_text(README.read_text(encoding="utf-8"), encoding="utf-8")
    summary.write_text(json.dumps(_run_summary(gap_weighted=-2.5)))
    update(summary, readme, numbers_file)
    before, after = README.read_text(encoding="utf-8"), readme.read_text(encoding="utf-8")
    assert "weighted (`monotone`) −2.50 ± 0.02" in readme_block(after)
    assert after.replace(readme_block(after), "") == before.replace(readme_block(before), "")
    assert json.loads(numbers_file.read_text())["training"]["gap_weighted_mean"] == -2.5
