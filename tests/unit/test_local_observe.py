"""The local executor in-process: the supervisor's bookkeeping and the observe step, no subprocess.

The processes are stand-ins (`StandInProcess`: an exit code, output lines, a summary written
where the environment says, as the trainer does); this is the one thing mocked, because these
tests are about what the supervisor and the planner make of a process's outcome, not about
starting one (tests/unit/test_local_executor.py starts real ones).
"""

from __future__ import annotations

import io
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sail_api.phases import (
    SHARD_INDEX_ENV,
    TERMINATION_LOG_ENV,
    ExitCode,
    Phase,
    PhaseSummary,
    phases_of_iteration,
)
from sail_api.spec import SAILRun
from sail_api.status import RunState
from sail_operator.local.executor import EXIT_COMPLETE, LocalExecutor
from sail_operator.local.observe import build_local_observed, record_finished
from sail_operator.local.paths import build_local_run
from sail_operator.local.state import LocalState, load_state
from sail_operator.local.supervisor import ProcessSupervisor
from sail_operator.planner.decide import decide
from sail_operator.planner.model import AttemptObservation, AttemptState, CreatePhaseJob, FailureCause

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


class StandInProcess:
    """A phase process: exited with `code` (or still running until it is waited for)."""

    _pids = iter(range(10_000_000, 20_000_000))

    def __init__(self, code: int, lines: tuple[str, ...] = (), running: bool = False) -> None:
        self.pid = next(self._pids)
        self.stdout = iter(lines)
        self.code = code
        self.running = running

    def poll(self) -> int | None:
        return None if self.running else self.code

    def wait(self, timeout: float | None = None) -> int:
        self.running = False
        return self.code


class StandInTrainer:
    """`spawn` for the supervisor: each shard's outcome by phase and shard, its summary written
    to the termination-log file the environment names; every start and signal is recorded."""

    def __init__(self, outcomes: dict | None = None) -> None:
        self.outcomes = outcomes or {}  # (phase, shard) -> (code, summary error or None, still running)
        self.started: list[tuple[Phase, int, dict[str, str]]] = []
        self.signals: list[tuple[int, int]] = []

    def spawn(self, command: list[str], env: dict[str, str]) -> StandInProcess:
        phase = next(Phase(arg) for arg in command if arg in {p.value for p in Phase})
        shard = int(env.get(SHARD_INDEX_ENV, "0"))
        self.started.append((phase, shard, env))
        code, error, running = self.outcomes.get((phase, shard), (0, None, False))
        iteration = int(command[command.index("--iteration") + 1]) if "--iteration" in command else 0
        if code == 0 or error:
            summary = PhaseSummary(phase=phase, iteration=iteration, outcome="committed" if code == 0 else "failed",
                                   shard=f"{shard}/{command[command.index('--shards') + 1]}" if "--shards" in command else None, error=error)
            Path(env[TERMINATION_LOG_ENV]).write_text(summary.model_dump_json(by_alias=True))
        return StandInProcess(code, (f"shard {shard} says hello\n",), running=running)

    def kill(self, process: StandInProcess, sig: int) -> None:
        self.signals.append((process.pid, sig))


def _record(name: str = "r-i000-generate-a1", shards: int | None = 2) -> AttemptObservation:
    return AttemptObservation(name=name, iteration=0, phase=Phase.GENERATE, attempt=1, state=AttemptState.PENDING,
                              created_at=T0, shards=shards)


def _supervisor(tmp_path: Path, trainer: StandInTrainer, **kwargs) -> ProcessSupervisor:
    return ProcessSupervisor(lambda name: tmp_path / name, spawn=trainer.spawn, kill=trainer.kill,
                             clock=kwargs.pop("clock", lambda: T0 + timedelta(seconds=5)), **kwargs)


COMMAND = ["sail-trainer", "generate", "--iteration", "0", "--shards", "2"]


def test_shards_run_within_the_worker_limit_and_report_in_shard_order(tmp_path):
    trainer = StandInTrainer()
    supervisor = _supervisor(tmp_path, trainer, workers=1)
    supervisor.start(_record(), COMMAND)
    assert [(p, s) for p, s, _ in trainer.started] == [(Phase.GENERATE, 0)]
    assert [r.state for r in supervisor.records()] == [AttemptState.RUNNING]
    assert supervisor.poll() == []  # shard 0 reaped, shard 1 started
    [finished] = supervisor.poll()
    assert [env[SHARD_INDEX_ENV] for _, _, env in trainer.started] == ["0", "1"]
    assert finished.state is AttemptState.SUCCEEDED and [s.shard for s in finished.summaries] == ["0/2", "1/2"]
    assert (finished.queue_wait_seconds, finished.duration_seconds) == (5.0, 0.0)
    assert not supervisor and (tmp_path / finished.name / "shard-1.log").read_text() == "shard 1 says hello\n"


