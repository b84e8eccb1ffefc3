"""Two writers on one phase of one run: exactly one commit, the other stops cleanly.

Two executors can run the same phase at once (an operator and a `sail run` on the same run root,
a Job recreated while a pod of the old one still runs on a partitioned node). docs/operating.md promises
that the commit marker makes this safe. Here two real `python -m sail_trainer` processes run the
same phase of the same tiny run at the same time, on the local disk and on moto S3 over HTTP:
both exit 0, exactly one reports `committed` and the other `already_committed`, the committed
manifest is the winner's (its writer id names the winner's pid) and verifies (sizes and sha256),
and the phase is committed exactly once.

Two deterministic interleavings pin races that used to lose a commit (docs/reliability.md bugs 1
and 6, fixed by attempt-unique prefixes): the loser checks `is_committed` (False) and the winner
commits before the loser's leftover cleanup - the cleanup must keep the commit; and a loser that
passed its check keeps writing after the winner's commit - the committed manifest must still verify.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sail_api.layout import RunLayout
from sail_api.phases import Phase
from sail_api.storage import S3Connection, open_store
from tests.builders.tiny_run import REPO_ROOT, TinyRun, create_tiny_run, phase_args


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **(extra or {})}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    return env


def _start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    with open(log, "w") as stream:
        return subprocess.Popen([sys.executable, "-m", "sail_trainer", *args], stdout=subprocess.PIPE,
                                stderr=stream, text=True, env=env)


def _summary(proc: subprocess.Popen[str]) -> tuple[int, dict]:
    out, _ = proc.communicate(timeout=300)
    lines = [line for line in out.splitlines() if line.strip()]
    return proc.returncode, json.loads(lines[-1]) if lines else {}


def _race(run: TinyRun, phase: Phase, tmp_path: Path, env: dict[str, str], stagger: float) -> list[tuple]:
    """Start two writers of the same phase `stagger` seconds apart; their (pid, exit code, summary)."""
    first = _start(phase_args(run, phase.value, 0), tmp_path / "a.log", env)
    time.sleep(stagger)
    second = _start(phase_args(run, phase.value, 0), tmp_path / "b.log", env)
    return [(proc.pid, *_summary(proc)) for proc in (first, second)]


def _check_one_commit(results: list[tuple], store, folder: str, tmp_path: Path) -> None:
    outcomes = sorted(summary.get("outcome") for _pid, _code, summary in results)
    logs = "\n".join((tmp_path / n).read_text()[-2000:] for n in ("a.log", "b.log"))
    assert [code for _pid, code, _summary in results] == [0, 0], logs
    assert outcomes == ["already_committed", "committed"], (outcomes, logs)
    winner = next(pid for pid, _code, summary in results if summary["outcome"] == "committed")
    manifest = store.read_manifest(folder, verify=True)
    assert manifest.writer is not None and f"/{winner}/" in manifest.writer, (manifest.writer, winner)
    assert manifest.files, "an empty commit"
    assert {s["manifestUri"] for _p, _c, s in results} == {store.uri(f"{folder}/_SUCCESS.json")}


@pytest.mark.parametrize("stagger", [0.0])
def test_two_trainers_on_the_same_local_phase_commit_once(tmp_path: Path, stagger: float) -> None:
    run = create_tiny_run(tmp_path / "in", str(tmp_path / "run"), num_pairs=4)
    results = _race(run, Phase.MIXUP, tmp_path, _env(), stagger)
    store = open_store(run.run_uri)
    _check_one_commit(results, store, RunLayout(store.root).phase_dir(0, Phase.MIXUP), tmp_path)


@pytest.mark.slow
def test_two_trainers_on_the_same_s3_phase_commit_once(tmp_path: Path, moto_s3, s3_bucket: str) -> None:
    run_uri = f"s3://{s3_bucket}/runs/race"
    run = create_tiny_run(tmp_path / "in", run_uri, endpoint=moto_s3.endpoint, num_pairs=4)
    results = _race(run, Phase.MIXUP, tmp_path, _env({"SAIL_CACHE_DIR": str(tmp_path / "cache")}), 0.0)
    store = open_store(run_uri, S3Connection(endpoint=moto_s3.endpoint))
    folder = RunLayout(run_uri).phase_dir(0, Phase.MIXUP)
    _check_one_commit(results, store, folder, tmp_path)
    marker_puts = [r for r in moto_s3.requests if r.startswith("PUT ") and r.endswith("/iter-000/mixup/_SUCCESS.json")]
    assert 1 <= len(marker_puts) <= 2, marker_puts  # the loser's conditional put may reach S3 and get 412
    assert not [r for r in moto_s3.requests if r.startswith("DELETE ") and "/iter-000/mixup/" in r], \
        "a writer deleted files of the phase folder while the other was writing"


# A loser that checked `is_committed` just before the winner committed: its leftover cleanup runs on a
# folder that is committed by then. The driver makes that interleaving certain: the first check of the
# phase folder runs the winner to completion before answering (False, as it was when asked).
_RACING_DRIVER = textwrap.dedent("""
    import json, subprocess, sys
    import sail_trainer.phases.runner as runner
    from sail_api.storage import LocalStore

    ours, winner = json.loads(sys.argv[1]), json.loads(sys.argv[2])

    class RacingStore(LocalStore):
        fired = False

        def is_committed(self, folder):
            answer = super().is_committed(folder)
            if not answer and not RacingStore.fired and folder.rstrip("/").endswith("iter-000/mixup"):
                RacingStore.fired = True
                subprocess.run(winner, check=True, stdout=subprocess.DEVNULL)
            return answer

    runner.open_store = lambda uri, connection=None, **_: RacingStore(uri)
    from sail_trainer.cli import main
    sys.exit(main(ours))
