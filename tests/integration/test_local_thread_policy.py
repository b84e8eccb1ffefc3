"""The phase processes `sail run` starts get OMP_WAIT_POLICY=PASSIVE unless the user set a policy.

With the default (spinning) policy, two torch threads on a loaded 2-core machine sampled 16 toy
images in 96-182 s instead of 1-2 s (docs/dev/threads.md). A stand-in phase program (real
subprocesses started by the real LocalExecutor) records the policy it was given.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import yaml

from sail_api.spec import SAILRun
from sail_operator.local.executor import EXIT_COMPLETE, LocalExecutor
from sail_operator.local.paths import build_local_run
from tests.builders.sailrun_spec import build_sailrun_dict, build_spec_body

RECORDING_PHASE = r'''
import json, os, sys
opts = dict(zip(sys.argv[2::2], sys.argv[3::2]))
with open(os.environ["POLICY_LOG"], "a") as f:
    f.write(json.dumps({"phase": sys.argv[1], "policy": os.environ.get("OMP_WAIT_POLICY")}) + "\n")
folder = f"{opts['--run']}/iter-{int(opts['--iteration']):03d}/{sys.argv[1]}"
open(os.environ["SAIL_TERMINATION_LOG"], "w").write(json.dumps(
    {"phase": sys.argv[1], "iteration": int(opts["--iteration"]), "outcome": "committed",
     "manifestUri": folder + "/_SUCCESS.json", "metrics": {}, "exitCode": 0}))
'''


def run_and_read_policies(tmp: Path) -> list[str | None]:
    """Runs a one-round SAILRun with the recording phase program; the policy each phase process saw."""
    body = build_sailrun_dict("threads", build_spec_body(
        model="model", seed_pairs="seed/pairs.jsonl", prompts="p.txt", storage=None,
        sail={"rounds": 1, "train": {"effectiveBatch": 4, "microBatch": 2}}, parallelism={"gpusPerNode": 0}))
    (tmp / "model").mkdir()
    file = tmp / "run.yaml"
    file.write_text(yaml.safe_dump(body))
    script = tmp / "phase.py"
    script.write_text(RECORDING_PHASE)
    log = tmp / "policies.jsonl"
    run, paths = build_local_run(SAILRun.model_validate(body), file, None)
    executor = LocalExecutor(run, paths, out=io.StringIO(), program=[sys.executable, str(script)], use_bars=False,
                             extra_env={"POLICY_LOG": str(log)}, gpus=[])
    assert executor.execute() == EXIT_COMPLETE
    return [json.loads(line)["policy"] for line in log.read_text().splitlines()]


def test_phase_processes_default_to_the_passive_wait_policy(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    policies = run_and_read_policies(tmp_path)
    assert policies, "no phase process ran"
    assert set(policies) == {"PASSIVE"}


@pytest.mark.parametrize("chosen", ["ACTIVE", "passive"])
def test_a_policy_the_user_set_reaches_the_phase_processes_unchanged(tmp_path, monkeypatch, chosen):
    monkeypatch.setenv("OMP_WAIT_POLICY", chosen)
    assert set(run_and_read_policies(tmp_path)) == {chosen}
