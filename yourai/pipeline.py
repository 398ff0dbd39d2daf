"""Run the six notebooks with papermill into one run directory, as one product.

Each stage is a notebook `notebooks/NN_*.ipynb`; parameters flow from the config into the
notebook's `parameters` cell (only the names that cell declares), each stage writes
`runs/<name>/NN/summary.json`, and the run ends with `summary.json` + `summary.md`.
A failing stage keeps its executed notebook (with the error), names itself, and the
stages after it are skipped with the reason.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from yourai.config import Config
from yourai.notebook.summaries import read_headline
from yourai.data.curate import shared_corpus_sources
from yourai.paths import PROJECT_ROOT, sample_corpus_path

STAGE_TITLES = {
    "01": "data curation",
    "02": "citation scoring",
    "03": "loss exploration",
    "04": "LoRA training",
    "05": "memory profiling",
    "06": "TruthfulQA evaluation",
}


@dataclass
class StageResult:
    stage: str
    notebook: str
    status: str  # ok | failed | skipped
    seconds: float = 0.0
    error: str | None = None
    summary: dict = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)


def discover_stages(notebooks_dir: Path) -> dict[str, Path]:
    """{"01": notebooks/01_data_curation.ipynb, ...} in stage order."""
    stages = {}
    for path in sorted(notebooks_dir.glob("[0-9][0-9]_*.ipynb")):
        stages.setdefault(path.name[:2], path)
    return stages


def select_stages(available: list[str], only: str | None = None, start: str | None = None) -> list[str]:
    """Apply --only 01,04 and --from 03, refusing stage ids that do not exist."""
    chosen = list(available)
    if only:
        wanted = [item.strip().zfill(2) for item in only.split(",") if item.strip()]
        unknown = [stage for stage in wanted if stage not in available]
        if unknown:
            raise ValueError(f"--only: unknown stage(s) {unknown}; available: {available}")
        chosen = [stage for stage in available if stage in wanted]
    if start:
        start = start.strip().zfill(2)
        if start not in available:
            raise ValueError(f"--from: unknown stage {start!r}; available: {available}")
        chosen = [stage for stage in chosen if stage >= start]
    return chosen


def stage_parameters(stage: str, config: Config, run_dir: Path, config_path: Path | None, overrides: dict) -> dict:
    """Everything the config says about a stage, by the parameter names notebooks use."""
    cfg = config
    common = {
        "run_dir": str(run_dir),
        "config_path": str(config_path) if config_path else None,
        "overrides": overrides,
        "interactive": False,
        "seed": cfg.train.seed,
    }
    sources = [str(_resolve(p)) for p in cfg.curate.sources]
    shared = shared_corpus_sources(names=cfg.curate.shared_corpora) if cfg.curate.shared_corpora else []
    per_stage = {
        "01": {"sources": sources + shared, "seed": cfg.curate.seed, "on_error": cfg.curate.on_error,
               "tier_primary": cfg.curate.tiers.primary, "tier_middle": cfg.curate.tiers.middle,
               "tier_consensus": cfg.curate.tiers.consensus,
               "split_valid": cfg.curate.split.valid, "split_test": cfg.curate.split.test},
        "02": {"corpus_paths": sources, "workers": cfg.scoring.workers or 1},
        "03": {"alpha": cfg.loss.alpha, "lambda_weight": cfg.loss.lambda_weight, "scheme": cfg.loss.scheme,
               "cap": cfg.loss.weight_cap, "model": cfg.model.path,
               "sample_path": sources[0] if sources else str(sample_corpus_path()),
               "lora_rank": cfg.train.lora.rank},
        "04": {"model": cfg.model.path, "data_dir": str(run_dir / "01"), "objective": cfg.loss.objective,
               "scheme": cfg.loss.scheme, "steps": cfg.train.steps},
        "05": {"model": cfg.model.path},
        "06": {"model": cfg.model.path, "adapter": str(run_dir / "04" / "adapters"), "data": cfg.eval.data,
               "limit": cfg.eval.limit, "modes": list(cfg.eval.modes)},
    }
    return {**common, **per_stage.get(stage, {})}


def _resolve(path: str) -> Path:
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return candidate.resolve()
    return (PROJECT_ROOT / candidate).resolve()


def declared_parameters(notebook: Path) -> set[str]:
    """Names assigned in the notebook's `parameters` cell."""
    import papermill

    return set(papermill.inspect_notebook(str(notebook)))


def save_figures(executed: Path, figures_dir: Path, stage: str) -> list[str]:
    """Every PNG output of the executed notebook, as files a README or report can link."""
    import nbformat

    notebook = nbformat.read(executed, as_version=4)
    figures_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    for cell_index, cell in enumerate(notebook.cells):
        for output_index, output in enumerate(cell.get("outputs", [])):
            png = output.get("data", {}).get("image/png")
            if png:
                path = figures_dir / f"{stage}_cell{cell_index:02d}_{output_index}.png"
                path.write_bytes(base64.b64decode(png))
                saved.append(str(path))
    return saved


