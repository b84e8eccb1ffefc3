"""The process supervisor of `sail run`: shard processes started, reaped, stopped; their outcome.

It knows processes, not plans: `start` queues an attempt's shards (up to `workers` at once,
one GPU each when there are GPUs), `poll` reaps the processes that exited and returns the
attempts that finished as `AttemptObservation`s (the planner's one attempt type), `stop`
terminates an attempt's process groups (SIGTERM, SIGKILL after a grace period).

How a process is started is injected (`spawn`), so the bookkeeping -- exit code and summary to
a failure cause, shards to one attempt, the deadline -- runs in-process in tests with stand-in
processes; `spawn_phase_process` is the real one.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Protocol

from sail_api.phases import SHARD_INDEX_ENV, TERMINATION_LOG_ENV, PhaseSummary
from sail_operator.local.progress import ProgressLine, combine_shards, parse_progress_line
from sail_operator.planner import timefmt
from sail_operator.planner.model import AttemptObservation, AttemptState, FailureCause, compute_failure_cause

log = logging.getLogger(__name__)

TERMINATE_GRACE_SECONDS = 10.0
READER_JOIN_SECONDS = 5.0


class PhaseProcess(Protocol):
    """The part of `subprocess.Popen` the supervisor uses (a stand-in in in-process tests)."""

    pid: int
    stdout: Iterable[str] | None

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


SpawnFn = Callable[[list[str], dict[str, str]], PhaseProcess]
ProgressFn = Callable[[str, int, ProgressLine | None], None]  # attempt name, shard count, combined line


def _set_parent_death_signal() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def spawn_phase_process(command: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """Start one shard: its own session (the terminal's Ctrl-C reaches only `sail run`), SIGTERM
    from the kernel if `sail run` dies (Linux), output on a pipe the supervisor reads."""
    return subprocess.Popen(  # noqa: S603 - a list of arguments, no shell
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        text=True, bufsize=1, env=env, start_new_session=True,
        preexec_fn=_set_parent_death_signal if sys.platform.startswith("linux") else None,  # noqa: PLW1509
    )


def signal_group(process: PhaseProcess, sig: int) -> None:
    """Signal a shard's whole process group (the trainer may have children of its own)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class ShardProcess:
    index: int
    process: PhaseProcess
    summary_path: Path
    log_path: Path
    reader: threading.Thread | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    progress: ProgressLine | None = None
    gpu: str | None = None


@dataclass
class RunningAttempt:
    """An attempt whose shards are queued or running under this supervisor."""

    record: AttemptObservation
    command: list[str]
    pending: deque[int]
    running: dict[int, ShardProcess] = field(default_factory=dict)
    summaries: dict[int, PhaseSummary] = field(default_factory=dict)
    failure: tuple[FailureCause, str] | None = None
    progress: dict[int, ProgressLine] = field(default_factory=dict)  # latest line of each shard, finished too

    @property
    def done(self) -> bool:
        return not self.running and (not self.pending or self.failure is not None)


def read_summary(path: Path) -> PhaseSummary | None:
    try:
        return PhaseSummary.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return None


def judge_shard(shard: ShardProcess, code: int, summary: PhaseSummary | None) -> tuple[FailureCause, str] | None:
    """One exited shard -> None (it succeeded and reported) or (cause, message naming why)."""
    cause = compute_failure_cause(code)
    if cause is None:
        if summary is not None:
            return None
        return FailureCause.APP, f"exited 0 but wrote no summary to {shard.summary_path}"
    detail = (summary.error if summary and summary.error else None) or (shard.tail[-1] if shard.tail else "")
    return cause, f"shard {shard.index} exit code {code}: {detail} (log: {shard.log_path})"


def conclude_attempt(attempt: RunningAttempt, now: datetime) -> AttemptObservation:
    """The finished attempt as the planner reads it: its summaries in shard order, or its failure."""
    record = attempt.record
    started = record.started_at or now
    if attempt.failure is None:
        return replace(record, state=AttemptState.SUCCEEDED, started_at=started, finished_at=now,
                       summaries=tuple(attempt.summaries[k] for k in sorted(attempt.summaries)))
    cause, message = attempt.failure
    return replace(record, state=AttemptState.FAILED, started_at=started, finished_at=now, cause=cause,
                   message=message)


class ProcessSupervisor:
    """Starts, reaps and stops the shard processes of the attempts `sail run` runs."""

    def __init__(self, attempt_dir: Callable[[str], Path], *, workers: int = 1, gpus: Iterable[str] = (),
                 extra_env: dict[str, str] | None = None, deadline_seconds: int | None = None,
                 spawn: SpawnFn = spawn_phase_process, kill: Callable[[PhaseProcess, int], None] = signal_group,
                 clock: Callable[[], datetime] = timefmt.now, on_progress: ProgressFn | None = None) -> None:
        self.attempt_dir = attempt_dir
        self.workers = max(1, workers)
        self.gpus = list(gpus)
        self.extra_env = dict(extra_env or {})
        self.deadline_seconds = deadline_seconds
        self.spawn = spawn
        self.kill = kill
        self.clock = clock
        self.on_progress = on_progress
        self.running: dict[str, RunningAttempt] = {}

    def __bool__(self) -> bool:
        return bool(self.running)

    def records(self) -> Iterator[AttemptObservation]:
        """The attempts under way, as the planner should see them now (pending or running)."""
        return (attempt.record for attempt in self.running.values())

    def start(self, record: AttemptObservation, command: list[str]) -> None:
        """Queue the attempt's shards and start as many as `workers` allows; a name already
        running here is left alone (the planner re-creating an attempt we run)."""
        if record.name in self.running:
            return
        self.attempt_dir(record.name).mkdir(parents=True, exist_ok=True)
        attempt = RunningAttempt(record=record, command=command, pending=deque(range(record.shards or 1)))
        self.running[record.name] = attempt
        self._start_shards(attempt)

    def poll(self) -> list[AttemptObservation]:
        """Reap exited shards, start queued ones, enforce the deadline; the attempts that finished."""
        finished = []
        for name, attempt in list(self.running.items()):
            for index, shard in list(attempt.running.items()):
                code = shard.process.poll()
                if code is not None:
                    self._reap(attempt, index, shard, code)
            self._check_deadline(attempt)
            self._start_shards(attempt)
            self._show_progress(attempt)
            if attempt.done:
                record = conclude_attempt(attempt, self.clock())
                log.info("iteration=%d phase=%s attempt=%d: %s", record.iteration, record.phase.value,
                         record.attempt, f"failed: {attempt.failure}" if attempt.failure else "done")
                del self.running[name]
                finished.append(record)
        return finished

    def stop(self, name: str) -> bool:
        """Terminate an attempt's processes; False when it was not running here."""
        attempt = self.running.pop(name, None)
        if attempt is None:
            return False
        self._terminate(attempt)
        for shard in attempt.running.values():
            if shard.reader is not None:
                shard.reader.join(timeout=READER_JOIN_SECONDS)
        return True

    def stop_all(self) -> list[str]:
        """Terminate everything (interrupt); the names of the attempts that were stopped."""
        names = list(self.running)
        for attempt in self.running.values():
            self._terminate(attempt)
        self.running.clear()
        return names

    # -------------------------------------------------------------- shards

    def _start_shards(self, attempt: RunningAttempt) -> None:
        while attempt.pending and len(attempt.running) < self.workers and attempt.failure is None:
            index = attempt.pending.popleft()
            attempt.running[index] = self._spawn(attempt, index)
            if attempt.record.started_at is None:
                attempt.record = replace(attempt.record, started_at=self.clock(), state=AttemptState.RUNNING)

    def _shard_env(self, attempt: RunningAttempt, index: int, summary_path: Path) -> dict[str, str]:
        # OMP_WAIT_POLICY=PASSIVE unless set: idle torch threads sleep, not spin (docs/dev/threads.md).
        env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, **self.extra_env, TERMINATION_LOG_ENV: str(summary_path),
               "PYTHONUNBUFFERED": "1"}
        if attempt.record.shards is not None:
            env[SHARD_INDEX_ENV] = str(index)
            if self.gpus:  # one GPU per shard process, like one GPU per pod of an Indexed Job
                busy = {s.gpu for s in attempt.running.values()}
                env["CUDA_VISIBLE_DEVICES"] = next((g for g in self.gpus if g not in busy),
                                                   self.gpus[index % len(self.gpus)])
        return env

    def _spawn(self, attempt: RunningAttempt, index: int) -> ShardProcess:
        folder = self.attempt_dir(attempt.record.name)
        summary_path = folder / f"shard-{index}.summary.json"
        summary_path.unlink(missing_ok=True)
        env = self._shard_env(attempt, index, summary_path)
        rec = attempt.record
        log.info("iteration=%d phase=%s attempt=%d shard=%d: starting %s", rec.iteration, rec.phase.value,
                 rec.attempt, index, attempt.command)
        shard = ShardProcess(index=index, process=self.spawn(attempt.command, env), summary_path=summary_path,
                             log_path=folder / f"shard-{index}.log", gpu=env.get("CUDA_VISIBLE_DEVICES"))
        shard.reader = threading.Thread(target=_read_output, args=(shard,), daemon=True)
        shard.reader.start()
        return shard

    def _reap(self, attempt: RunningAttempt, index: int, shard: ShardProcess, code: int) -> None:
        if shard.reader is not None:
            shard.reader.join(timeout=READER_JOIN_SECONDS)
        if shard.progress is not None:
            attempt.progress[index] = shard.progress
        del attempt.running[index]
        summary = read_summary(shard.summary_path)
        failure = judge_shard(shard, code, summary)
        if failure is None and summary is not None:
            attempt.summaries[shard.index] = summary
        elif failure is not None and attempt.failure is None:
            attempt.failure = failure
            self._terminate(attempt)

    def _check_deadline(self, attempt: RunningAttempt) -> None:
        limit, started = self.deadline_seconds, attempt.record.started_at
        if limit is None or started is None or attempt.failure is not None:
            return
        if (self.clock() - started).total_seconds() > limit:
            attempt.failure = (FailureCause.DEADLINE, f"ran longer than activeDeadlineSeconds={limit}")
            self._terminate(attempt)

    def _show_progress(self, attempt: RunningAttempt) -> None:
        for index, shard in attempt.running.items():
            if shard.progress is not None:
                attempt.progress[index] = shard.progress
        if self.on_progress is not None:
            lines = [attempt.progress[k] for k in sorted(attempt.progress)]
            self.on_progress(attempt.record.name, attempt.record.shards or 1,
                             combine_shards(lines, attempt.record.shards))

    def _terminate(self, attempt: RunningAttempt) -> None:
        """SIGTERM every running shard's process group, SIGKILL after a grace period."""
        attempt.pending.clear()
        shards = list(attempt.running.values())
        for shard in shards:
            self.kill(shard.process, signal.SIGTERM)
        deadline = time.monotonic() + TERMINATE_GRACE_SECONDS
        for shard in shards:
            try:
                shard.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill(shard.process, signal.SIGKILL)
                shard.process.wait()


def _read_output(shard: ShardProcess) -> None:
    """Copy a phase's output to its log file, keep its tail and latest progress line."""
    if shard.process.stdout is None:
        return
    with shard.log_path.open("a") as sink:
        for line in shard.process.stdout:
            sink.write(line)
            sink.flush()
            parsed = parse_progress_line(line)
            if parsed is not None:
                shard.progress = parsed
            elif line.strip():
                shard.tail.append(line.rstrip())
