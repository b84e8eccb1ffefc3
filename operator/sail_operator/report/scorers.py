"""The evaluate phase's scorer results per iteration (spec.evaluation), for `sail status` and the report.

Each iteration's evaluate metrics (from status) give, per scorer, the mean score of theta_i and of
the base on the same held-out prompts and seeds, and theta_i's win rate against the base and against
theta_{i-1}. Pure.
"""

from __future__ import annotations

import html

from sail_operator.local.state import LocalState
from sail_operator.report.table import evaluation_scorers, format_metric


def collect_scores(state: LocalState) -> dict[int, dict[str, float]]:
    """The succeeded evaluate phase's metrics of each iteration, by iteration."""
    return {record.iteration: phase.metrics for record in sorted(state.status.iterations, key=lambda r: r.iteration)
            for phase in record.phases if phase.phase == "evaluate" and phase.result == "Succeeded" and phase.metrics}


def _name(iteration: int) -> str:
    return "step 0" if iteration == 0 else f"round {iteration}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def build_scorer_table(scores: dict[int, dict[str, float]]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows (base first): per scorer the mean score, and the win rates vs base / vs previous."""
    names = sorted({n for metrics in scores.values() for n in evaluation_scorers(metrics)})
    headers = ["model"] + [h for n in names for h in (f"{n} mean", f"{n} wins vs base / previous")]
    first = next(iter(scores.values()), {})
    table = [["base"] + [c for n in names for c in (format_metric(first.get(f"eval_{n}_mean_base")), "-")]]
    for iteration, m in scores.items():
        table.append([_name(iteration)] + [c for n in names for c in (
            format_metric(m.get(f"eval_{n}_mean_current")),
            f"{_pct(m.get(f'eval_{n}_win_vs_base'))} / {_pct(m.get(f'eval_{n}_win_vs_previous'))}")])
    return headers, table


def describe_scores(scores: dict[int, dict[str, float]]) -> str:
    """One line on the last evaluated iteration against the base, per scorer."""
    if not scores:
        return ""
    last = max(scores)
    m = scores[last]
    parts = [f"{n} {format_metric(m.get(f'eval_{n}_mean_current'))} vs base {format_metric(m.get(f'eval_{n}_mean_base'))}"
             f" (wins {_pct(m.get(f'eval_{n}_win_vs_base'))})" for n in evaluation_scorers(m)]
    return f"Scorers, {_name(last)} against the base on the same held-out prompts and seeds: " + "; ".join(parts) + "."


def render_scorer_text(state: LocalState) -> str:
    scores = collect_scores(state)
    if not scores:
        return ""
    headers, table = build_scorer_table(scores)
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(headers)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in [headers, *table]]
    return "\n".join([describe_scores(scores), *lines])


def render_scorer_html(state: LocalState) -> str:
    scores = collect_scores(state)
    if not scores:
        return ""
    esc = html.escape
    headers, table = build_scorer_table(scores)
    return (f"<p id=scorer-verdict>{esc(describe_scores(scores))}</p><table id=scorers><tr>"
            + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in line) + "</tr>" for line in table)
            + "</table><p>Scorers (spec.evaluation): every model samples the same held-out prompts with the same "
            "seeds; a win is theta_i scoring higher than the other model on the same prompt and seed (ties half).</p>")
