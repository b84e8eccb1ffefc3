"""`sail status`: the iteration x phase table of a run, as plain text (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from sail_api.layout import RunLayout
from sail_api.phases import phases_of_iteration
from sail_api.status import RunState
from sail_operator.local.state import LocalState
from sail_operator.report.quality import render_quality_text

METRIC_COLUMNS = ("loss", "implicit_accuracy", "reward_margin")  # the training metrics plotted per step
TABLE_HEADERS = ("iter", "phase", "result", "attempts", "duration", "numbers", "model")


@dataclass(frozen=True)
class StatusRow:
    iteration: int
    phase: str
    result: str
    attempts: str
    duration: str
    numbers: str      # the phase's own numbers: train means, generate/annotate/mixup counts and margins
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


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def format_phase_numbers(phase: str, metrics: dict[str, float], shards: int = 1) -> str:
    """What a phase did, in its own numbers (pure).

    train: the means over its steps (loss, implicit accuracy, reward margin; the last step's values for
    runs older than the means); generate/annotate: counts summed over shards (the planner keeps the
    mean over shards, so mean x shards) and annotate's mean best-worst margin; mixup: the mixture.
    """
    m = metrics
    if not m:
        return "-"
    if phase == "train":
        mean = "mean_loss" in m
        loss, acc = m.get("mean_loss", m.get("loss")), m.get("mean_implicit_accuracy", m.get("implicit_accuracy"))
        margin = m.get("mean_reward_margin", None if mean else m.get("reward_margin"))
        parts = [f"loss {format_metric(loss)}", f"acc {format_metric(acc)}"]
        if margin is not None:
            parts.append(f"margin {format_metric(margin)}")
        tail = f"{_count(m.get('steps'))} steps" + ("" if mean else ", last step")
        return f"{' '.join(parts)} ({tail})"
    total = {k: v * shards for k, v in m.items()}
    if phase == "generate":
        return f"{_count(total.get('images'))} images of {_count(total.get('prompts'))} prompts"
    if phase == "annotate":
        return f"{_count(total.get('prompts'))} pairs, mean margin {format_metric(m.get('mean_margin'))}"
    if phase == "mixup":
        if "self_drawn" in m:
            return (f"{_count(m.get('mixture_size'))} pairs: {_count(m.get('self_drawn'))} self "
                    f"(of {_count(m.get('self_pairs'))} kept), {_count(m.get('seed_drawn'))} seed")
        return f"{_count(m.get('mixture_size'))} seed pairs"
    if phase == "evaluate":
        return format_evaluate_numbers(m)
    return " ".join(f"{k} {format_metric(v)}" for k, v in sorted(m.items())[:4])


def format_evaluate_numbers(metrics: dict[str, float]) -> str:
    """`<scorer> <mean of theta_i> (base <mean>, win <vs base>/<vs previous>)` per scorer (pure)."""
    parts = []
    for name in evaluation_scorers(metrics):
        mean, base = metrics.get(f"eval_{name}_mean_current"), metrics.get(f"eval_{name}_mean_base")
        wins = [metrics.get(f"eval_{name}_win_vs_{other}") for other in ("base", "previous")]
        shown = "/".join("-" if w is None else f"{100 * w:.0f}%" for w in wins)
        parts.append(f"{name} {format_metric(mean)} (base {format_metric(base)}, wins {shown})")
    return "; ".join(parts) or "-"


def evaluation_scorers(metrics: dict[str, float]) -> list[str]:
    """Scorer names in an evaluate phase's metrics (`eval_<scorer>_mean_current`), in name order."""
    return sorted(k[len("eval_"):-len("_mean_current")] for k in metrics
                  if k.startswith("eval_") and k.endswith("_mean_current"))


def _shards_of(spec: dict | None, phase: str) -> int:
    parallelism = (spec or {}).get("parallelism") or {}
    key = {"generate": "generateShards", "annotate": "annotateShards"}.get(phase)
    return int(parallelism.get(key, 1)) if key else 1


def build_status_rows(state: LocalState, models: dict[int, str] | None = None) -> list[StatusRow]:
    """One row per phase of every iteration in the history, plus the planned ones not started.

    `models`: the committed model folder of each iteration (`attempt-<id>/model`, read from the train
    manifests by the caller); without it an older iteration shows its logical model folder.
    """
    models = models or {}
    status = state.status
    layout = RunLayout(state.storage_uri)
    rounds = int((state.spec or {}).get("sail", {}).get("rounds", 0)) if state.spec else 0
    recorded = {(r.iteration, p.phase): p for r in status.iterations for p in r.phases}
    last = max([rounds] + [r.iteration for r in status.iterations])
    rows: list[StatusRow] = []
    for iteration in range(last + 1):
        for phase in phases_of_iteration(iteration, bool((state.spec or {}).get("evaluation"))):
            rec = recorded.get((iteration, phase.value))
            if rec is None:
                if status.iterations and iteration < status.iterations[0].iteration:
                    continue  # trimmed from the bounded history
                rows.append(StatusRow(iteration, phase.value, "-", "-", "-", "-", ""))
                continue
            checkpoint = ""
            if phase.value == "train" and rec.result == "Succeeded":
                checkpoint = (status.checkpoint.uri if status.checkpoint and status.checkpoint.iteration == iteration
                              else models.get(iteration, layout.model_dir(iteration)))
            rows.append(StatusRow(
                iteration, phase.value, rec.result, str(rec.attempts), format_duration(rec.duration_seconds),
                format_phase_numbers(phase.value, rec.metrics, _shards_of(state.spec, phase.value)), checkpoint,
            ))
    return rows


def render_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def render_status_text(state: LocalState, models: dict[int, str] | None = None) -> str:
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
    rows = [[str(r.iteration), r.phase, r.result, r.attempts, r.duration, r.numbers, r.checkpoint]
            for r in build_status_rows(state, models)]

    quality = render_quality_text(state)  # held-out accuracy and judge trust per iteration, with a verdict
    return "\n".join(head) + "\n\n" + render_table(list(TABLE_HEADERS), rows) + (f"\n\n{quality}" if quality else "")