def _error_text(error: BaseException) -> str:
    ename, evalue = getattr(error, "ename", type(error).__name__), getattr(error, "evalue", str(error))
    cell = getattr(error, "exec_count", None)
    return f"{ename}: {evalue}" + (f" (cell execution #{cell})" if cell is not None else "")


def execute_stage(stage: str, notebook: Path, run_dir: Path, parameters: dict) -> StageResult:
    """Run one notebook with papermill; never raises for a notebook error."""
    import papermill

    executed = run_dir / "notebooks" / notebook.name
    executed.parent.mkdir(parents=True, exist_ok=True)
    declared = declared_parameters(notebook)
    injected = {name: value for name, value in parameters.items() if name in declared}
    started = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(notebook), str(executed), parameters=injected, cwd=str(notebook.parent),
            kernel_name="python3", progress_bar=False, log_output=False,
        )
    except Exception as error:  # papermill saved the failing notebook; report, don't hide
        return StageResult(stage, str(executed), "failed", time.perf_counter() - started, _error_text(error))
    result = StageResult(stage, str(executed), "ok", time.perf_counter() - started)
    summary_path = run_dir / stage / "summary.json"
    result.summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    result.figures = save_figures(executed, run_dir / "figures", stage)
    return result


def write_summaries(run_dir: Path, name: str, results: list[StageResult]) -> Path:
    """summary.json (machine-readable) and summary.md (the report a person reads)."""
    stages = {r.stage: {"title": STAGE_TITLES.get(r.stage, ""), "status": r.status, "seconds": round(r.seconds, 1),
                        "notebook": r.notebook, "error": r.error, "summary": r.summary, "figures": r.figures}
              for r in results}
    (run_dir / "summary.json").write_text(json.dumps({"name": name, "stages": stages}, indent=2, default=str) + "\n")
    lines = [f"# yourai run `{name}`", "", "| stage | status | time (s) | key numbers |", "|---|---|---|---|"]
    for r in results:
        numbers = ", ".join(f"{k}={_fmt(v)}" for k, v in headline(r.summary)) or (r.error or "")
        lines.append(f"| {r.stage} {STAGE_TITLES.get(r.stage, '')} | {r.status} | {r.seconds:.1f} | {numbers} |")
    path = run_dir / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def headline(summary: dict) -> list[tuple[str, Any]]:
    """The headline block the stage's summary function wrote (yourai.notebook.summaries), else its first scalars."""
    return list(read_headline(summary).items()) or _scalars(summary)


def _scalars(summary: dict, prefix: str = "", limit: int = 12) -> list[tuple[str, Any]]:
    """The first `limit` numeric/bool leaves of a stage summary, dotted."""
    found: list[tuple[str, Any]] = []
    for key, value in summary.items():
        if isinstance(value, dict):
            found.extend(_scalars(value, f"{prefix}{key}.", limit))
        elif isinstance(value, (int, float, bool)):
            found.append((f"{prefix}{key}", value))
        if len(found) >= limit:
            break
    return found[:limit]


def _fmt(value: Any) -> str:
    if isinstance(value, list):
        head, *rest = value
        return _fmt(head) + (f" [{', '.join(_fmt(v) for v in rest)}]" if rest else "")
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def run_pipeline(
    config: Config,
    name: str,
    *,
    config_path: Path | None = None,
    overrides: dict | None = None,
    only: str | None = None,
    start: str | None = None,
    notebooks_dir: Path = PROJECT_ROOT / "notebooks",
    runs_dir: Path = PROJECT_ROOT / "runs",
    report: Callable[[str], None] = print,
) -> tuple[list[StageResult], Path]:
    """Execute the chosen stages in order; stop at the first failure and skip the rest."""
    available = discover_stages(notebooks_dir)
    chosen = select_stages(list(available), only, start)
    run_dir = (runs_dir / name).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    results: list[StageResult] = []
    failed: StageResult | None = None
    for position, stage in enumerate(chosen, 1):
        notebook = available[stage]
        if failed:
            results.append(StageResult(stage, str(notebook), "skipped", error=f"stage {failed.stage} failed"))
            report(f"[{position}/{len(chosen)}] {stage} {STAGE_TITLES.get(stage, '')}: skipped (stage {failed.stage} failed)")
            continue
        report(f"[{position}/{len(chosen)}] {stage} {STAGE_TITLES.get(stage, '')}: running {notebook.name} ...")
        parameters = stage_parameters(stage, config, run_dir, config_path, overrides or {})
        result = execute_stage(stage, notebook, run_dir, parameters)
        results.append(result)
        report(f"[{position}/{len(chosen)}] {stage} {STAGE_TITLES.get(stage, '')}: {result.status} in {result.seconds:.1f} s"
               + (f" — {result.error}; see {result.notebook}" if result.error else ""))
        if result.status == "failed":
            failed = result
    return results, write_summaries(run_dir, name, results)


