"""Trainer phases SIGKILLed at random points, then run again: a valid commit, never a torn one.

For every phase type of step 0 and of a round (mixup and train of iteration 0; generate,
annotate, mixup and train of iteration 1) a real `python -m sail_trainer` process is SIGKILLed
at seeded random moments (during start-up, while writing, while committing - whatever the
trigger hits: a random time after start, or just after the 1st, 2nd or 3rd file appears in the output
folder), `KILLS_PER_PHASE` times, and then run to the end. Meanwhile a reader thread polls
the phase's output folder the way downstream phases read it: whenever `is_committed` says yes,
`read_manifest(verify=True)` must succeed (every listed file present with its size and sha256)
and the manifest must never change afterwards. At the end every phase is committed exactly
once, verifies, and a further run answers `already_committed`.

Figures (kills landed, kills that hit a finished process, reader polls) are printed for
docs/reliability.md. Slow: about two minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sail_api.layout import RunLayout
from sail_api.phases import Phase
from sail_api.storage import LocalStore, StorageError
from tests.builders.tiny_run import REPO_ROOT, TinyRun, create_tiny_run, phase_args

pytestmark = pytest.mark.slow
KILLS_PER_PHASE = 3
SEED = 20261125
PHASES = [(0, Phase.MIXUP), (0, Phase.TRAIN), (1, Phase.GENERATE), (1, Phase.ANNOTATE), (1, Phase.MIXUP),
          (1, Phase.TRAIN)]


@dataclass
class Reader:
    """Polls one folder like a downstream reader; records every violation of the commit contract."""

    store: LocalStore
    folder: str
    polls: int = 0
    committed_seen: int = 0
    first_writer: str | None = None
    problems: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            self.polls += 1
            if self.store.is_committed(self.folder):
                try:
                    manifest = self.store.read_manifest(self.folder, verify=True)
                except StorageError as error:
                    self.problems.append(f"committed but unreadable: {error}")
                    continue
                self.committed_seen += 1
                if self.first_writer is None:
                    self.first_writer = manifest.writer
                elif manifest.writer != self.first_writer:
                    self.problems.append(f"commit replaced: {self.first_writer} -> {manifest.writer}")
            elif self.first_writer is not None:
                self.problems.append("a committed folder became uncommitted")
            time.sleep(0.005)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))}


def _args(run: TinyRun, iteration: int, phase: Phase) -> list[str]:
    extra = ["--shard", "0/1"] if phase in (Phase.GENERATE, Phase.ANNOTATE) else []
    return phase_args(run, phase.value, iteration, *extra)


def _folder(layout: RunLayout, iteration: int, phase: Phase) -> str:
    if phase in (Phase.GENERATE, Phase.ANNOTATE):
        return layout.shard_dir(iteration, phase, 0, 1)
    return layout.phase_dir(iteration, phase)


def _entries(folder: Path) -> int:
    """Files under the output folder, temp files of in-flight writes included."""
    return sum(len(names) for _root, _dirs, names in os.walk(folder)) if folder.is_dir() else 0


def _kill_at(args: list[str], folder: Path, after_files: int, extra: float, log: Path) -> bool:
    """Start the phase; once `after_files` files exist under its output folder, wait `extra` s and SIGKILL
    it. True if the kill landed on a running process (False: it finished first)."""
    with open(log, "a") as stream:
        proc = subprocess.Popen([sys.executable, "-m", "sail_trainer", *args], stdout=stream, stderr=stream,
                                env=_env())
    deadline = time.monotonic() + 300
    while proc.poll() is None and _entries(folder) < after_files and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        code = proc.wait(timeout=extra)
    except subprocess.TimeoutExpired:
        pass
    else:
        assert code == 0, f"an attempt that was not killed failed (exit {code}); see {log}"
        return False
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    return True


def _run_to_end(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-m", "sail_trainer", *args], capture_output=True, text=True,
                          env=_env(), timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _run_again_in_process(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    """The further run that must answer `already_committed`: in-process, one trainer start fewer per phase
    (issue 17); the kills and the recovering run stay real processes."""
    from sail_trainer.cli import main

    capsys.readouterr()
    assert main(args) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_phases_killed_at_random_points_commit_validly_on_rerun(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("SAIL_TERMINATION_LOG", str(tmp_path / "term"))
    run = create_tiny_run(tmp_path / "in", str(tmp_path / "run"), num_pairs=4, num_prompts=8,
                          train={"step0Steps": 4, "steps": 4, "checkpointEvery": 1})
    store = LocalStore(run.run_uri)
    layout = RunLayout(store.root)
    rng = random.Random(SEED)
    figures: dict[str, dict[str, int]] = {}
    for iteration, phase in PHASES:
        label = f"iter-{iteration:03d}/{phase.value}"
        reader = Reader(store, _folder(layout, iteration, phase))
        thread = threading.Thread(target=reader.run, daemon=True)
        thread.start()
        landed = finished = 0
        for _ in range(KILLS_PER_PHASE):
            after_files = rng.choice([0, 1, 2, 3])  # during start-up and reading, or at the n-th write
            extra = rng.uniform(0.5, 6.0) if after_files == 0 else rng.uniform(0.0, 0.3)
            folder = Path(_folder(layout, iteration, phase))
            if _kill_at(_args(run, iteration, phase), folder, after_files, extra, tmp_path / "killed.log"):
                landed += 1
            else:
                finished += 1
        summary = _run_to_end(_args(run, iteration, phase))
        # a kill may land after the commit and before the exit: then the re-run finds it committed
        assert summary["outcome"] in (("already_committed",) if finished else ("committed", "already_committed"))
        again = _run_again_in_process(_args(run, iteration, phase), capsys)
        assert again["outcome"] == "already_committed"
        time.sleep(0.05)
        reader.stop.set()
        thread.join(5)
        assert reader.problems == [], (label, reader.problems[:5])
        manifest = store.read_manifest(_folder(layout, iteration, phase), verify=True)
        assert manifest.files and reader.committed_seen > 0
        assert manifest.writer == reader.first_writer
        figures[label] = {"kills_landed": landed, "finished_before_kill": finished, "reader_polls": reader.polls}
    print("crash-safety figures:", json.dumps(figures))  # noqa: T201  (recorded in docs/reliability.md)
    assert sum(f["kills_landed"] for f in figures.values()) >= len(PHASES), figures
