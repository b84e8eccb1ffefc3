"""The local executor against a FAKE phase program (a stand-in for sail-trainer).

These unit tests do not run the real trainer: a 40-line script below plays it (exit codes,
termination-log summaries, progress lines), so exit-code mapping, shards, retries and resume
are checked in about a second. Ctrl-C during a phase is in
tests/integration/test_local_executor_interrupt.py; the real trainer runs in
tests/e2e/test_sail_run.py.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import yaml

from sail_api.phases import ExitCode
from sail_api.spec import SAILRun
from sail_api.status import RunState
from sail_operator.local.executor import (
    EXIT_COMPLETE,
    EXIT_FAILED,
    EXIT_SUSPENDED,
    LocalExecutor,
    build_trainer_program,
    parse_gpu_list,
)
from sail_operator.local.paths import build_local_run
from sail_operator.local.state import load_state
from sail_operator.planner.model import FailureCause, compute_failure_cause
from tests.builders.sailrun_spec import build_sailrun_dict, build_spec_body

FAKE_TRAINER = r'''
import json, os, sys, time
args = sys.argv[1:]
phase, opts = args[0], dict(zip(args[1::2], args[2::2]))
iteration, run = int(opts["--iteration"]), opts["--run"]
shard = os.environ.get("JOB_COMPLETION_INDEX")
plan = json.load(open(os.environ["FAKE_PLAN"]))
key = f"{phase}:{iteration}"
calls = os.environ["FAKE_CALLS"]
rows = [json.loads(line) for line in open(calls)] if os.path.exists(calls) else []
count = sum(1 for r in rows if r["key"] == key and r["shard"] == shard and r["event"] == "start")
with open(calls, "a") as f:
    f.write(json.dumps({"key": key, "shard": shard, "shards": opts.get("--shards"), "spec": opts["--spec"],
                        "pid": os.getpid(), "argv": args, "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
                        "event": "start"}) + "\n")
print(f"progress phase={phase} done=1 total=2 rate=1.0/s", flush=True)
time.sleep(plan.get("sleep", {}).get(key, 0))
codes = plan.get("codes", {}).get(key, [0])
code = codes[min(count, len(codes) - 1)]
folder = f"{run}/iter-{iteration:03d}/{phase}"
summary = {"phase": phase, "iteration": iteration, "outcome": "committed" if code == 0 else "failed",
           "manifestUri": folder + "/_SUCCESS.json", "metrics": {"loss": 0.25 + iteration}, "exitCode": code}
if shard is not None:
    summary["shard"] = f"{shard}/{opts['--shards']}"
if code:
    summary["error"] = f"fake failure of {key} with exit code {code}"
if not plan.get("no_summary"):
    open(os.environ["SAIL_TERMINATION_LOG"], "w").write(json.dumps(summary))
print(f"progress phase={phase} done=2 total=2 rate=1.0/s", flush=True)
with open(calls, "a") as f:
    f.write(json.dumps({"key": key, "shard": shard, "event": "end"}) + "\n")
sys.exit(code)
'''


def write_run(folder: Path, **spec) -> Path:
    defaults = build_spec_body(
        model="model", seed_pairs="seed/pairs.jsonl", prompts="p.txt", storage=None,
        sail={"rounds": 1, "train": {"effectiveBatch": 4, "microBatch": 2}},
        parallelism={"generateShards": 2, "annotateShards": 3, "gpusPerNode": 0},
        failurePolicy={"appRetries": 1, "infraRetries": 1, "backoff": {"initialSeconds": 0, "maxSeconds": 0}},
    )
    body = build_sailrun_dict("fake", {**defaults, **spec})
    (folder / "model").mkdir(parents=True, exist_ok=True)
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


class Harness:
    def __init__(self, tmp: Path, plan: dict | None = None, **spec) -> None:
        self.tmp = tmp
        self.file = write_run(tmp, **spec)
        self.script = tmp / "fake_trainer.py"
        self.script.write_text(FAKE_TRAINER)
        self.calls = tmp / "calls.jsonl"
        (tmp / "plan.json").write_text(json.dumps(plan or {}))
        self.out = io.StringIO()

    def executor(self, workers: int = 2, gpus: list[str] | None = None, storage: str | None = None) -> LocalExecutor:
        run = SAILRun.model_validate(yaml.safe_load(self.file.read_text()))
        local, paths = build_local_run(run, self.file, storage)
        self.paths = paths
        env = {"FAKE_PLAN": str(self.tmp / "plan.json"), "FAKE_CALLS": str(self.calls)}
        return LocalExecutor(local, paths, out=self.out, workers=workers, program=[sys.executable, str(self.script)],
                             use_bars=False, extra_env=env, gpus=gpus or [])

    def run(self, workers: int = 2, gpus: list[str] | None = None) -> int:
        return self.executor(workers, gpus).execute()

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.calls.read_text().splitlines()] if self.calls.exists() else []

    def call_log(self) -> list[dict]:
        return [e for e in self.events() if e["event"] == "start"]

    def state(self):
        return load_state(self.paths.state_file)


@pytest.mark.parametrize(
    ("code", "cause"),
    [
        pytest.param(0, None, id="exit 0 is success"),
        pytest.param(ExitCode.BAD_SPEC, FailureCause.NON_RETRYABLE, id="bad spec is never retried"),
        pytest.param(ExitCode.BAD_DATA, FailureCause.NON_RETRYABLE, id="bad data is never retried"),
        pytest.param(ExitCode.TRANSIENT, FailureCause.INFRA, id="transient spends the infra budget"),
        pytest.param(1, FailureCause.APP, id="any other code spends the app budget"),
        pytest.param(-9, FailureCause.APP, id="killed by a signal spends the app budget"),
    ],
)
def test_exit_codes_map_to_failure_causes(code, cause):
    assert compute_failure_cause(code) is cause


def test_trainer_program_is_python_dash_m_sail_trainer():
    assert build_trainer_program("/py") == ["/py", "-m", "sail_trainer"]


def test_fake_trainer_happy_path_runs_every_phase_once_with_shards_in_parallel(tmp_path):
    h = Harness(tmp_path)
    assert h.run() == EXIT_COMPLETE
    calls = h.call_log()
    keys = [c["key"] for c in calls]
    assert sorted(set(keys)) == sorted({"mixup:0", "train:0", "generate:1", "annotate:1", "mixup:1", "train:1"})
    assert sorted(c["shard"] for c in calls if c["key"] == "generate:1") == ["0", "1"]
    assert sorted(c["shard"] for c in calls if c["key"] == "annotate:1") == ["0", "1", "2"]
    assert all(c["shards"] == "2" for c in calls if c["key"] == "generate:1")
    assert all(c["shard"] is None and c["shards"] is None for c in calls if c["key"].startswith(("mixup", "train")))
    state = h.state()
    assert state.status.state == RunState.SUCCEEDED and state.status.progress.percent == 100
    assert state.status.checkpoint.uri == f"{h.paths.storage_uri}/iter-001/train/model"
    assert state.attempts == {}  # finished Jobs deleted once their results were in status
    resolved = json.loads(Path(calls[0]["spec"]).read_text())
    assert resolved["algorithm"]["model"]["uri"] == str(tmp_path / "model")  # relative to the YAML's folder
    assert resolved["storage"]["uri"] == str(tmp_path / ".sail" / "fake")
    assert "generate: 4/4 (100%)" in h.out.getvalue()  # both shards' progress lines, summed
    assert "RunComplete" in h.out.getvalue()
    assert h.run() == EXIT_COMPLETE and len(h.call_log()) == len(calls)  # a finished run runs nothing again


def test_fake_trainer_bad_data_fails_the_run_at_once_with_the_message(tmp_path):
    h = Harness(tmp_path, {"codes": {"train:0": [ExitCode.BAD_DATA]}})
    assert h.run() == EXIT_FAILED
    state = h.state()
    assert state.status.state == RunState.FAILED
    assert "fake failure of train:0 with exit code 65" in state.status.message
    assert [c["key"] for c in h.call_log()].count("train:0") == 1


def test_a_failure_is_printed_once_with_the_way_to_retry(tmp_path):
    """Issue 19 item 9: every failure was printed twice (the Warning event, then the final line)."""
    h = Harness(tmp_path, plan={"codes": {"mixup:0": [1]}})
    assert h.run() == EXIT_FAILED
    out = h.out.getvalue()
    assert out.count("fake failure of mixup:0 with exit code 1 (log:") == 2  # attempt 1's event, the final line
    assert out.count("fake-i000-mixup-a2: shard 0 exit code 1") == 1
    assert "run fake failed (AppRetryBudgetExhausted)" in out and "run `sail run` again" in out


def test_fake_trainer_transient_failure_is_retried_on_the_infra_budget(tmp_path):
    h = Harness(tmp_path, {"codes": {"mixup:1": [ExitCode.TRANSIENT, 0]}})
    assert h.run() == EXIT_COMPLETE
    state = h.state()
    assert (state.status.restarts.infra, state.status.restarts.app) == (1, 0)
    mixup = next(p for r in state.status.iterations if r.iteration == 1 for p in r.phases if p.phase == "mixup")
    assert mixup.attempts == 2


def test_fake_trainer_app_budget_exhausted_fails_and_rerun_retries_the_failed_phase(tmp_path):
    h = Harness(tmp_path, {"codes": {"mixup:1": [1, 1, 0]}})
    assert h.run() == EXIT_FAILED
    assert "app retry budget exhausted" in h.state().status.message
    done_before = [c["key"] for c in h.call_log()]
    assert done_before.count("mixup:1") == 2
    assert h.run() == EXIT_COMPLETE  # running again retries the failed phase, keeps committed ones
    again = [c["key"] for c in h.call_log()][len(done_before):]
    assert again == ["mixup:1", "train:1"]


def test_fake_trainer_exit_zero_without_summary_is_an_app_failure(tmp_path):
    h = Harness(tmp_path, {"no_summary": True})
    assert h.run() == EXIT_FAILED
    assert "wrote no summary" in h.state().status.message


def test_suspended_spec_starts_nothing_and_exits_3(tmp_path):
    h = Harness(tmp_path, suspend=True)
    assert h.run() == EXIT_SUSPENDED
    assert h.call_log() == [] and h.state().status.state == RunState.SUSPENDED


def test_spec_edit_between_runs_bumps_the_generation(tmp_path):
    h = Harness(tmp_path, suspend=True)
    h.run()
    first = h.state().generation
    write_run(tmp_path, suspend=False)
    assert h.run() == EXIT_COMPLETE
    assert h.state().generation == first + 1


def test_raising_rounds_on_a_finished_run_runs_the_new_round_only(tmp_path):
    """Issue 19 item 2: a finished run printed "complete ... 1 round(s)" and ignored the raised target."""
    h = Harness(tmp_path)
    assert h.run() == EXIT_COMPLETE
    count = len(h.call_log())
    write_run(tmp_path, sail={"rounds": 2, "train": {"effectiveBatch": 4, "microBatch": 2}})
    assert h.run() == EXIT_COMPLETE
    started = [c["key"] for c in h.call_log()[count:]]  # nothing committed is started again
    assert sorted(set(started)) == ["annotate:2", "generate:2", "mixup:2", "train:2"]
    state = h.state()
    assert state.status.state == RunState.SUCCEEDED and state.status.current_iteration == 2
    assert state.status.checkpoint.iteration == 2
    assert "Extended: extended: spec.sail.rounds raised to 2, continuing at round 2" in h.out.getvalue()


def test_a_new_start_iteration_on_a_finished_run_rewinds_it(tmp_path):
    h = Harness(tmp_path)
    assert h.run() == EXIT_COMPLETE
    count = len(h.call_log())
    write_run(tmp_path, startIteration=1)
    assert h.run() == EXIT_COMPLETE
    assert [c["key"] for c in h.call_log()[count:]].count("train:1") == 1
    assert "train:0" not in [c["key"] for c in h.call_log()[count:]]
    assert "rewound to iteration 1" in h.out.getvalue()


def test_gpu_list_comes_from_cuda_visible_devices_else_nvidia_smi():
    smi = "GPU 0: NVIDIA H100 (UUID: GPU-a)\nGPU 1: NVIDIA H100 (UUID: GPU-b)\n"
    assert parse_gpu_list(smi, None) == ["0", "1"]
    assert parse_gpu_list(smi, "3, 5") == ["3", "5"]
    assert parse_gpu_list("", "-1") == [] and parse_gpu_list("", None) == []


def test_fake_trainer_shards_get_one_gpu_each_and_the_spec_keeps_its_precision(tmp_path):
    h = Harness(tmp_path)
    assert h.run(workers=2, gpus=["0", "1"]) == EXIT_COMPLETE
    calls = h.call_log()
    assert sorted(c["gpu"] for c in calls if c["key"] == "generate:1") == ["0", "1"]
    resolved = json.loads(Path(calls[0]["spec"]).read_text())
    assert resolved.get("precisionOverride") is None


def test_without_gpus_the_resolved_spec_asks_for_fp32(tmp_path):
    h = Harness(tmp_path, suspend=True)
    h.run()
    assert json.loads(h.paths.spec_file.read_text())["precisionOverride"] == "fp32"


def test_fake_trainer_with_an_s3_run_root_keeps_executor_files_beside_the_run_file(tmp_path):
    h = Harness(tmp_path)
    assert h.executor(storage="s3://bucket/runs/fake").execute() == EXIT_COMPLETE
    calls = h.call_log()
    assert all(c["argv"][c["argv"].index("--run") + 1] == "s3://bucket/runs/fake" for c in calls)
    assert h.paths.state_file == tmp_path / ".sail" / "fake" / "s3" / "bucket" / "runs" / "fake" / "local" / "state.json"
    assert h.state().status.checkpoint.uri == "s3://bucket/runs/fake/iter-001/train/model"
    resolved = json.loads(h.paths.spec_file.read_text())
    assert resolved["storage"]["uri"] == "s3://bucket/runs/fake"


def test_a_second_s3_run_root_with_the_same_file_is_a_new_run_not_the_old_ones_state(tmp_path):
    """Issue 19 item 1: `--storage s3://.../other` reused the first root's state and printed "complete"."""
    h = Harness(tmp_path)
    assert h.executor(storage="s3://bucket/runs/a").execute() == EXIT_COMPLETE
    first = len(h.call_log())
    assert h.executor(storage="s3://bucket/runs/b").execute() == EXIT_COMPLETE
    second = h.call_log()[first:]
    assert len(second) == first  # every phase ran again, on the new root
    assert all(c["argv"][c["argv"].index("--run") + 1] == "s3://bucket/runs/b" for c in second)
    assert h.state().status.checkpoint.uri == "s3://bucket/runs/b/iter-001/train/model"


