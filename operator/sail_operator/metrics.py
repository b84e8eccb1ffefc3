"""Operator metrics (prometheus_client): names shared with the chart's dashboard and alerts.

Two kinds of series:
- process counters/histograms/gauges, updated by the reconcile as things happen;
- per-run gauges, built *at scrape time* by `RunCollector` from the operator's in-memory
  index of SAILRuns (`RunIndex`). A deleted run is dropped from the index, so its series
  vanish at the next scrape: no stale series, no `remove()` bookkeeping.

Every label value is bounded: phases, results and causes are enums (anything else is
reported as "other"); namespace and run come from the objects the operator serves (Kubernetes
bounds both). A model URI is user text of any length and may name private buckets: it is never a
label. `sail_run_info` shows a short display name (the URI's last path segment, cut to
MODEL_NAME_MAX characters) and a 12-hex-digit digest of the whole URI, so two models that share a
name still differ.

Labelled counters and histograms are pre-initialised (value 0) for every label set known up
front, and `sail_gpu_seconds_total` for every phase of a namespace when the first run of that
namespace is seen: `increase()` and `rate()` need a sample *before* the first event, otherwise a
series born at 1 shows an increase of 0 (issue 14 item 9).

Names follow Prometheus conventions: `sail_` prefix, base units, `_total` for counters. The
standard `process_*` metrics (CPU, memory, open files, start time) are on the same registry.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sail_api.phases import Phase
from sail_api.status import RunState
from sail_operator.planner.timefmt import parse_time

PHASES = tuple(phase.value for phase in Phase)
RESULTS = ("succeeded", "failed")
CAUSES = ("none", "app", "infra", "non_retryable", "deadline")
HANDLERS = ("run_event", "job_event", "timer", "requeue")  # the `handler` label of the handler metrics
RESTART_CAUSES = ("app", "infra")
MODEL_NAME_MAX = 48  # characters of the model's display name on sail_run_info
MODEL_DIGEST_HEX = 12  # hex digits of sha256(model URI) on sail_run_info

COUNTERS = (
    "sail_runs_created_total",
    "sail_runs_finished_total",
    "sail_phase_attempts_total",
    "sail_gpu_seconds_total",
    "sail_operator_handler_errors_total",
)
HISTOGRAMS = (
    "sail_phase_duration_seconds",
    "sail_phase_queue_wait_seconds",
    "sail_operator_handler_duration_seconds",
)
GAUGES = ("sail_operator_watch_last_event_timestamp_seconds",)
RUN_GAUGES = (
    "sail_run_info",
    "sail_run_state",
    "sail_run_current_iteration",
    "sail_run_target_iterations",
    "sail_run_progress_ratio",
    "sail_run_last_checkpoint_timestamp_seconds",
    "sail_run_phase_started_timestamp_seconds",
    "sail_run_restarts",
    "sail_run_heldout_accuracy",
    "sail_run_judge_trust",
    "sail_run_eval_score",
    "sail_run_eval_win_rate",
)
METRIC_NAMES: tuple[str, ...] = COUNTERS + HISTOGRAMS + GAUGES + RUN_GAUGES

# Phases last minutes to many hours; queue waits seconds to hours.
DURATION_BUCKETS = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400)
QUEUE_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200)
HANDLER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def build_model_labels(uri: str) -> tuple[str, str]:
    """Pure: a model URI -> (display name, digest), both of bounded length.

    The name is the last path segment (no scheme, host or credentials), cut to MODEL_NAME_MAX
    characters; the digest tells apart models that share a name. An empty URI gives ("", "").
    """
    if not uri:
        return "", ""
    name = uri.rstrip("/").rsplit("/", 1)[-1] or uri
    digest = hashlib.sha256(uri.encode("utf-8", "surrogatepass")).hexdigest()[:MODEL_DIGEST_HEX]
    return name[:MODEL_NAME_MAX], digest


def bounded(value: Any, allowed: tuple[str, ...]) -> str:
    """Keep label cardinality bounded: an unexpected value becomes 'other'."""
    text = str(value.value if hasattr(value, "value") else value) if value is not None else "none"
    return text if text in allowed else "other"


@dataclass(frozen=True)
class RunSnapshot:
    """What the per-run gauges show about one SAILRun (built from its object at reconcile time)."""

    namespace: str
    name: str
    model: str = ""
    state: str = RunState.PENDING.value
    current_iteration: int | None = None
    target_iterations: int | None = None
    progress_ratio: float = 0.0
    last_checkpoint_timestamp: float | None = None
    phase_started: Mapping[str, float] = field(default_factory=dict)
    restarts: Mapping[str, int] = field(default_factory=dict)
    heldout_accuracy: Mapping[str, float] = field(default_factory=dict)  # against: base | reference
    judge_trust: float | None = None
    eval_scores: Mapping[tuple[str, str], float] = field(default_factory=dict)  # (scorer, model) -> mean score
    eval_win_rates: Mapping[tuple[str, str], float] = field(default_factory=dict)  # (scorer, against) -> win rate


HELDOUT_AGAINST = {"base": "heldout_accuracy_vs_base", "reference": "heldout_accuracy"}


def compute_latest_quality(status: Mapping[str, Any]) -> tuple[dict[str, float], float | None]:
    """The latest succeeded train's held-out accuracies and the latest annotate's judge trust in a status."""
    accuracy: dict[str, float] = {}
    trust = None
    iterations = status.get("iterations") if isinstance(status.get("iterations"), list) else []
    for record in sorted((r for r in iterations if isinstance(r, Mapping) and isinstance(r.get("iteration"), int)),
                         key=lambda r: r["iteration"]):
        for phase in record.get("phases") or []:
            metrics = phase.get("metrics") if isinstance(phase, Mapping) else None
            if not isinstance(metrics, Mapping) or phase.get("result") != "Succeeded":
                continue
            found = {k: float(metrics[m]) for k, m in HELDOUT_AGAINST.items() if isinstance(metrics.get(m), int | float)}
            if phase.get("phase") == "train" and found:
                accuracy = found
            if phase.get("phase") == "annotate" and isinstance(metrics.get("judge_trust"), int | float):
                trust = float(metrics["judge_trust"])
    return accuracy, trust


MAX_SCORERS = 8  # scorer label values per run (spec.evaluation names them; more are left out of the gauges)
_EVAL_METRIC = re.compile(r"^eval_([a-z0-9-]+)_(mean_base|mean_previous|mean_current|win_vs_base|win_vs_previous)$")


def compute_latest_evaluation(status: Mapping[str, Any]) -> dict[str, dict[tuple[str, str], float]]:
    """The latest succeeded evaluate phase's scorer means and win rates in a status (spec.evaluation)."""
    latest: Mapping[str, Any] = {}
    iterations = status.get("iterations") if isinstance(status.get("iterations"), list) else []
    for record in sorted((r for r in iterations if isinstance(r, Mapping) and isinstance(r.get("iteration"), int)),
                         key=lambda r: r["iteration"]):
        for phase in record.get("phases") or []:
            if (isinstance(phase, Mapping) and phase.get("phase") == "evaluate" and phase.get("result") == "Succeeded"
                    and isinstance(phase.get("metrics"), Mapping)):
                latest = phase["metrics"]
    scores: dict[tuple[str, str], float] = {}
    wins: dict[tuple[str, str], float] = {}
    found = [(m.groups(), value) for key, value in sorted(latest.items())
             if (m := _EVAL_METRIC.match(str(key))) and isinstance(value, int | float)]
    kept = sorted({scorer for (scorer, _), _ in found})[:MAX_SCORERS]
    for (scorer, kind), value in found:
        if scorer not in kept:
            continue
        target, which = (scores, kind[len("mean_"):]) if kind.startswith("mean_") else (wins, kind[len("win_vs_"):])
        target[(scorer, which)] = float(value)
    return {"eval_scores": scores, "eval_win_rates": wins}


