"""The local executor: `decide` (the operator's planner) driving `sail-trainer` processes.

observe: the state file (status + finished attempts) and the processes this executor runs.
decide:  `sail_operator.planner.decide.decide`, unchanged.
act:     write the status (state file) first, then start / stop phase processes.

A phase attempt is the same command line a Job runs (`sail_api.phases.build_phase_args`),
started as `[python, -m, sail_trainer, ...]`, one process per shard (JOB_COMPLETION_INDEX
set per process, up to `workers` at once), the resolved spec in a file passed as --spec,
the summary read back from a per-shard termination-log file. Exit codes map to the
planner's failure causes as the Job's podFailurePolicy does on a cluster.

Interrupt (Ctrl-C / SIGTERM): children get SIGTERM (then SIGKILL), the state is saved with
the running attempt forgotten, and the next `sail run` re-creates it under the same name.
Children are in their own session (the terminal's Ctrl-C reaches only us) and get SIGTERM
from the kernel if this process dies (PR_SET_PDEATHSIG on Linux), so a SIGKILLed `sail run`
leaves no phase running behind.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from sail_api.phases import (
    SHARD_INDEX_ENV,
    TERMINATION_LOG_ENV,
    ExitCode,
    PhaseSummary,
    build_phase_args,
)
from sail_api.resolved import build_resolved_run
from sail_api.spec import SAILRun
from sail_api.status import TERMINAL_STATES, RunState
from sail_operator.local.paths import RunPaths
from sail_operator.local.progress import ProgressDisplay, ProgressLine, combine_shards, parse_progress_line
from sail_operator.local.state import (
    AttemptRecord,
    LocalState,
    build_resumed_state,
    build_retry_of_failed,
    load_state,
    save_state,
)
from sail_operator.planner.decide import decide
from sail_operator.planner.model import (
    AttemptState,
    CreatePhaseJob,
    Decision,
    DeletePhaseJob,
    EmitEvent,
    FailureCause,
    Observed,
    RequeueAfter,
)

log = logging.getLogger(__name__)

EXIT_COMPLETE = 0
EXIT_FAILED = 1
EXIT_SUSPENDED = 3
EXIT_INTERRUPTED = 130
POLL_SECONDS = 0.05
TERMINATE_GRACE_SECONDS = 10.0
TRAINER_MODULE = "sail_trainer"


def map_exit_code(code: int) -> FailureCause | None:
    """Exit code of a phase process -> planner failure cause (None: success)."""
    if code == ExitCode.OK:
        return None
    if code in (ExitCode.BAD_SPEC, ExitCode.BAD_DATA):
        return FailureCause.NON_RETRYABLE
    if code == ExitCode.TRANSIENT:
        return FailureCause.INFRA
    return FailureCause.APP


def build_trainer_program(python: str | None = None) -> list[str]:
    """`[python, -m, sail_trainer]`: the same program the Job's container runs as `sail-trainer`."""
    return [python or sys.executable, "-m", TRAINER_MODULE]


def build_trainer_command(program: list[str], action: CreatePhaseJob, run_uri: str, spec_path: Path) -> list[str]:
    return [*program, *build_phase_args(action.phase, run_uri, action.iteration, str(spec_path), action.shards)]


def parse_gpu_list(nvidia_smi_output: str, visible: str | None) -> list[str]:
    """GPU ids this machine offers: CUDA_VISIBLE_DEVICES if set, else `nvidia-smi -L` lines."""
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    return [str(n) for n, line in enumerate(row for row in nvidia_smi_output.splitlines() if row.startswith("GPU "))]