def test_a_state_that_records_another_s3_root_is_refused_with_both_roots_named(tmp_path):
    h = Harness(tmp_path)
    assert h.executor(storage="s3://bucket/runs/a").execute() == EXIT_COMPLETE
    state_dir = h.paths.local_dir
    target = tmp_path / ".sail" / "fake" / "s3" / "bucket" / "runs" / "b" / "local"
    target.parent.mkdir(parents=True)
    state_dir.rename(target)  # e.g. a copied folder: the state says root a, the command says root b
    with pytest.raises(ValueError, match="records run root s3://bucket/runs/a, not s3://bucket/runs/b") as info:
        h.executor(storage="s3://bucket/runs/b")
    assert "--storage s3://bucket/runs/a" in str(info.value)


def test_a_state_in_the_older_per_name_folder_is_used_only_for_the_root_it_records(tmp_path):
    h = Harness(tmp_path)
    assert h.executor(storage="s3://bucket/runs/a").execute() == EXIT_COMPLETE
    legacy = tmp_path / ".sail" / "fake" / "local"
    h.paths.local_dir.rename(legacy)
    h.executor(storage="s3://bucket/runs/a")
    assert h.paths.local_dir == legacy
    h.executor(storage="s3://bucket/runs/b")
    assert h.paths.local_dir != legacy


def test_fake_trainer_with_one_worker_runs_shards_one_after_another(tmp_path):
    h = Harness(tmp_path)
    assert h.run(workers=1) == EXIT_COMPLETE
    annotate = [(e["event"], e["shard"]) for e in h.events() if e["key"] == "annotate:1"]
    assert annotate == [("start", "0"), ("end", "0"), ("start", "1"), ("end", "1"), ("start", "2"), ("end", "2")]
