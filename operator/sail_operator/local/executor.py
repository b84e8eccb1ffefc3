"""The local executor: `decide` (the operator's planner) driving `sail-trainer` processes.

observe: the state file (status + finished attempts) and the processes the supervisor runs
         (`observe.build_local_observed`, pure).
decide:  `sail_operator.planner.decide.decide`, unchanged.
act:     write the status (state file) first, then `planner.port.apply` the actions to this
         executor's port: start / stop phase processes (`supervisor.ProcessSupervisor`), print events.

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

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

from sail_api.phases import build_phase_args
from sail_api.resolved import build_resolved_run
from sail_api.spec import SAILRun
from sail_api.status import TERMINAL_STATES, RunState
from sail_operator.local.observe import build_local_observed, record_finished
from sail_operator.local.paths import RunPaths
from sail_operator.local.progress import ProgressDisplay, ProgressLine
from sail_operator.local.state import (
    LocalState,
    build_resumed_state,
    build_retry_of_failed,
    load_state,
    save_state,
)
from sail_operator.local.supervisor import ProcessSupervisor, SpawnFn, spawn_phase_process
from sail_operator.planner import timefmt
from sail_operator.planner.decide import decide
from sail_operator.planner.model import (
    AttemptObservation,
    AttemptState,
    CreatePhaseJob,
    Decision,
    EmitEvent,
    Observed,
)
from sail_operator.planner.port import apply, requeue_seconds

log = logging.getLogger(__name__)

EXIT_COMPLETE = 0
EXIT_FAILED = 1
EXIT_SUSPENDED = 3
EXIT_INTERRUPTED = 130
POLL_SECONDS = 0.05
TRAINER_MODULE = "sail_trainer"


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


class Interrupted(Exception):
    """SIGINT/SIGTERM while running: stop cleanly, exit 130."""


class LocalExecutor:
    """Runs one SAILRun to completion (or failure, suspension, interrupt) on this machine."""

    def __init__(self, run: SAILRun, paths: RunPaths, *, out: TextIO, workers: int = 1,
                 program: list[str] | None = None, use_bars: bool | None = None,
                 extra_env: dict[str, str] | None = None, gpus: list[str] | None = None,
                 source_file: Path | None = None, spawn: SpawnFn = spawn_phase_process) -> None:
        self.run_obj = run
        self.paths = paths
        self.out = out
        self.gpus = list(detect_gpus() if gpus is None else gpus)
        self.program = list(program or build_trainer_program())  # tests may pass a stand-in phase program
        self.display = ProgressDisplay(out, use_bars=use_bars)
        self.supervisor = ProcessSupervisor(
            paths.attempt_dir, workers=workers, gpus=self.gpus, extra_env=extra_env,
            deadline_seconds=run.spec.active_deadline_seconds, on_progress=self._show_phase,
            spawn=spawn,  # tests pass stand-in processes: the whole loop runs in-process
        )
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
            self._stop_all()
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
            decision = decide(self._observe(), timefmt.now())
            self.state.status = decision.status
            self._save()  # status first: the attempt is recorded before its process exists
            apply(decision, LocalPort(self))
            self._save()  # and again after acting: started and deleted attempts
            self._show_overall()
            status = self.state.status
            if status.state in TERMINAL_STATES and not self.supervisor:
                return self._finish()
            if status.state == RunState.SUSPENDED and not self.supervisor:
                self.display.message("suspended (spec.suspend): set it to false and run `sail run` again")
                return EXIT_SUSPENDED
            self._wait(decision)

    def _observe(self) -> Observed:
        self._reap()
        return build_local_observed(self.state, self.run_obj.spec, self.supervisor.records())

    def _reap(self) -> bool:
        """Record the attempts the supervisor saw finish (saved at once); True when one did."""
        if record_finished(self.state, self.supervisor.poll()):
            self._save()
            return True
        return False

    def _wait(self, decision: Decision) -> None:
        requeue = requeue_seconds(decision)
        running = bool(self.supervisor)
        if requeue is not None and not running and self.state.status.backoff_until:
            self.display.message(f"backing off: next attempt at {self.state.status.backoff_until} "
                                 f"(in {requeue:.0f} s)")
        if not running and requeue is None and not decision.actions:
            raise RuntimeError(f"the planner made no progress in state {self.state.status.state}: "
                               f"{self.state.status.message}")
        deadline = time.monotonic() + (3600.0 if requeue is None else requeue)
        while time.monotonic() < deadline:
            if self._reap():
                return
            if not self.supervisor and requeue is None:
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

    # -------------------------------------------------------------- attempts

    def create(self, action: CreatePhaseJob) -> None:
        if action.name in self.supervisor.running:
            return  # already running here (a planner re-create of an attempt we run)
        record = AttemptObservation(name=action.name, iteration=action.iteration, phase=action.phase,
                                    attempt=action.attempt, shards=action.shards, state=AttemptState.PENDING,
                                    created_at=timefmt.now())
        command = build_trainer_command(self.program, action, self.paths.storage_uri, self.paths.spec_file)
        self.state.attempts[action.name] = record
        self.supervisor.start(record, command)
        self._sync_live()

    def delete(self, name: str) -> None:
        self.supervisor.stop(name)
        self.state.attempts.pop(name, None)

    def _sync_live(self) -> None:
        """The state file shows the attempts under way as the supervisor has them (started or not)."""
        for record in self.supervisor.records():
            self.state.attempts[record.name] = record

    def _save(self) -> None:
        self._sync_live()
        save_state(self.paths.state_file, self.state)

    def _show_overall(self) -> None:
        status = self.state.status
        rounds = self.run_obj.spec.sail.rounds
        label = (f"iteration {status.current_iteration}/{rounds} {status.current_phase or ''}".strip()
                 if status.current_phase else status.state.value)
        self.display.overall(status.progress.completed_phases, status.progress.total_phases, label)

    def _show_phase(self, name: str, shards: int, line: ProgressLine | None) -> None:
        self.display.phase((name, shards), line)

    def _stop_all(self) -> None:
        for name in self.supervisor.stop_all():
            self.state.attempts.pop(name, None)  # forgotten: the next `sail run` re-creates it


class LocalPort:
    """The executor port of `sail run` (`planner.port.ExecutorPort`): processes and the terminal."""

    def __init__(self, executor: LocalExecutor) -> None:
        self.executor = executor
        # The decision that fails the run says why in its status message, which _finish prints once:
        # its Warning events (the phase failure, the exhausted budget) would repeat it.
        self.failing = executor.state.status.state == RunState.FAILED

    def create(self, action: CreatePhaseJob) -> bool:
        self.executor.create(action)
        return True

    def delete(self, name: str) -> None:
        self.executor.delete(name)

    def emit(self, event: EmitEvent) -> None:
        log.info("run=%s event %s %s: %s", self.executor.state.name, event.type, event.reason, event.message)
        if self.failing and event.type == "Warning":
            return
        prefix = "warning: " if event.type == "Warning" else ""
        self.executor.display.message(f"{prefix}{event.reason}: {event.message}")

    def requeue(self, seconds: float) -> None:
        """Nothing to do now: `LocalExecutor._wait` sleeps until the shortest requeue."""


__all__ = ["LocalExecutor", "LocalPort", "build_trainer_command", "build_trainer_program", "load_state",
           "EXIT_COMPLETE", "EXIT_FAILED", "EXIT_SUSPENDED", "EXIT_INTERRUPTED"]