def detect_gpus() -> list[str]:
    """The GPUs shard processes are spread over (one per process); [] on a CPU-only machine."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    smi = shutil.which("nvidia-smi")
    if visible is not None or smi is None:
        return parse_gpu_list("", visible) if visible is not None else []
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_gpu_list(listing, None)


def _set_parent_death_signal() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class ShardProcess:
    index: int
    process: subprocess.Popen[str]
    summary_path: Path
    log_path: Path
    reader: threading.Thread
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    progress: ProgressLine | None = None
    gpu: str | None = None


@dataclass
class RunningAttempt:
    """An attempt whose shards are queued or running in this process."""

    record: AttemptRecord
    command: list[str]
    pending: deque[int]
    running: dict[int, ShardProcess] = field(default_factory=dict)
    summaries: dict[int, PhaseSummary] = field(default_factory=dict)
    failure: tuple[FailureCause, str] | None = None
    progress: dict[int, ProgressLine] = field(default_factory=dict)  # latest line of each shard, finished too


class Interrupted(Exception):
    """SIGINT/SIGTERM while running: stop cleanly, exit 130."""


class LocalExecutor:
    """Runs one SAILRun to completion (or failure, suspension, interrupt) on this machine."""

    def __init__(self, run: SAILRun, paths: RunPaths, *, out: TextIO, workers: int = 1,
                 program: list[str] | None = None, use_bars: bool | None = None,
                 extra_env: dict[str, str] | None = None, gpus: list[str] | None = None,
                 source_file: Path | None = None) -> None:
        self.run_obj = run
        self.paths = paths
        self.out = out
        self.gpus = list(detect_gpus() if gpus is None else gpus)
        self.workers = max(1, workers)
        self.program = list(program or build_trainer_program())  # tests may pass a stand-in phase program
        self.extra_env = dict(extra_env or {})
        self.display = ProgressDisplay(out, use_bars=use_bars)
        self.running: dict[str, RunningAttempt] = {}
        self.state = self._load_state()
        if source_file is not None:
            self.state.source_file = str(source_file.resolve())

    # -------------------------------------------------------------- setup

    def _load_state(self) -> LocalState:
        spec = self.run_obj.spec
        previous = load_state(self.paths.state_file)
        if previous is None:
            state = LocalState(name=self.run_obj.metadata.name, storage_uri=self.paths.storage_uri)
        else:
            if previous.name != self.run_obj.metadata.name:
                raise ValueError(f"{self.paths.state_file} belongs to run {previous.name!r}, not "
                                 f"{self.run_obj.metadata.name!r}: use another --storage")
            if self.paths.local_root is None and previous.storage_uri != self.paths.storage_uri:
                raise ValueError(f"{self.paths.state_file} records run root {previous.storage_uri}, not "
                                 f"{self.paths.storage_uri}: the local state and the storage disagree; "
                                 f"continue with --storage {previous.storage_uri}, or move "
                                 f"{self.paths.local_dir} away to start afresh on {self.paths.storage_uri}")
            state = build_retry_of_failed(previous)
            if state is not previous:
                self.display.message(f"previous attempt failed ({previous.status.message}); retrying that phase")
        state = build_resumed_state(state, spec)
        state.spec = spec.model_dump(mode="json", by_alias=True)
        return state

    def _write_resolved_spec(self) -> None:
        resolved = build_resolved_run(self.run_obj, self.paths.storage_uri)
        if not self.gpus:
            resolved.precision_override = "fp32"  # no GPU: bf16/fp16 would be slow or unsupported on CPU
        self.paths.spec_file.parent.mkdir(parents=True, exist_ok=True)
        self.paths.spec_file.write_text(resolved.to_json())

    # -------------------------------------------------------------- the loop

    def execute(self) -> int:
        """Observe -> decide -> act until the run is finished, suspended or interrupted."""
        self._write_resolved_spec()
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._loop()
        except (Interrupted, KeyboardInterrupt):
            for sig in previous:  # a second Ctrl-C must not cut the clean-up short
                signal.signal(sig, signal.SIG_IGN)
            self._stop_all(forget=True)
            self._save()
            self.display.close()
            self.display.message(f"interrupted: state saved in {self.paths.state_file}; run `sail run` again to resume")
            return EXIT_INTERRUPTED
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.display.close()

    def _on_signal(self, signum: int, frame: object) -> None:
        raise Interrupted(signal.Signals(signum).name)

    def _loop(self) -> int:
        while True:
            decision = decide(self._observe(), datetime.now(UTC))
            self.state.status = decision.status
            self._save()  # status first: the attempt is recorded before its process exists
            self._act(decision)
            self._save()  # and again after acting: started and deleted attempts
            self._show_overall()
            status = self.state.status
            if status.state in TERMINAL_STATES and not self.running:
                return self._finish()
            if status.state == RunState.SUSPENDED and not self.running:
                self.display.message("suspended (spec.suspend): set it to false and run `sail run` again")
                return EXIT_SUSPENDED
            self._wait(decision)

    def _observe(self) -> Observed:
        self._poll()
        attempts = tuple(a.to_observation() for a in self.state.attempts.values())
        return Observed(
            name=self.state.name, namespace=None, uid=self.state.uid, generation=self.state.generation,
            spec=self.run_obj.spec, spec_error=None, status=self.state.status, attempts=attempts,
        )

    def _act(self, decision: Decision) -> None:
        # The decision that fails the run says why in its status message, which _finish prints once:
        # its Warning events (the phase failure, the exhausted budget) would repeat it.
        failing = decision.status.state == RunState.FAILED
        for action in decision.actions:
            if isinstance(action, CreatePhaseJob):
                self._create(action)
            elif isinstance(action, DeletePhaseJob):
                self._delete(action.name)
            elif isinstance(action, EmitEvent):
                log.info("run=%s event %s %s: %s", self.state.name, action.type, action.reason, action.message)
                if failing and action.type == "Warning":
                    continue
                prefix = "warning: " if action.type == "Warning" else ""
                self.display.message(f"{prefix}{action.reason}: {action.message}")
            elif isinstance(action, RequeueAfter):
                pass  # handled by _wait

    def _wait(self, decision: Decision) -> None:
        requeue = [a.seconds for a in decision.actions if isinstance(a, RequeueAfter)]
        if requeue and not self.running and self.state.status.backoff_until:
            self.display.message(f"backing off: next attempt at {self.state.status.backoff_until} "
                                 f"(in {min(requeue):.0f} s)")
        deadline = time.monotonic() + (min(requeue) if requeue else 3600.0)
        if not self.running and not requeue and not decision.actions:
            raise RuntimeError(f"the planner made no progress in state {self.state.status.state}: "
                               f"{self.state.status.message}")
        while time.monotonic() < deadline:
            if self._poll():
                return
            if not self.running and not requeue:
                return
            time.sleep(POLL_SECONDS)

    def _finish(self) -> int:
        self.display.close()
        status = self.state.status
        if status.state == RunState.SUCCEEDED:
            where = status.checkpoint.uri if status.checkpoint else self.paths.storage_uri
            self.display.message(f"run {self.state.name} complete; final model: {where}")
            return EXIT_COMPLETE
        failed = next((c for c in status.conditions if c.type == "Failed" and c.status == "True"), None)
        reason = f" ({failed.reason})" if failed else ""
        self.display.message(f"run {self.state.name} failed{reason}: {status.message}\n"
                             "fix the cause, then run `sail run` again: it retries the failed phase with fresh "
                             "retry budgets, committed phases are kept")
        return EXIT_FAILED

    def _save(self) -> None:
        save_state(self.paths.state_file, self.state)

    def _show_overall(self) -> None:
        status = self.state.status
        rounds = self.run_obj.spec.sail.rounds
        label = (f"iteration {status.current_iteration}/{rounds} {status.current_phase or ''}".strip()
                 if status.current_phase else status.state.value)
        self.display.overall(status.progress.completed_phases, status.progress.total_phases, label)

    # -------------------------------------------------------------- attempts

    def _create(self, action: CreatePhaseJob) -> None:
        if action.name in self.running:
            return  # already running here (a planner re-create of an attempt we run)
        folder = self.paths.attempt_dir(action.name)
        folder.mkdir(parents=True, exist_ok=True)
        now = datetime.now(UTC)
        record = AttemptRecord(name=action.name, iteration=action.iteration, phase=action.phase,
                               attempt=action.attempt, shards=action.shards, state=AttemptState.PENDING,
                               created_at=now)
        command = build_trainer_command(self.program, action, self.paths.storage_uri, self.paths.spec_file)
        self.running[action.name] = RunningAttempt(record=record, command=command,
                                                   pending=deque(range(action.shards or 1)))
        self.state.attempts[action.name] = record
        self._start_shards(self.running[action.name])

    def _start_shards(self, attempt: RunningAttempt) -> None:
        while attempt.pending and len(attempt.running) < self.workers and attempt.failure is None:
            index = attempt.pending.popleft()
            attempt.running[index] = self._spawn(attempt, index)
            if attempt.record.started_at is None:
                attempt.record.started_at = datetime.now(UTC)
                attempt.record.state = AttemptState.RUNNING

    def _spawn(self, attempt: RunningAttempt, index: int) -> ShardProcess:
        folder = self.paths.attempt_dir(attempt.record.name)
        summary_path = folder / f"shard-{index}.summary.json"
        log_path = folder / f"shard-{index}.log"
        summary_path.unlink(missing_ok=True)
        # OMP_WAIT_POLICY=PASSIVE unless set: idle torch threads sleep, not spin (docs/dev/threads.md).
        env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, **self.extra_env, TERMINATION_LOG_ENV: str(summary_path),
               "PYTHONUNBUFFERED": "1"}
        if attempt.record.shards is not None:
            env[SHARD_INDEX_ENV] = str(index)
            if self.gpus:  # one GPU per shard process, like one GPU per pod of an Indexed Job
                busy = {s.gpu for s in attempt.running.values()}
                env["CUDA_VISIBLE_DEVICES"] = next((g for g in self.gpus if g not in busy), self.gpus[index % len(self.gpus)])
        rec = attempt.record
        log.info("run=%s iteration=%d phase=%s attempt=%d shard=%d: starting %s", self.state.name, rec.iteration,
                 rec.phase.value, rec.attempt, index, attempt.command)
        process = subprocess.Popen(  # noqa: S603 - a list of arguments, no shell
            attempt.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, bufsize=1, env=env, start_new_session=True,
            preexec_fn=_set_parent_death_signal if sys.platform.startswith("linux") else None,  # noqa: PLW1509
        )
        shard = ShardProcess(index=index, process=process, summary_path=summary_path, log_path=log_path,
                             reader=threading.Thread(target=lambda: None), gpu=env.get("CUDA_VISIBLE_DEVICES"))
        shard.reader = threading.Thread(target=self._read_output, args=(shard,), daemon=True)
        shard.reader.start()
        return shard

    @staticmethod
    def _read_output(shard: ShardProcess) -> None:
        """Copy a phase's output to its log file, keep its tail and latest progress line."""
        assert shard.process.stdout is not None
        with shard.log_path.open("a") as sink:
            for line in shard.process.stdout:
                sink.write(line)
                sink.flush()
                parsed = parse_progress_line(line)
                if parsed is not None:
                    shard.progress = parsed
                elif line.strip():
                    shard.tail.append(line.rstrip())

    def _poll(self) -> bool:
        """Reap finished shard processes, start queued ones; True when an attempt finished."""
        finished_any = False
        for name, attempt in list(self.running.items()):
            for index, shard in list(attempt.running.items()):
                code = shard.process.poll()
                if code is None:
                    continue
                shard.reader.join(timeout=5)
                if shard.progress is not None:
                    attempt.progress[index] = shard.progress
                del attempt.running[index]
                self._collect(attempt, shard, code)
            self._check_deadline(attempt)
            self._start_shards(attempt)
            self._show_phase(attempt)
            if not attempt.running and (not attempt.pending or attempt.failure is not None):
                self._conclude(attempt)
                del self.running[name]
                finished_any = True
        return finished_any

    def _collect(self, attempt: RunningAttempt, shard: ShardProcess, code: int) -> None:
        summary = _read_summary(shard.summary_path)
        cause = map_exit_code(code)
        if cause is None and summary is None:
            cause, message = FailureCause.APP, f"exited 0 but wrote no summary to {shard.summary_path}"
        elif cause is not None:
            detail = (summary.error if summary and summary.error else None) or (shard.tail[-1] if shard.tail else "")
            message = f"shard {shard.index} exit code {code}: {detail} (log: {shard.log_path})"
        if cause is None and summary is not None:
            attempt.summaries[shard.index] = summary
        elif attempt.failure is None:
            attempt.failure = (cause, message)
            self._terminate(attempt)

    def _check_deadline(self, attempt: RunningAttempt) -> None:
        limit = self.run_obj.spec.active_deadline_seconds
        started = attempt.record.started_at
        if limit is None or started is None or attempt.failure is not None:
            return
        if (datetime.now(UTC) - started).total_seconds() > limit:
            attempt.failure = (FailureCause.DEADLINE, f"ran longer than activeDeadlineSeconds={limit}")
            self._terminate(attempt)

    def _conclude(self, attempt: RunningAttempt) -> None:
        record = attempt.record
        log.info("run=%s iteration=%d phase=%s attempt=%d: %s", self.state.name, record.iteration,
                 record.phase.value, record.attempt, f"failed: {attempt.failure}" if attempt.failure else "done")
        record.finished_at = datetime.now(UTC)
        if record.started_at is None:
            record.started_at = record.finished_at
        if attempt.failure is None:
            record.state = AttemptState.SUCCEEDED
            record.summaries = [attempt.summaries[k] for k in sorted(attempt.summaries)]
        else:
            record.state = AttemptState.FAILED
            record.cause, record.message = attempt.failure
        self.state.attempts[record.name] = record
        self._save()

    def _show_phase(self, attempt: RunningAttempt) -> None:
        for index, shard in attempt.running.items():
            if shard.progress is not None:
                attempt.progress[index] = shard.progress
        lines = [attempt.progress[k] for k in sorted(attempt.progress)]
        self.display.phase((attempt.record.name, attempt.record.shards or 1),
                           combine_shards(lines, attempt.record.shards))

    def _delete(self, name: str) -> None:
        attempt = self.running.pop(name, None)
        if attempt is not None:
            attempt.pending.clear()
            self._terminate(attempt)
            for shard in attempt.running.values():
                shard.reader.join(timeout=5)
        self.state.attempts.pop(name, None)

    def _terminate(self, attempt: RunningAttempt) -> None:
        """SIGTERM every running shard's process group, SIGKILL after a grace period."""
        attempt.pending.clear()
        shards = list(attempt.running.values())
        for shard in shards:
            _signal_group(shard.process, signal.SIGTERM)
        deadline = time.monotonic() + TERMINATE_GRACE_SECONDS
        for shard in shards:
            try:
                shard.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(shard.process, signal.SIGKILL)
                shard.process.wait()

    def _stop_all(self, *, forget: bool) -> None:
        for name, attempt in list(self.running.items()):
            self._terminate(attempt)
            if forget:
                self.state.attempts.pop(name, None)
        self.running.clear()


def _signal_group(process: subprocess.Popen[str], sig: int) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _read_summary(path: Path) -> PhaseSummary | None:
    try:
        return PhaseSummary.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return None


__all__ = ["LocalExecutor", "map_exit_code", "build_trainer_command", "build_trainer_program", "load_state", "EXIT_COMPLETE",
           "EXIT_FAILED", "EXIT_SUSPENDED", "EXIT_INTERRUPTED"]
