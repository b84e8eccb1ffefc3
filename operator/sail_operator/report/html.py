"""`sail report`: one self-contained HTML file for a local run (opens without a server).

Contents: the run's state and the iteration x phase table, per-iteration sample grids
(the train phase renders `samples.png` with the same prompts and seeds every iteration,
plus `samples-base.png` for the base model at iteration 0) embedded as data URIs, metric
plots (PNG, Pillow) from each train phase's `metrics.json`, and the run's spec.

What it shows is read by `report.artifacts` (local or s3:// run roots, committed files
only); this module renders, and `write_report` ties the two together.
"""

from __future__ import annotations

import base64
import html
import logging
from pathlib import Path

import yaml

from sail_api.layout import RunLayout
from sail_operator.local.paths import is_remote
from sail_operator.local.state import LocalState
from sail_operator.report.artifacts import IterationArtifacts, fetch_run_artifacts
from sail_operator.report.plots import Series, render_line_plot
from sail_operator.report.quality import add_quality_section
from sail_operator.report.table import METRIC_COLUMNS, TABLE_HEADERS, build_status_rows

log = logging.getLogger(__name__)
REPORT_FILE = "report.html"


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def build_plots(artifacts: list[IterationArtifacts]) -> dict[str, bytes]:
    """PNG plots per metric; empty (the report says why) when Pillow is not installed."""
    try:
        import PIL  # noqa: F401  (Pillow draws the plots; the lean operator image may lack it)
    except ImportError:
        log.warning("Pillow is not installed: the report has no metric plots (pip install pillow)")
        return {}

    plots = {}
    for metric in METRIC_COLUMNS:
        series = [Series(f"iter {a.iteration}", tuple(h[metric] for h in a.history if metric in h))
                  for a in artifacts]
        series = [s for s in series if s.values]
        if series:
            plots[metric] = render_line_plot(f"{metric} per training step", series)
    return plots


# Narrow screens: images and plots shrink to the page width (max-width:100%), the phase table
# scrolls inside its own box, long paths break anywhere instead of widening the page.
_CSS = """
body{font-family:system-ui,-apple-system,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
code{overflow-wrap:anywhere}.table-box{max-width:100%;overflow-x:auto}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
td.path{overflow-wrap:anywhere;min-width:12em}
.grids{display:flex;flex-wrap:wrap;gap:16px}figure{margin:0;max-width:100%;width:480px}
figure img{image-rendering:pixelated;width:100%;border:1px solid #ccc}figcaption{font-size:.85em;color:#555}
.cols{display:grid;font-size:.7em;color:#555;gap:1px}.cols span{overflow:hidden;text-overflow:ellipsis;
white-space:nowrap;text-align:center}
.plots img{margin:4px;border:1px solid #eee;max-width:100%;height:auto}
pre{background:#f6f6f6;padding:12px;overflow:auto;font-size:.8em}
.Succeeded{color:#1a7f37}.Failed{color:#cf222e}.Running{color:#9a6700}
"""


