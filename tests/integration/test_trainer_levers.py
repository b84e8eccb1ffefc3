"""The spec's levers reach the phases: speed levers keep the numbers, the reward range changes them.

Three tiny runs on the same inputs go through step 0 and round 1's generate + annotate with the
real trainer (in process, `sail_trainer.cli.main`): the default spec; `performance.channelsLast`
(an execution lever: same rewards and winners up to rounding, same digest); and
`sail.rewardTimesteps.minFraction = 0.9` (an algorithm setting: annotate must compute
different rewards from the same candidates, and the digest differs).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sail_api.layout import RunLayout
from sail_api.phases import Phase
from sail_api.resolved import ResolvedRun
from sail_api.spec import PerformanceSpec, RewardTimestepsSpec
from sail_api.storage import LocalStore
from sail_trainer.cli import main
from sail_trainer.phases.artifacts import ANNOTATION_TENSORS, load_tensors
from sail_trainer.storage import resolve_committed
from tests.builders.tiny_pipeline import build_tiny_sd15
from tests.builders.tiny_run import create_tiny_run, phase_args

# The module fixture builds its tiny run once; one xdist worker runs the module (tests/conftest.py).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("trainer_levers")]


def _run_round_one(folder: Path, model: Path, performance: dict | None = None, **sail) -> tuple[torch.Tensor, ResolvedRun]:
    run = create_tiny_run(folder, model=model, **sail)
    if performance is not None:
        resolved = json.loads(run.spec.read_text())
        resolved["performance"] = performance
        run.spec.write_text(json.dumps(resolved))
    for phase, iteration in [("mixup", 0), ("train", 0), ("generate", 1), ("annotate", 1)]:
        assert main(phase_args(run, phase, iteration)) == 0, (phase, iteration)
    shard = RunLayout(run.run_uri).shard_dir(1, Phase.ANNOTATE, 0, 1)
    tensors = load_tensors(Path(resolve_committed(LocalStore(shard), shard, ANNOTATION_TENSORS)).read_bytes())
    return tensors["rewards"], ResolvedRun.model_validate_json(run.spec.read_text())


@pytest.fixture(scope="module")
def default_round(tmp_path_factory):
    base = tmp_path_factory.mktemp("levers")
    model = build_tiny_sd15(base / "model")
    return base, model, _run_round_one(base / "default", model)


def test_channels_last_keeps_rewards_and_digest(default_round):
    base, model, (rewards, _) = default_round
    fast_rewards, fast = _run_round_one(base / "channels-last", model, {"channelsLast": True})
    assert fast.performance.channels_last
    plain = fast.model_copy(update={"performance": PerformanceSpec()})
    assert fast.digest() == plain.digest(), "a speed lever must not change the run's identity"
    # Rewards are differences of small errors, scaled by beta: compare relative to their spread.
    torch.testing.assert_close(fast_rewards, rewards, rtol=1e-3, atol=1e-3 * float(rewards.abs().max()))
    assert torch.equal(fast_rewards.argmax(1), rewards.argmax(1)) and torch.equal(fast_rewards.argmin(1), rewards.argmin(1))


def test_reward_timesteps_change_what_annotate_computes(default_round):
    base, model, (rewards, _) = default_round
    high_rewards, high = _run_round_one(base / "high-noise", model, rewardTimesteps={"minFraction": 0.9})
    default_range = high.algorithm.model_copy(deep=True)
    default_range.sail.reward_timesteps = RewardTimestepsSpec()
    assert high.digest() != high.model_copy(update={"algorithm": default_range}).digest()
    assert high_rewards.shape == rewards.shape
    assert not torch.allclose(high_rewards, rewards), "the reward range did not reach the annotate phase"
