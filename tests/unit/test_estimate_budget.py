"""The cost estimate (`sail plan`) and the admin's budget: pure arithmetic on the spec, in milliseconds.

The counts themselves are checked against a real tiny run in tests/integration/test_estimate_counts.py;
here: the paper-scale figures against the measured anchors, the card choice, and the budget refusal.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sail_api.spec import SAILRunSpec
from sail_api.validation import load_run_file
from sail_operator.budget import compute_budget_violations, compute_max_prompts_per_round
from sail_operator.estimate import compute_estimate
from sail_operator.kube.observe import validate_run
from sail_operator.kube.settings import OperatorSettings
from sail_operator.policy import OperatorPolicy, compute_policy_violations
from tests.builders.sailrun_spec import build_sailrun_dict

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _spec(name: str, **sail) -> SAILRunSpec:
    spec = load_run_file(EXAMPLES / name).spec
    return spec.model_copy(update={"sail": spec.sail.model_copy(update=sail)}) if sail else spec


def _phase(estimate, iteration: int, phase: str):
    (found,) = [p for p in estimate.phases if p.iteration == iteration and p.phase == phase]
    return found


def test_paper_sd15_generation_costs_what_the_anchor_says() -> None:
    """ANCHORS: a 20K-prompt x 8 SD1.5 round at 50 DDPM steps is ~15 GPU-hours of generation on an H100."""
    estimate = compute_estimate(_spec("sd15.yaml", prompts_per_round=20_000))
    generate = _phase(estimate, 1, "generate")
    assert generate.unet_forwards == 20_000 * 8 * 50 * 2
    assert 12.0 < generate.gpu_hours < 16.0
    assert generate.wall_hours == pytest.approx(generate.gpu_hours / 8)  # 8 generate shards
    assert generate.storage_bytes >= 160_000 * 4 * 64 * 64 * 4  # fp32 latents: ~10 GB (issue 18)


def test_sdxl_latents_are_four_times_sd15s_per_sample() -> None:
    sd15 = _phase(compute_estimate(_spec("sd15.yaml")), 1, "generate").storage_bytes
    sdxl = _phase(compute_estimate(_spec("sdxl.yaml")), 1, "generate").storage_bytes
    assert 3.9 < sdxl / sd15 < 4.1


def test_no_guidance_halves_the_generate_passes() -> None:
    spec = _spec("sd15.yaml")
    plain = spec.model_copy(update={"sail": spec.sail.model_copy(update={
        "sampler": spec.sail.sampler.model_copy(update={"guidance_scale": 1.0})})})
    assert _phase(compute_estimate(plain), 1, "generate").unet_forwards * 2 == \
        _phase(compute_estimate(spec), 1, "generate").unet_forwards


def test_train_passes_follow_the_mixture() -> None:
    """One pass over the mixture (self pairs / alpha): 10K / 0.25 = 40K pairs = 313 steps of 128."""
    train = _phase(compute_estimate(_spec("sd15.yaml")), 1, "train")
    pairs = 313 * 128
    assert train.unet_backwards == 2 * pairs
    assert train.unet_forwards == 4 * pairs + 8 * 2 * 50 * 2  # + the sample grid


def test_card_comes_from_the_gpu_product_node_selector() -> None:
    assert compute_estimate(_spec("sdxl.yaml")).card == "H100"  # nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3
    spec = _spec("sdxl.yaml")
    spec.template.node_selector["nvidia.com/gpu.product"] = "NVIDIA-L4"
    estimate = compute_estimate(spec)
    assert estimate.card == "H100" and any("NVIDIA-L4" in note for note in estimate.notes)


def test_an_unknown_card_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="card 'B200'"):
        compute_estimate(_spec("sd15.yaml"), card="B200")


def test_round_over_the_gpu_budget_names_prompts_per_round_and_what_fits() -> None:
    spec = _spec("sd15.yaml")
    (problem,) = compute_budget_violations(spec, max_round_gpu_hours=5.0)
    fit = compute_max_prompts_per_round(spec, 5.0, None)
    assert problem.startswith("spec.sail.promptsPerRound 10000")
    assert "maxRoundGpuHours 5.0" in problem and f"at most {fit} prompts" in problem
    assert compute_budget_violations(_spec("sd15.yaml", prompts_per_round=fit), max_round_gpu_hours=5.0) == []
    assert compute_budget_violations(_spec("sd15.yaml", prompts_per_round=fit + 1), max_round_gpu_hours=5.0)


def test_step0_over_the_storage_budget_names_the_seed_pair_limit() -> None:
    problems = compute_budget_violations(_spec("sd15.yaml"), max_round_storage_bytes=20_000_000_000)
    assert [p.split(":")[0] for p in problems] == ["spec.seedPairs.limit 50000"]
    assert "maxRoundStorageBytes" in problems[0]


def test_zero_means_no_budget() -> None:
    assert compute_budget_violations(_spec("sdxl.yaml"), max_round_gpu_hours=0, max_round_storage_bytes=0) == []


def test_policy_refuses_an_over_budget_run_before_any_job() -> None:
    """The operator's admission (`validate_run`, used before `decide` creates any Job) refuses it."""
    policy = OperatorPolicy(max_round_gpu_hours=5.0)
    spec = _spec("sd15.yaml")
    assert any("spec.sail.promptsPerRound" in p for p in compute_policy_violations(spec, policy))
    raw = build_sailrun_dict("x", spec.model_dump(mode="json", by_alias=True, exclude_none=True))
    accepted, message = validate_run(raw, OperatorSettings(policy=policy))
    assert accepted is None and "maxRoundGpuHours" in message
    accepted, message = validate_run(raw, OperatorSettings())
    assert accepted is not None and message is None


def test_accepted_run_carries_the_plan_estimate_in_its_status() -> None:
    """decide() fills status.costEstimate once, when it accepts the spec: the totals `sail plan` prints."""
    from datetime import UTC, datetime

    from sail_api.status import SAILRunStatus
    from sail_operator.planner.decide import decide
    from sail_operator.planner.model import Observed

    spec = _spec("sd15.yaml")
    observed = Observed(name="sd15", namespace="ns", uid="uid-1", generation=1, spec=spec, spec_error=None,
                        status=SAILRunStatus(), attempts=())
    cost = decide(observed, datetime(2026, 12, 5, tzinfo=UTC)).status.cost_estimate
    estimate = compute_estimate(spec)
    assert cost is not None and cost.card == "H100"
    assert cost.unet_forwards == estimate.total().unet_forwards
    assert cost.round_gpu_hours == pytest.approx(estimate.total(1).gpu_hours, abs=1e-3)
    assert cost.storage_bytes == estimate.total().storage_bytes
    dumped = cost.model_dump(by_alias=True)
    assert {"unetForwards", "gpuHours", "roundStorageBytes"} <= set(dumped)


def test_shard_split_matches_the_trainer_and_handles_any_prompt_count() -> None:
    """The estimate's per-shard counts equal `select_shard_positions`' and cost O(shards): a spec may
    ask for any promptsPerRound, and the operator computes the estimate on every accepted run."""
    import itertools

    from sail_operator.estimate import _split
    from sail_trainer.plan import select_shard_positions

    for count, shards, group in itertools.product(range(0, 30), range(1, 6), range(1, 5)):
        assert _split(count, shards, group) == [len(select_shard_positions(count, group, k, shards))
                                                for k in range(shards)], (count, shards, group)
    huge = compute_estimate(_spec("sdxl.yaml", prompts_per_round=10**15))
    assert _phase(huge, 1, "generate").unet_forwards == 10**15 * 8 * 20 * 2
