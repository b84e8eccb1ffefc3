"""Ctrl-C during a phase of `sail run` (the local executor, in-process), then a rerun.

Moved from tests/unit/test_local_executor.py (issue 17: unit tests are pure and fast): it
sends the test process a real SIGINT while a phase subprocess runs, and the rerun
re-creates the interrupted attempt by name. The stand-in phase program and its harness are
the unit file's.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from sail_operator.local.executor import EXIT_COMPLETE, EXIT_INTERRUPTED
from tests.unit.test_local_executor import Harness


def test_interrupt_stops_the_phase_saves_state_and_rerun_resumes_the_same_attempt(tmp_path, monkeypatch):
    # The rerun finds the interrupted attempt recorded with no process and re-creates it by name at
    # once: `sail run` sees every attempt there is (Observed.attempts_complete), so the cluster's
    # grace for a Job "on its way" does not apply. A grace this long would time the test out if it did.
    monkeypatch.setattr("sail_operator.planner.attempts.MISSING_GRACE_SECONDS", 3600.0)
    h = Harness(tmp_path, {"sleep": {"train:0": 60}})
    executor = h.executor()

    def interrupt_when_train_runs() -> None:
        for _ in range(400):
            if any(c["key"] == "train:0" for c in h.call_log()):
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)

    threading.Thread(target=interrupt_when_train_runs, daemon=True).start()
    assert executor.execute() == EXIT_INTERRUPTED
    pid = next(c["pid"] for c in h.call_log() if c["key"] == "train:0")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the phase process is gone (terminated and reaped)
    state = h.state()
    assert state.status.current.job_name == "fake-i000-train-a1"
    assert state.attempts == {}  # the interrupted attempt is forgotten; it is re-created by name
    (tmp_path / "plan.json").write_text("{}")
    assert h.run() == EXIT_COMPLETE
    assert "JobRecreated: Job fake-i000-train-a1" in h.out.getvalue()
    keys = [c["key"] for c in h.call_log()]
    assert keys.count("mixup:0") == 1 and keys.count("train:0") == 2
    train0 = h.state().status.iterations[0].phases[1]
    assert (train0.result, train0.attempts) == ("Succeeded", 1)