def render_report_html(state: LocalState, artifacts: list[IterationArtifacts], plots: dict[str, bytes]) -> str:
    """The whole report (pure: everything it shows is passed in)."""
    esc = html.escape
    status = state.status
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content='width=device-width, initial-scale=1'><title>SAIL run {esc(state.name)}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>SAIL run <code>{esc(state.name)}</code></h1>",
             f"<p id=state>State <b class={esc(status.state.value)}>{esc(status.state.value)}</b> - "
             f"{esc(status.message)}<br>Progress {status.progress.percent}% "
             f"({status.progress.completed_phases}/{status.progress.total_phases} phases); storage "
             f"<code>{esc(state.storage_uri)}</code></p>"]
    if status.checkpoint:
        final = status.state.value == "Succeeded" and status.checkpoint.iteration == status.current_iteration
        label = "Final model" if final else f"Latest checkpoint (iteration {status.checkpoint.iteration})"
        parts.append(f"<p id=model>{label}: <code>{esc(status.checkpoint.uri)}</code></p>")
    parts.append("<h2>Sample grids</h2><p>Same prompts and seeds in every iteration: differences come from "
                 "the model.</p><div class=grids>")
    for art in artifacts:
        if art.base_samples:
            parts.append(_figure(art.base_samples, "base model (before step 0)", "base", "base", art.prompts))
        if art.samples:
            label = "step 0" if art.iteration == 0 else f"round {art.iteration}"
            parts.append(_figure(art.samples, f"iteration {art.iteration} ({label})", str(art.iteration), "iteration",
                                 art.prompts))
    parts.append("</div><h2>Training metrics</h2><div class=plots>")
    for metric, png in plots.items():
        parts.append(f"<img class=plot data-metric={esc(metric)} alt='{esc(metric)}' src='{data_uri(png)}'>")
    if not plots:
        has_history = any(a.history for a in artifacts)
        parts.append("<p>No plots: Pillow is not installed (pip install pillow).</p>" if has_history
                     else "<p>No committed training metrics yet.</p>")
    models = {a.iteration: a.model for a in artifacts if a.model}
    parts.append("</div><h2>Phases</h2><div class=table-box>" + _phase_table(state, models) + "</div>")
    spec_text = yaml.safe_dump(state.spec or {}, sort_keys=False) if state.spec else "(no spec recorded)"
    parts.append(f"<h2>Spec</h2><pre id=spec>{esc(spec_text)}</pre></body></html>")

    return "\n".join(add_quality_section(parts, state, artifacts))  # "did it get better?" first


def _figure(png: bytes, caption: str, iteration: str, kind: str, prompts: list[str] | None = None) -> str:
    """A grid image; with its prompts, a label above each column (one column per prompt, rows are seeds)."""
    esc = html.escape
    labels = ""
    if prompts:
        spans = "".join(f"<span title='{esc(p)}'>{esc(p)}</span>" for p in prompts)
        labels = f"<div class=cols style='grid-template-columns:repeat({len(prompts)},1fr)'>{spans}</div>"
    return (f"<figure class='grid {kind}' data-iteration='{esc(iteration)}'>{labels}"
            f"<img alt='{esc(caption)}' src='{data_uri(png)}'><figcaption>{esc(caption)}"
            "</figcaption></figure>")


def _phase_table(state: LocalState, models: dict[int, str] | None = None) -> str:
    head = "".join(f"<th>{h}</th>" for h in TABLE_HEADERS)
    rows = []
    for r in build_status_rows(state, models):
        cells = [str(r.iteration), r.phase, r.result, r.attempts, r.duration, r.numbers, r.checkpoint]
        tds = "".join(f"<td class={html.escape(r.result)}>{html.escape(c)}</td>" if i == 2
                      else f"<td class=path>{html.escape(c)}</td>" if i == len(cells) - 1
                      else f"<td>{html.escape(c)}</td>" for i, c in enumerate(cells))
        rows.append(f"<tr>{tds}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def write_report(state: LocalState, out: Path | None = None, *, state_file: Path | None = None) -> Path:
    """Read the committed artifacts, render, write; returns the file written.

    Default place: `<run root>/report/report.html` for a local run root; for an s3:// root,
    `report/report.html` beside the executor's `local/` folder (found from `state_file`).
    """
    artifacts = fetch_run_artifacts(state)
    html_text = render_report_html(state, artifacts, build_plots(artifacts))
    if out is not None:
        target = out
    elif not is_remote(state.storage_uri):
        target = Path(RunLayout(state.storage_uri).report_dir) / REPORT_FILE
    elif state_file is not None:
        target = state_file.resolve().parent.parent / "report" / REPORT_FILE
    else:
        raise ValueError(f"run root {state.storage_uri} is remote: give --out FILE for the report")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(html_text, encoding="utf-8")
    return target.resolve()