def build_evaluation_families(runs: list[RunSnapshot], key: list[str]) -> tuple[Metric, Metric]:
    score = GaugeMetricFamily("sail_run_eval_score", "Latest evaluate phase's mean score per scorer (spec.evaluation) "
                              "of the base, theta_{i-1} (previous) and theta_i (current) on the same held-out prompts "
                              "and seeds.", labels=key + ["scorer", "model"])
    win = GaugeMetricFamily("sail_run_eval_win_rate", "Latest evaluate phase's share of samples on which theta_i "
                            "scores above the base or theta_{i-1} (same prompt and seed; ties half).",
                            labels=key + ["scorer", "against"])
    for run in runs:
        for (scorer, model), value in run.eval_scores.items():
            score.add_metric([run.namespace, run.name, scorer, model], value)
        for (scorer, against), value in run.eval_win_rates.items():
            win.add_metric([run.namespace, run.name, scorer, against], value)
    return score, win


def _timestamp(value: Any) -> float | None:
    moment = parse_time(value)
    return None if moment is None else moment.timestamp()


def build_run_snapshot(raw: Mapping[str, Any]) -> RunSnapshot:
    """Pure: a SAILRun object (even a half-valid one) -> the facts its gauges show."""
    meta = raw.get("metadata") or {}
    spec = raw.get("spec") if isinstance(raw.get("spec"), Mapping) else {}
    status = raw.get("status") if isinstance(raw.get("status"), Mapping) else {}
    model = spec.get("model") if isinstance(spec.get("model"), Mapping) else {}
    sail = spec.get("sail") if isinstance(spec.get("sail"), Mapping) else {}
    progress = status.get("progress") if isinstance(status.get("progress"), Mapping) else {}
    checkpoint = status.get("checkpoint") if isinstance(status.get("checkpoint"), Mapping) else {}
    current = status.get("current") if isinstance(status.get("current"), Mapping) else {}
    restarts = status.get("restarts") if isinstance(status.get("restarts"), Mapping) else {}
    started: dict[str, float] = {}
    phase = current.get("phase")
    stamp = _timestamp(current.get("startedAt")) or _timestamp(current.get("createdAt"))
    if isinstance(phase, str) and stamp is not None:
        started[bounded(phase, PHASES)] = stamp
    rounds = sail.get("rounds", 3)
    heldout, trust = compute_latest_quality(status)
    percent = progress.get("percent", 0)
    return RunSnapshot(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        model=str(model.get("uri") or ""),
        state=str(status.get("state") or RunState.PENDING.value),
        current_iteration=status.get("currentIteration") if isinstance(status.get("currentIteration"), int) else None,
        target_iterations=rounds if isinstance(rounds, int) else None,
        progress_ratio=max(0.0, min(1.0, float(percent) / 100.0)) if isinstance(percent, int | float) else 0.0,
        last_checkpoint_timestamp=_timestamp(checkpoint.get("time")),
        phase_started=started,
        restarts={cause: int(restarts.get(cause) or 0) for cause in RESTART_CAUSES},
        heldout_accuracy=heldout,
        judge_trust=trust,
        **compute_latest_evaluation(status),
    )