def test_a_non_retryable_shard_stops_its_siblings_and_names_the_field(tmp_path):
    trainer = StandInTrainer({(Phase.GENERATE, 0): (ExitCode.BAD_SPEC, "spec.sail.beta: must be > 0", False),
                              (Phase.GENERATE, 1): (0, None, True)})
    supervisor = _supervisor(tmp_path, trainer, workers=2)
    supervisor.start(_record(), COMMAND)
    [finished] = supervisor.poll()
    assert finished.state is AttemptState.FAILED and finished.cause is FailureCause.NON_RETRYABLE
    assert "shard 0 exit code 64: spec.sail.beta: must be > 0" in finished.message
    assert [sig for _, sig in trainer.signals] == [signal.SIGTERM]  # the running sibling, once


def test_exit_0_without_a_summary_is_an_app_failure(tmp_path):
    trainer = StandInTrainer()
    supervisor = _supervisor(tmp_path, trainer)
    supervisor.start(_record(shards=None), COMMAND)
    (tmp_path / "r-i000-generate-a1" / "shard-0.summary.json").unlink()
    [finished] = supervisor.poll()
    assert finished.cause is FailureCause.APP and "wrote no summary" in finished.message


def test_an_attempt_past_the_deadline_is_stopped_as_deadline(tmp_path):
    trainer = StandInTrainer({(Phase.GENERATE, 0): (143, None, True)})
    moment = [T0]
    supervisor = _supervisor(tmp_path, trainer, deadline_seconds=60, clock=lambda: moment[0])
    supervisor.start(_record(shards=None), COMMAND)
    assert supervisor.poll() == []  # within the deadline: still running, nothing signalled
    assert trainer.signals == []
    moment[0] = T0 + timedelta(seconds=61)
    assert supervisor.poll() == []  # signalled; its exit is reaped on the next round
    [finished] = supervisor.poll()
    assert finished.cause is FailureCause.DEADLINE and "activeDeadlineSeconds=60" in finished.message
    assert trainer.signals and trainer.signals[0][1] == signal.SIGTERM


def _run(tmp_path: Path) -> tuple[SAILRun, object]:
    run = SAILRun.model_validate({
        "apiVersion": "sail.dev/v1alpha1", "kind": "SAILRun", "metadata": {"name": "demo"},
        "spec": {"model": {"uri": "models/base"}, "seedPairs": {"uri": "data/seed.jsonl"},
                 "prompts": {"uri": "data/prompts.txt"}, "sail": {"rounds": 1}},
    })
    return build_local_run(run, tmp_path / "run.yaml", None)


def test_the_planner_sees_the_running_attempt_then_its_outcome(tmp_path):
    run, paths = _run(tmp_path)
    state = LocalState(name="demo", storage_uri=paths.storage_uri)
    first = decide(build_local_observed(state, run.spec), T0)
    [create] = first.creates
    state.status = first.status
    trainer = StandInTrainer({(create.phase, 0): (0, None, True)})
    supervisor = _supervisor(tmp_path, trainer)
    supervisor.start(AttemptObservation(name=create.name, iteration=create.iteration, phase=create.phase,
                                        attempt=create.attempt, state=AttemptState.PENDING, created_at=T0),
                     ["sail-trainer", create.phase.value])
    while_running = decide(build_local_observed(state, run.spec, supervisor.records()), T0)
    assert while_running.creates == () and while_running.status.current.job_name == create.name
    assert not record_finished(state, supervisor.poll())  # still running: nothing recorded
    supervisor.running[create.name].running[0].process.running = False  # the stand-in exits now
    assert record_finished(state, supervisor.poll())
    state.status = while_running.status
    after = decide(build_local_observed(state, run.spec, supervisor.records()), T0 + timedelta(seconds=10))
    assert [a.phase for a in after.creates] == [_next_phase(run, create)]


def _next_phase(run: SAILRun, done: CreatePhaseJob) -> Phase:
    phases = list(phases_of_iteration(done.iteration))
    return phases[phases.index(done.phase) + 1]


def test_the_whole_local_loop_runs_in_process_with_stand_in_processes(tmp_path):
    run, paths = _run(tmp_path)
    trainer = StandInTrainer()
    out = io.StringIO()
    executor = LocalExecutor(run, paths, out=out, use_bars=False, gpus=[], spawn=trainer.spawn)
    assert executor.execute() == EXIT_COMPLETE
    state = load_state(paths.state_file)
    assert state.status.state is RunState.SUCCEEDED
    phases = [phase for phase, _, _ in trainer.started]
    assert phases[0] is Phase.MIXUP and phases[-1] is Phase.TRAIN and len(phases) > 4
    assert all(a.state is AttemptState.SUCCEEDED for a in state.attempts.values())
