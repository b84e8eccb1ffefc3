"""The pydantic API models: defaults from docs/method.md and precise per-field errors."""

import subprocess
import sys

import pytest
from pydantic import ValidationError

from sail_api.layout import RunLayout
from sail_api.phases import Phase, build_phase_args, phases_of_iteration
from sail_api.resolved import build_resolved_run
from sail_api.spec import SAILRun
from tests.builders.sailrun_spec import build_sailrun_dict, build_spec_body


def make_run(**spec_overrides) -> dict:
    spec = build_spec_body(prompts="p.txt", storage=None)
    return build_sailrun_dict("demo", {**spec, **spec_overrides})


def test_defaults_follow_the_method_document():
    sail = SAILRun.model_validate(make_run()).spec.sail
    assert (sail.candidates_per_prompt, sail.reward_draws, sail.alpha, sail.beta) == (8, 10, 0.25, 5000.0)
    assert sail.judge_reference == "base"
    assert sail.train.effective_batch == 128 and sail.train.empty_prompt_probability == 0.2
    assert sail.train.optimizer.weight_decay == 1e-2 and sail.train.optimizer.max_grad_norm == 1.0


@pytest.mark.parametrize(
    ("override", "field_fragment"),
    [
        ({"sail": {"alpha": 1.5}}, "alpha"),
        ({"sail": {"candidatesPerPrompt": 1}}, "candidatesPerPrompt"),
        ({"sail": {"sampler": {"resolution": 513}}}, "resolution"),
        ({"sail": {"bogus": 1}}, "bogus"),
        ({"resources": {"train": {"limits": {"memory": "lots"}}}}, "memory"),
    ],
)
def test_bad_fields_are_named_in_the_error(override, field_fragment):
    with pytest.raises(ValidationError) as info:
        SAILRun.model_validate(make_run(**override))
    assert field_fragment in str(info.value)


def test_name_longer_than_forty_is_rejected_with_the_reason():
    body = make_run()
    body["metadata"]["name"] = "x" * 41
    with pytest.raises(ValidationError, match="at most 40"):
        SAILRun.model_validate(body)


def test_digest_ignores_execution_fields_but_not_algorithm_fields():
    base = build_resolved_run(SAILRun.model_validate(make_run()), "/tmp/r").digest()
    more_shards = build_resolved_run(
        SAILRun.model_validate(make_run(parallelism={"generateShards": 4})), "/tmp/r"
    ).digest()
    other_beta = build_resolved_run(SAILRun.model_validate(make_run(sail={"beta": 2000})), "/tmp/r").digest()
    more_rounds = build_resolved_run(SAILRun.model_validate(make_run(sail={"rounds": 7})), "/tmp/r").digest()
    assert base == more_shards
    assert base == more_rounds, "raising the rounds target must not invalidate committed phases"
    assert base != other_beta


# The digest of `make_run()` before `sail.rewardTimesteps` existed (commit 8342f42): runs
# started then must keep their digest, or an upgraded operator would refuse their commits.
DIGEST_BEFORE_REWARD_TIMESTEPS = "sha256:29fa203362d77188bf21c9f72327d6a424339dd787b3203fec032549a24a92a6"


def test_a_new_field_at_its_default_keeps_the_digest_of_runs_started_before_it():
    default = build_resolved_run(SAILRun.model_validate(make_run()), "/tmp/r").digest()
    spelled_out = build_resolved_run(SAILRun.model_validate(
        make_run(sail={"rewardTimesteps": {"minFraction": 0.0, "maxFraction": 1.0}})), "/tmp/r").digest()
    upper_half = build_resolved_run(SAILRun.model_validate(
        make_run(sail={"rewardTimesteps": {"minFraction": 0.5}})), "/tmp/r").digest()
    assert default == spelled_out == DIGEST_BEFORE_REWARD_TIMESTEPS
    assert upper_half != default, "a non-default reward range changes what annotate computes"


@pytest.mark.parametrize(
    ("range_", "allowed"),
    [({"minFraction": 0.5}, True), ({"minFraction": 0.5, "maxFraction": 0.5}, False),
     ({"maxFraction": 0.0}, False), ({"minFraction": 0.9, "maxFraction": 0.3}, False)],
)
def test_reward_timesteps_must_be_a_non_empty_range(range_, allowed):
    body = make_run(sail={"rewardTimesteps": range_})
    if allowed:
        SAILRun.model_validate(body)
        return
    with pytest.raises(ValidationError, match="rewardTimesteps|maxFraction"):
        SAILRun.model_validate(body)


@pytest.mark.parametrize(
    ("fractions", "steps", "bounds"),
    [((0.0, 1.0), 1000, (0, 1000)), ((0.5, 1.0), 1000, (500, 1000)), ((0.7, 0.7001), 1000, (700, 701)),
     ((0.999, 1.0), 10, (9, 10))],
)
def test_reward_timestep_bounds_are_integer_and_never_empty(fractions, steps, bounds):
    from sail_api.spec import RewardTimestepsSpec

    spec = RewardTimestepsSpec(min_fraction=fractions[0], max_fraction=fractions[1])
    assert spec.bounds(steps) == bounds


def test_performance_levers_reach_the_resolved_run_but_not_the_digest():
    plain = build_resolved_run(SAILRun.model_validate(make_run()), "/tmp/r")
    fast = build_resolved_run(SAILRun.model_validate(make_run(performance={"compile": True, "channelsLast": True})),
                              "/tmp/r")
    assert (fast.performance.compile, fast.performance.channels_last) == (True, True)
    assert (plain.performance.compile, plain.performance.channels_last) == (False, False)
    assert fast.digest() == plain.digest()


def test_layout_and_phase_args_agree():
    layout = RunLayout("s3://bucket/runs/demo")
    assert layout.manifest_uri(2, Phase.GENERATE, 1, 4) == (
        "s3://bucket/runs/demo/iter-002/generate/shard-00001-of-00004/_SUCCESS.json"
    )
    assert layout.model_dir(0) == "s3://bucket/runs/demo/iter-000/train/model"
    assert phases_of_iteration(0) == (Phase.MIXUP, Phase.TRAIN)
    assert build_phase_args(Phase.ANNOTATE, "s3://b/r", 3, "/etc/sail/spec.json", shards=2)[-2:] == ["--shards", "2"]


def test_importing_the_api_and_planner_does_not_import_torch():
    code = (
        "import sys, sail_api.spec, sail_api.status, sail_api.layout, sail_api.storage, "
        "sail_operator.planner.model; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
