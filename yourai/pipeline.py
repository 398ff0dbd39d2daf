"""Run the six notebooks with papermill into one run directory, as one product.

Each stage is a notebook `notebooks/NN_*.ipynb`. Every stage gets the same two parameters for its
settings, `config_path` and `overrides`, and calls `load_config(config_path, overrides)` itself, so
`yourai run -c FILE key=value` means exactly what `yourai train -c FILE key=value` means, for every
key, in every stage. Besides those, the runner passes only where things are (`run_dir`, the adapters
stage 06 evaluates) and `interactive = False`. Each stage writes `runs/<name>/NN/summary.json`, and
the run ends with `summary.json` + `summary.md`.
A failing stage keeps its executed notebook (with the error), names itself, and the
stages after it are skipped with the reason. The run directory also gets run.json (the run record)
and report.html (the report card), written through yourai.runs.

A stop signal (SIGTERM, SIGINT, SIGHUP) to `yourai run` is passed on to the notebook's kernel
(`forward_to_kernels`), where a training run finishes its step and checkpoints it
(yourai/train/signals.py); the stage is marked `stopped` in summary.json, the later ones skipped,
and `yourai run --from NN` continues it: a stage that was stopped gets `resume = True` next time,
for notebooks that declare it.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from yourai.config import load_config
from yourai.notebook.summaries import read_headline
from yourai.paths import PROJECT_ROOT
from yourai.stopping import active_request, signal_name
from yourai.runs.pipeline_record import begin_pipeline_record, finish_pipeline_record

CONFIG_PARAMETERS = frozenset({"config_path", "overrides"})  # every pipeline stage's parameters cell declares these
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
    status: str  # ok | failed | skipped | stopped
    seconds: float = 0.0
    error: str | None = None
    summary: dict = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    signal: str | None = None  # the stop signal that stopped (or skipped) this stage


def discover_stages(notebooks_dir: Path) -> dict[str, Path]:
    """{"01": notebooks/01_data_curation.ipynb, ...} in stage order.

    Only the stages of a run (STAGE_TITLES) when the folder has them: 07 analyses a sweep and is run by
    `yourai sweep`. A folder of other numbered notebooks (tests, your own chain) is taken whole.
    """
    found = sorted(notebooks_dir.glob("[0-9][0-9]_*.ipynb"))
    if any(path.name[:2] in STAGE_TITLES for path in found):
        found = [path for path in found if path.name[:2] in STAGE_TITLES]
    stages = {}
    for path in found:
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


def stage_parameters(stage: str, run_dir: Path, config_path: Path | None, overrides: dict) -> dict:
    """What a stage's parameters cell receives: the config file and overrides, and where things are.

    Notebooks run with notebooks/ as their working directory, so the config path is made absolute.
    """
    parameters = {
        "run_dir": str(run_dir),
        "config_path": str(Path(config_path).resolve()) if config_path else None,
        "overrides": dict(overrides),
        "interactive": False,
    }
    if stage == "06":
        parameters["adapter"] = str(run_dir / "04" / "adapters")
    return parameters


def declared_parameters(notebook: Path) -> set[str]:
    """Names assigned in the notebook's `parameters` cell."""
    import papermill

    return set(papermill.inspect_notebook(str(notebook)))


def kernel_manager_class() -> type:
    """jupyter_client's KernelManager on Unix-domain sockets where the OS has them.

    Over TCP ipykernel warns, once per kernel, that traffic is unencrypted; a local socket file is
    neither reachable from the network nor warned about, so `yourai run` prints only its own lines.
    """
    from jupyter_client.manager import KernelManager
    from traitlets import default

    if not hasattr(socket, "AF_UNIX"):
        return KernelManager

    class LocalSocketKernelManager(KernelManager):
        @default("transport")
        def _default_transport(self) -> str:
            return "ipc"

    return LocalSocketKernelManager


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


def execute_stage(stage: str, notebook: Path, run_dir: Path, parameters: dict,
                  required: frozenset[str] = CONFIG_PARAMETERS) -> StageResult:
    """Run one notebook with papermill; never raises for a notebook error.

    `required` are parameters the notebook must declare, or the stage fails before running: a pipeline stage
    must take the run's config (else `-c FILE` would silently not reach it); the sweep analysis (07) reads its
    settings from the sweep it analyses and requires only `run_dir`.
    """
    import papermill

    executed = run_dir / "notebooks" / notebook.name
    executed.parent.mkdir(parents=True, exist_ok=True)
    declared = declared_parameters(notebook)
    injected = {name: value for name, value in parameters.items() if name in declared}
    missing = sorted(required - declared)
    if missing:
        return StageResult(stage, str(notebook), "failed", 0.0,
                           f"{notebook.name}: its parameters cell does not declare {missing}, so the "
                           "settings it is run with would not reach it")
    started = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(notebook), str(executed), parameters=injected, cwd=str(notebook.parent),
            kernel_name="python3", progress_bar=False, log_output=False,
            kernel_manager_class=kernel_manager_class(),
        )
    except Exception as error:  # papermill saved the failing notebook; report, don't hide
        return StageResult(stage, str(executed), "failed", time.perf_counter() - started, _error_text(error))
    result = StageResult(stage, str(executed), "ok", time.perf_counter() - started)
    summary_path = run_dir / stage / "summary.json"
    result.summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    result.figures = save_figures(executed, run_dir / "figures", stage)
    return result