""")


@pytest.mark.slow
def test_a_commit_between_the_losers_check_and_its_cleanup_is_kept(tmp_path: Path) -> None:
    run = create_tiny_run(tmp_path / "in", str(tmp_path / "run"), num_pairs=4)
    args = phase_args(run, "mixup", 0)
    winner = [sys.executable, "-m", "sail_trainer", *args]
    proc = subprocess.Popen([sys.executable, "-c", _RACING_DRIVER, json.dumps(args), json.dumps(winner)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "committed by another writer after our check" in err, "the interleaving did not happen"
    summary = json.loads(out.strip().splitlines()[-1])
    store = open_store(run.run_uri)
    manifest = store.read_manifest(RunLayout(store.root).phase_dir(0, Phase.MIXUP), verify=True)
    assert f"/{proc.pid}/" not in (manifest.writer or ""), "the loser replaced the winner's commit"
    assert summary["outcome"] == "already_committed", summary


# A loser that passed its `is_committed` check and its cleanup before the winner committed keeps writing
# into the folder the winner has committed by then. The driver makes that certain: the loser's first
# write into the train folder runs the winner to completion first. The train's metrics.json carries
# throughput, so the loser's copy differs from the one the winner's manifest hashed.
_WRITING_DRIVER = textwrap.dedent("""
    import json, subprocess, sys
    import sail_trainer.phases.runner as runner
    from sail_api.storage import LocalStore

    ours, winner = json.loads(sys.argv[1]), json.loads(sys.argv[2])

    class LateStore(LocalStore):
        fired = False

        def _winner_first(self, key):
            if not LateStore.fired and "iter-000/train/" in str(key) and "/steps/" not in str(key):
                LateStore.fired = True
                subprocess.run(winner, check=True, stdout=subprocess.DEVNULL)

        def write_bytes(self, key, data):
            self._winner_first(key)
            return super().write_bytes(key, data)

        def upload_file(self, key, path):
            self._winner_first(key)
            return super().upload_file(key, path)

    runner.open_store = lambda uri, connection=None, **_: LateStore(uri)
    from sail_trainer.cli import main
    sys.exit(main(ours))
""")


@pytest.mark.slow
def test_a_loser_still_writing_after_the_winners_commit_does_not_corrupt_it(tmp_path: Path, monkeypatch) -> None:
    from sail_trainer.cli import main

    run = create_tiny_run(tmp_path / "in", str(tmp_path / "run"), num_pairs=4, train={"step0Steps": 2})
    monkeypatch.setenv("SAIL_TERMINATION_LOG", str(tmp_path / "term"))
    assert main(phase_args(run, "mixup", 0)) == 0  # the input of the race, in-process: one trainer start fewer
    args = phase_args(run, "train", 0)
    winner = [sys.executable, "-m", "sail_trainer", *args]
    proc = subprocess.run([sys.executable, "-c", _WRITING_DRIVER, json.dumps(args), json.dumps(winner)],
                          capture_output=True, text=True, env=_env(), timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["outcome"] == "already_committed"
    store = open_store(run.run_uri)
    store.read_manifest(RunLayout(store.root).phase_dir(0, Phase.TRAIN), verify=True)
