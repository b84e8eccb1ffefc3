"""`sail status`: the iteration x phase table of a run, as plain text (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from sail_api.layout import RunLayout
from sail_api.phases import phases_of_iteration
from sail_api.status import RunState
from sail_operator.local.state import LocalState

METRIC_COLUMNS = ("loss", "implicit_accuracy", "reward_margin")


@dataclass(frozen=True)
class StatusRow:
    iteration: int
    phase: str
    result: str
    attempts: str
    duration: str
    metrics: tuple[str, ...]
    checkpoint: str


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def format_metric(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}"


def build_status_rows(state: LocalState) -> list[StatusRow]:
    """One row per phase of every iteration in the history, plus the planned ones not started."""
    status = state.status
    layout = RunLayout(state.storage_uri)
    rounds = int((state.spec or {}).get("sail", {}).get("rounds", 0)) if state.spec else 0
    recorded = {(r.iteration, p.phase): p for r in status.iterations for p in r.phases}
    last = max([rounds] + [r.iteration for r in status.iterations])
    rows: list[StatusRow] = []
    for iteration in range(last + 1):
        for phase in phases_of_iteration(iteration):
            rec = recorded.get((iteration, phase.value))
            if rec is None:
                if status.iterations and iteration < status.iterations[0].iteration:
                    continue  # trimmed from the bounded history
                rows.append(StatusRow(iteration, phase.value, "-", "-", "-", ("-",) * len(METRIC_COLUMNS), ""))
                continue
            checkpoint = ""
            if phase.value == "train" and rec.result == "Succeeded":
                checkpoint = (status.checkpoint.uri if status.checkpoint and status.checkpoint.iteration == iteration
                              else layout.model_dir(iteration))
            rows.append(StatusRow(
                iteration, phase.value, rec.result, str(rec.attempts), format_duration(rec.duration_seconds),
                tuple(format_metric(rec.metrics.get(m)) for m in METRIC_COLUMNS), checkpoint,
            ))
    return rows


def render_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def render_status_text(state: LocalState) -> str:
    status = state.status
    head = [
        f"run {state.name}: {status.state.value} - {status.message}".rstrip(" -"),
        f"progress {status.progress.percent}% ({status.progress.completed_phases}/{status.progress.total_phases} "
        f"phases); restarts app={status.restarts.app} infra={status.restarts.infra}",
        f"storage {state.storage_uri}",
    ]
    if status.current:
        head.append(f"current {status.current.job_name} (attempt {status.current.attempt}, "
                    f"recorded {status.current.created_at})")
    if status.backoff_until:
        head.append(f"backing off until {status.backoff_until}")
    if status.checkpoint:
        done = status.state == RunState.SUCCEEDED and status.checkpoint.iteration == status.current_iteration
        label = "final model" if done else f"latest checkpoint (iteration {status.checkpoint.iteration})"
        head.append(f"{label}: {status.checkpoint.uri}")
    headers = ["iter", "phase", "result", "attempts", "duration", *METRIC_COLUMNS, "checkpoint"]
    rows = [[str(r.iteration), r.phase, r.result, r.attempts, r.duration, *r.metrics, r.checkpoint]
            for r in build_status_rows(state)]
    return "\n".join(head) + "\n\n" + render_table(headers, rows)