class RunIndex:
    """The operator's in-memory view of the runs it serves (thread-safe: scraped from another thread)."""

    def __init__(self, on_new_namespace: Callable[[str], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._runs: dict[tuple[str, str], RunSnapshot] = {}
        self._namespaces: set[str] = set()
        self._on_new_namespace = on_new_namespace

    def put(self, snapshot: RunSnapshot) -> None:
        with self._lock:
            self._runs[(snapshot.namespace, snapshot.name)] = snapshot
            new = snapshot.namespace not in self._namespaces
            self._namespaces.add(snapshot.namespace)
        if new and self._on_new_namespace is not None:
            self._on_new_namespace(snapshot.namespace)

    def remove(self, namespace: str, name: str) -> None:
        with self._lock:
            self._runs.pop((namespace, name), None)

    def snapshots(self) -> list[RunSnapshot]:
        with self._lock:
            return list(self._runs.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._runs)


class RunCollector(Collector):
    """Per-run gauges, computed from the index at every scrape."""

    def __init__(self, index: RunIndex) -> None:
        self._index = index

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: families are built at collect time

    def collect(self) -> Iterator[Metric]:
        runs = self._index.snapshots()
        key = ["namespace", "run"]
        info = GaugeMetricFamily("sail_run_info", "SAILRun served by the operator (always 1); model: short name "
                                 "of spec.model.uri, model_digest: its sha256 prefix.",
                                 labels=key + ["model", "model_digest"])
        state = GaugeMetricFamily("sail_run_state", "1 for the run's current state, 0 for the others.",
                                  labels=key + ["state"])
        iteration = GaugeMetricFamily("sail_run_current_iteration", "Iteration in progress (0 = step 0).", labels=key)
        target = GaugeMetricFamily("sail_run_target_iterations", "Last iteration of the run (spec.sail.rounds).",
                                   labels=key)
        ratio = GaugeMetricFamily("sail_run_progress_ratio", "Finished phases / all phases (0..1).", labels=key)
        checkpoint = GaugeMetricFamily("sail_run_last_checkpoint_timestamp_seconds",
                                       "Unix time of the latest committed checkpoint.", labels=key)
        phase_started = GaugeMetricFamily("sail_run_phase_started_timestamp_seconds",
                                          "Unix time the current phase attempt started.", labels=key + ["phase"])
        restarts = GaugeMetricFamily("sail_run_restarts", "Retries spent, by budget.", labels=key + ["cause"])
        heldout = GaugeMetricFamily("sail_run_heldout_accuracy", "Latest model's accuracy on the held-out human "
                                    "pairs (0.5 = chance), against the base or its training reference.",
                                    labels=key + ["against"])
        trust = GaugeMetricFamily("sail_run_judge_trust", "Latest round's judge agreement with the held-out human "
                                  "labels before its self-labels were used (0.5 = chance).", labels=key)
        for run in runs:
            labels = [run.namespace, run.name]
            info.add_metric(labels + list(build_model_labels(run.model)), 1.0)
            for value in RunState:
                state.add_metric(labels + [value.value], 1.0 if run.state == value.value else 0.0)
            if run.current_iteration is not None:
                iteration.add_metric(labels, float(run.current_iteration))
            if run.target_iterations is not None:
                target.add_metric(labels, float(run.target_iterations))
            ratio.add_metric(labels, run.progress_ratio)
            if run.last_checkpoint_timestamp is not None:
                checkpoint.add_metric(labels, run.last_checkpoint_timestamp)
            for phase, stamp in run.phase_started.items():
                phase_started.add_metric(labels + [phase], stamp)
            for cause in RESTART_CAUSES:
                restarts.add_metric(labels + [cause], float(run.restarts.get(cause, 0)))
            for against, accuracy in run.heldout_accuracy.items():
                heldout.add_metric(labels + [against], accuracy)
            if run.judge_trust is not None:
                trust.add_metric(labels, run.judge_trust)
        yield from (info, state, iteration, target, ratio, checkpoint, phase_started, restarts, heldout, trust,
                    *build_evaluation_families(runs, key))


class OperatorMetrics:
    """All operator metrics on one registry (a fresh one per operator process or per test)."""

    def __init__(self, registry: CollectorRegistry | None = None, index: RunIndex | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.index = index or RunIndex(on_new_namespace=self.initialise_namespace)
        r = self.registry
        self.runs_created = Counter("sail_runs_created", "SAILRuns started by the operator.", registry=r)
        self.runs_finished = Counter("sail_runs_finished", "SAILRuns that reached a final state.", ["result"],
                                     registry=r)
        self.phase_attempts = Counter("sail_phase_attempts", "Finished phase attempts (Jobs).",
                                      ["phase", "result", "cause"], registry=r)
        self.gpu_seconds = Counter("sail_gpu_seconds", "GPU-seconds requested by finished phase Jobs.",
                                   ["namespace", "phase"], registry=r)
        self.handler_errors = Counter("sail_operator_handler_errors", "Handler invocations that raised.",
                                      ["handler"], registry=r)
        self.phase_duration = Histogram("sail_phase_duration_seconds", "Wall time of successful phase attempts.",
                                        ["phase"], buckets=DURATION_BUCKETS, registry=r)
        self.queue_wait = Histogram("sail_phase_queue_wait_seconds", "Job creation to first pod start.",
                                    ["phase"], buckets=QUEUE_BUCKETS, registry=r)
        self.handler_duration = Histogram("sail_operator_handler_duration_seconds", "Handler wall time.",
                                          ["handler"], buckets=HANDLER_BUCKETS, registry=r)
        self.watch_last_event = Gauge("sail_operator_watch_last_event_timestamp_seconds",
                                      "Unix time of the last watch event the operator handled.", registry=r)
        self.registry.register(RunCollector(self.index))
        ProcessCollector(registry=r)  # process_* (no-op where /proc is missing)
        self._initialise_known_label_sets()

    def _initialise_known_label_sets(self) -> None:
        """A 0 sample for every label set known up front, so increase()/rate() see the first event."""
        for result in RESULTS:
            self.runs_finished.labels(result)
        for phase in PHASES:
            self.phase_attempts.labels(phase, "succeeded", "none")
            for cause in CAUSES:
                self.phase_attempts.labels(phase, "failed", cause)
            self.phase_duration.labels(phase)
            self.queue_wait.labels(phase)
        for handler in HANDLERS:
            self.handler_errors.labels(handler)
            self.handler_duration.labels(handler)

    def initialise_namespace(self, namespace: str) -> None:
        """GPU-seconds of a namespace start at 0 for every phase when its first run is seen."""
        for phase in PHASES:
            self.gpu_seconds.labels(namespace, phase)

    def record_attempt(self, namespace: str, phase: str, result: str, cause: str | None,
                       duration: float | None, queue_wait: float | None, gpus: float) -> None:
        """One finished phase attempt: counters and histograms together."""
        phase_label = bounded(phase, PHASES)
        self.phase_attempts.labels(phase_label, bounded(result, RESULTS), bounded(cause, CAUSES)).inc()
        if duration is not None and duration >= 0:
            if result == "succeeded":
                self.phase_duration.labels(phase_label).observe(duration)
            if gpus > 0:
                self.gpu_seconds.labels(namespace, phase_label).inc(gpus * duration)
        if queue_wait is not None and queue_wait >= 0:
            self.queue_wait.labels(phase_label).observe(queue_wait)

    def record_run_finished(self, result: str) -> None:
        self.runs_finished.labels(bounded(result, RESULTS)).inc()


def build_metrics() -> OperatorMetrics:
    return OperatorMetrics()


def build_registry() -> CollectorRegistry:
    """A fresh registry holding every operator metric (for tests and tools)."""
    return build_metrics().registry


METRICS = build_metrics()  # the operator process's own metrics


def start_metrics_server(port: int, metrics: OperatorMetrics = METRICS, addr: str = "127.0.0.1") -> Any:
    """Serve /metrics over HTTP in a daemon thread; returns the server (port 0 picks a free one).

    Loopback unless told otherwise: /metrics is unauthenticated and lists every tenant's runs, so
    the chart binds it to the pod IP (`--metrics-address=$(POD_IP)`) and fences it with a
    NetworkPolicy; a `sail operator` on a laptop keeps it local.
    """
    return start_http_server(port, addr=addr, registry=metrics.registry)
