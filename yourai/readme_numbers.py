"""The README's headline numbers, rendered from a demo run's summary so a reader can regenerate every one.

`make demo` runs the six stages into runs/demo/ and then `yourai readme-numbers runs/demo/summary.json`,
which keeps the numbers it needs in docs/demo_numbers.json (committed) and rewrites the README's block
between the two markers from them. tests/test_readme.py renders the block again from the committed file
(or from runs/demo/summary.json when a demo was run here) and fails when the README says anything else,
so a hand-edited number, or a demo run whose numbers were not carried into the README, cannot pass.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

from yourai.paths import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"
NUMBERS_FILE = PROJECT_ROOT / "docs" / "demo_numbers.json"
BEGIN = "<!-- demo-numbers: rendered by `yourai readme-numbers` from docs/demo_numbers.json; make demo updates it -->"
END = "<!-- /demo-numbers -->"
_BLOCK_RE = re.compile(re.escape(BEGIN) + r"\n(.*?)\n" + re.escape(END), re.S)
CURATION_KEYS = ("records_in", "records_out")
TRAINING_KEYS = ("steps", "seeds", "scheme", "faithful_bit_identical_to_plain", "gap_plain_mean", "gap_plain_ci95",
                 "gap_weighted_mean", "gap_weighted_ci95")


def demo_numbers(run_summary: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers the README states, taken from a `yourai run` summary.json (stages 01 and 04)."""
    stages = run_summary["stages"]
    missing = [stage for stage in ("01", "04") if stages.get(stage, {}).get("status") != "ok"]
    if missing:
        raise ValueError(f"the run's stages {missing} did not finish ok: the README needs curation and training")
    curation, training = stages["01"]["summary"], stages["04"]["summary"]
    return {"run": run_summary["name"], "curation": {key: curation[key] for key in CURATION_KEYS},
            "training": {key: training[key] for key in TRAINING_KEYS}}


def _nats(value: float, signed: bool = False) -> str:
    """A number as the README prints it: two decimals, a true minus sign."""
    return (f"{value:+.2f}" if signed else f"{value:.2f}").replace("-", "−")


def render(numbers: Mapping[str, Any]) -> str:
    """The README paragraph that carries the numbers."""
    curation, training = numbers["curation"], numbers["training"]
    faithful = "**identical bit for bit**" if training["faithful_bit_identical_to_plain"] else "**NOT identical**"
    return (f"On the embedded default ({training['steps']} steps, {len(training['seeds'])} seeds) the demo measures\n"
            f"what each form does to the gap between primary-source and consensus-source validation loss: plain CE\n"
            f"{_nats(training['gap_plain_mean'], True)} ± {_nats(training['gap_plain_ci95'])} nats, faithful {faithful}, "
            f"weighted (`{training['scheme']}`) {_nats(training['gap_weighted_mean'], True)} ± "
            f"{_nats(training['gap_weighted_ci95'])}.\nCuration keeps {curation['records_out']} of the "
            f"{curation['records_in']} sample records after chunking, dedup and tier balancing.")


def readme_block(readme_text: str) -> str:
    """The text between the markers (ValueError when the README has lost them)."""
    match = _BLOCK_RE.search(readme_text)
    if match is None:
        raise ValueError(f"{README}: the demo-numbers markers are missing")
    return match.group(1)


def update(run_summary_path: str | Path, readme: Path = README, numbers_file: Path = NUMBERS_FILE) -> dict[str, Any]:
    """Write docs/demo_numbers.json from a run summary and re-render the README block; returns the numbers."""
    numbers = demo_numbers(json.loads(Path(run_summary_path).read_text(encoding="utf-8")))
    numbers_file.write_text(json.dumps(numbers, indent=2) + "\n", encoding="utf-8")
    text = readme.read_text(encoding="utf-8")
    readme_block(text)  # refuse to write when the markers are gone
    readme.write_text(_BLOCK_RE.sub(lambda _: f"{BEGIN}\n{render(numbers)}\n{END}", text), encoding="utf-8")
    return numbers