def forward_to_kernels(signum: int) -> None:
    """Pass a stop signal on to the kernels this process started: they run in a session of their own,
    so a Ctrl-C in the terminal or a `kill` of `yourai run` would not reach them."""
    import psutil

    for child in psutil.Process().children():
        try:
            child.send_signal(signum)
        except psutil.NoSuchProcess:
            pass


def execute_in_worker(stage: str, notebook: Path, run_dir: Path, parameters: dict) -> StageResult:
    """execute_stage on a worker thread, so stop signals stay with the main thread's handlers.

    On the main thread nbclient would take SIGINT and SIGTERM for itself and shut the kernel down
    mid-step; off it, it leaves them alone.
    """
    outcome: list[StageResult | BaseException] = []

    def work() -> None:
        try:
            outcome.append(execute_stage(stage, notebook, run_dir, parameters))
        except BaseException as error:  # re-raised on the main thread below
            outcome.append(error)

    worker = threading.Thread(target=work, name=f"yourai-stage-{stage}", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.1)
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def stop_signal() -> str | None:
    """The stop signal this process received while holding them (`graceful_stop`), by name; else None."""
    request = active_request()
    return signal_name(request.signum) if request is not None and request.signum is not None else None


def stopped_stages(run_dir: Path) -> set[str]:
    """Stages the last run of this name left `stopped`: they continue (resume) instead of starting over."""
    path = run_dir / "summary.json"
    if not path.is_file():
        return set()
    stages = json.loads(path.read_text()).get("stages", {})
    return {stage for stage, entry in stages.items() if entry.get("status") == "stopped"}


def earlier_stages(run_dir: Path, results: list[StageResult]) -> dict[str, dict]:
    """Entries of the run's summary.json for stages this invocation did not run (`--only 03` after a full run):
    they stay in the run's report, marked as earlier, instead of vanishing from it."""
    path = run_dir / "summary.json"
    if not path.is_file():
        return {}
    ran = {r.stage for r in results}
    stages = json.loads(path.read_text()).get("stages", {})
    return {stage: {**entry, "earlier": True} for stage, entry in stages.items() if stage not in ran}


def write_summaries(run_dir: Path, name: str, results: list[StageResult]) -> Path:
    """summary.json (machine-readable) and summary.md (the report a person reads): this invocation's stages and
    the earlier ones it left alone, in stage order."""
    stages = earlier_stages(run_dir, results)
    stages.update({r.stage: {"title": STAGE_TITLES.get(r.stage, ""), "status": r.status, "seconds": round(r.seconds, 1),
                             "notebook": r.notebook, "error": r.error, "summary": r.summary, "figures": r.figures,
                             "signal": r.signal}
                   for r in results})
    stages = dict(sorted(stages.items()))
    (run_dir / "summary.json").write_text(json.dumps({"name": name, "stages": stages}, indent=2, default=str) + "\n")
    lines = [f"# yourai run `{name}`", "", "| stage | status | time (s) | key numbers |", "|---|---|---|---|"]
    for stage, entry in stages.items():
        numbers = ", ".join(f"{k}={_fmt(v)}" for k, v in headline(entry.get("summary") or {})) or (entry.get("error") or "")
        status = entry["status"] + (" (earlier invocation)" if entry.get("earlier") else "")
        lines.append(f"| {stage} {STAGE_TITLES.get(stage, '')} | {status} | {entry.get('seconds', 0.0):.1f} | {numbers} |")
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
    """Execute the chosen stages in order; stop at the first failure or stop signal and skip the rest.

    The config is loaded once here so a bad file or key fails before any notebook starts (ConfigError);
    the stages then load the same file and overrides themselves. Stop signals count when the caller
    holds them (`yourai run` does, forwarding them to the kernel).
    """
    config = load_config(config_path, overrides or {})
    available = discover_stages(notebooks_dir)
    chosen = select_stages(list(available), only, start)
    run_dir = (runs_dir / name).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    resuming = stopped_stages(run_dir)
    begin_pipeline_record(run_dir, config, overrides)  # run.json: status running until the stages end
    results: list[StageResult] = []
    failed: StageResult | None = None
    for position, stage in enumerate(chosen, 1):
        notebook = available[stage]
        stopped = stop_signal()
        if failed or stopped:
            reason = f"stopped by {stopped}" if stopped else f"stage {failed.stage} failed"
            results.append(StageResult(stage, str(notebook), "skipped", error=reason, signal=stopped))
            report(f"[{position}/{len(chosen)}] {stage} {STAGE_TITLES.get(stage, '')}: skipped ({reason})")
            continue
        report(f"[{position}/{len(chosen)}] {stage} {STAGE_TITLES.get(stage, '')}: running {notebook.name} ...")
        parameters = stage_parameters(stage, run_dir, config_path, overrides or {})
        parameters.update({"resume": True} if stage in resuming else {})
        result = execute_in_worker(stage, notebook, run_dir, parameters)
        if stop_signal() and result.status != "ok":  # the signal ended it, whatever the kernel reported
            result.status, result.signal = "stopped", stop_signal()
        results.append(result)
        report(f"[{position}/{len(chosen)}] {stage} {STAGE_TITLES.get(stage, '')}: {result.status} in {result.seconds:.1f} s"
               + (f" — {result.error}; see {result.notebook}" if result.error else ""))
        if result.status == "failed":
            failed = result
    summary_md = write_summaries(run_dir, name, results)
    finish_pipeline_record(run_dir, results)  # run.json with every stage's headline, and report.html
    return results, summary_md


