"""report.html: one self-contained page per run — config, environment, each stage's headline numbers and figures.

Figures are embedded as data URIs and the style is inline, so the page opens anywhere (a browser, an
e-mail attachment, an archive) with no network and no other file; links to the executed notebooks are
relative, so they work while the page sits in its run directory.
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Any, Mapping

from yourai.runs.record import effective_status, read_record

REPORT = "report.html"
STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:70rem;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0} td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left;
vertical-align:top;font-size:.9rem} th{background:#f4f4f4} .ok{color:#17692c} .failed,.interrupted,.aborted{color:#b00020}
.skipped,.running,.stopped{color:#8a6d00} figure{display:inline-block;margin:.5rem} img{max-width:100%;border:1px solid #eee}
pre{background:#f7f7f7;padding:.6rem;overflow-x:auto;font-size:.85rem} .muted{color:#666;font-size:.9rem}
"""


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
        head, *rest = value
        return _cell(head) + (f" [{', '.join(_cell(v) for v in rest)}]" if rest else "")
    return html.escape(json.dumps(value) if isinstance(value, (dict, list)) else str(value))


def _table(rows: Mapping[str, Any], header: tuple[str, str] = ("", "")) -> str:
    if not rows:
        return '<p class="muted">(none)</p>'
    head = f"<tr><th>{html.escape(header[0])}</th><th>{html.escape(header[1])}</th></tr>" if any(header) else ""
    body = "".join(f"<tr><td>{html.escape(str(key))}</td><td>{_cell(value)}</td></tr>" for key, value in rows.items())
    return f"<table>{head}{body}</table>"


def _figure(path: str | Path, caption: str) -> str:
    """An <img> whose source is the PNG itself, base64-encoded (no file or network needed to show it)."""
    path = Path(path)
    if not path.is_file():
        return f'<p class="muted">figure {html.escape(path.name)} is missing</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f'<figcaption class="muted">{html.escape(caption)}</figcaption></figure>')


def _stage_section(stage: str, info: Mapping[str, Any], run_dir: Path) -> str:
    status = info.get("status", "unknown")
    title = f"{stage} {info.get('title', '')}".strip()
    parts = [f'<h3>{html.escape(title)} <span class="{html.escape(status)}">{html.escape(status)}</span> '
             f'<span class="muted">{info.get("seconds", 0)} s'
             + (" · an earlier invocation" if info.get("earlier") else "") + '</span></h3>']
    notebook = info.get("notebook")
    if notebook and Path(notebook).is_file():
        relative = os.path.relpath(Path(notebook).resolve(), run_dir.resolve())
        parts.append(f'<p>executed notebook: <a href="{html.escape(relative)}">{html.escape(relative)}</a></p>')
    if info.get("error"):
        parts.append(f"<pre>{html.escape(str(info['error']))}</pre>")
    headline = (info.get("summary") or {}).get("headline") or {}
    if headline:
        parts.append(_table(headline, ("headline", "value [low, high]")))
    parts.extend(_figure(path, f"{stage} · {Path(path).stem}") for path in info.get("figures") or [])
    return "\n".join(parts)


def _environment(record: Mapping[str, Any]) -> str:
    git = record.get("git") or {}
    model = record.get("model") or {}
    facts = {"git commit": git.get("commit"), "work tree dirty": git.get("dirty"), "model": model.get("id"),
             "model weights sha256": model.get("weights_sha256"), "config sha256": record.get("config_hash"),
             "host": record.get("host"), "command": " ".join(record.get("command") or [])}
    data = {role: f"{entry.get('path')} (sha256 {(entry.get('sha256') or '?')[:16]}…)"
            for role, entry in (record.get("data") or {}).items()}
    return ("<h2>Environment</h2>" + _table(facts) + "<h3>Machine</h3>" + _table(record.get("machine") or {})
            + "<h3>Packages</h3>" + _table(record.get("packages") or {}) + "<h3>Data</h3>" + _table(data))


def render_report(run_dir: str | Path) -> str:
    """The page as a string, from run.json and summary.json of a `yourai run` directory."""
    run_dir = Path(run_dir)
    record = read_record(run_dir)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {"stages": {}}
    name = summary.get("name") or record.get("name") or run_dir.name
    status = effective_status(record) if record else "unknown"
    stages = "\n".join(_stage_section(stage, info, run_dir) for stage, info in summary["stages"].items())
    config = json.dumps(record.get("config") or {}, indent=2, default=str)
    overrides = record.get("overrides") or {}
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>yourai run {html.escape(name)}</title><style>{STYLE}</style></head>
<body>
<h1>yourai run <code>{html.escape(name)}</code></h1>
<p>status <span class="{html.escape(status)}">{html.escape(status)}</span> · started {html.escape(str(record.get("started")))}
 · ended {html.escape(str(record.get("ended")))}</p>
<h2>Stages</h2>
{stages or '<p class="muted">no stages ran</p>'}
<h2>Configuration</h2>
<p>overrides: {_cell(overrides) if overrides else "none"}</p>
<details><summary>resolved config (sha256 {html.escape(str(record.get("config_hash")))})</summary><pre>{html.escape(config)}</pre></details>
{_environment(record)}
</body></html>
"""


def write_report(run_dir: str | Path) -> Path:
    """Write <run_dir>/report.html and return its path."""
    path = Path(run_dir) / REPORT
    path.write_text(render_report(run_dir), encoding="utf-8")
    return path
