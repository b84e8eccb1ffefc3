"""spec.evaluation: its schema, the evaluate phase in the plan, and the checks before any Job."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from sail_api.inputs import check_local_inputs, find_clip_layout_problem
from sail_api.phases import SHARDED_PHASES, Phase, phases_of_iteration
from sail_api.resolved import compute_algorithm_digest
from sail_api.spec import SAILRunSpec
from sail_api.validation import check_semantics
from sail_operator.planner.decide import Step, build_plan
from sail_operator.policy import OperatorPolicy, check_data_uris
from tests.unit.test_planner_decide import make_spec, play
from tests.unit.test_validation_run_file import build_run

TOY = {"name": "oracle", "callable": "sail_trainer.toy.scorers:hidden_preference"}


def evaluation(**kw):
    return {"scorers": [TOY], "count": 4, **kw}


def test_evaluation_is_off_by_default_and_adds_no_phase():
    spec = make_spec()
    assert spec.evaluation is None
    assert phases_of_iteration(0) == (Phase.MIXUP, Phase.TRAIN)
    assert Phase.EVALUATE not in {s.phase for s in build_plan(2)}


def test_evaluate_ends_every_iteration_step0_too_and_is_sharded():
    assert phases_of_iteration(0, True) == (Phase.MIXUP, Phase.TRAIN, Phase.EVALUATE)
    assert phases_of_iteration(2, True)[-2:] == (Phase.TRAIN, Phase.EVALUATE)
    assert Phase.EVALUATE in SHARDED_PHASES
    assert Step(0, Phase.TRAIN) < Step(0, Phase.EVALUATE) < Step(1, Phase.GENERATE)
    assert Step(1, Phase.TRAIN) < Step(1, Phase.EVALUATE) < Step(2, Phase.GENERATE)


def test_a_run_with_evaluation_creates_each_evaluate_job_once_after_its_train():
    status, created = play(make_spec(evaluation=evaluation(shards=3)))
    order = [(c.iteration, c.phase) for c in created]
    assert order == [(s.iteration, s.phase) for s in build_plan(1, evaluate=True)]
    assert order.index((0, Phase.EVALUATE)) == order.index((0, Phase.TRAIN)) + 1
    assert [c.shards for c in created if c.phase is Phase.EVALUATE] == [3, 3]
    assert status.progress.total_phases == 2 + 1 + 4 + 1
    recorded = [p.phase for p in status.iterations[0].phases]
    assert recorded == ["mixup", "train", "evaluate"]


def test_a_run_without_evaluation_keeps_its_plan_and_progress():
    status, created = play(make_spec())
    assert Phase.EVALUATE not in {c.phase for c in created}
    assert status.progress.total_phases == 6


def test_an_absent_evaluation_keeps_the_digest_of_runs_that_predate_it():
    spec = make_spec()
    body = spec.algorithm().model_dump(mode="json", by_alias=True)
    assert "evaluation" in body  # the field exists, yet the digest leaves it out while unset
    with_eval = make_spec(evaluation=evaluation())
    assert compute_algorithm_digest(spec.algorithm()) != compute_algorithm_digest(with_eval.algorithm())
    body.pop("evaluation")
    assert compute_algorithm_digest(spec.algorithm()) == compute_algorithm_digest(
        type(spec.algorithm()).model_validate(body))


@pytest.mark.parametrize(("scorers", "count", "expected"), [
    ([{"name": "a", "callable": "no_colon"}], 4, "not `module:function`"),
    ([{"name": "a"}], 4, "exactly one of callable and clip"),
    ([{"name": "a", "callable": "m:f", "clip": {"uri": "/x"}}], 4, "exactly one of callable and clip"),
    ([{"name": "Bad_Name", "callable": "m:f"}], 4, "lower-case letters"),
    ([TOY, TOY], 4, "repeated: oracle"),
    ([], 4, "at least 1"),
    ([TOY], 0, "greater than or equal to 1"),
])
def test_bad_evaluation_fields_are_refused_naming_the_problem(scorers, count, expected):
    with pytest.raises(ValidationError) as info:
        make_spec(evaluation={"scorers": scorers, "count": count})
    assert expected in str(info.value)
    assert "evaluation" in str(info.value)


def test_default_prompts_need_held_out_pairs():
    run = build_run(evaluation=evaluation(), sail={"validation": {"fraction": 0}})
    assert any(p.startswith("spec.evaluation.prompts:") for p in check_semantics(run))
    assert not [p for p in check_semantics(build_run(evaluation=evaluation())) if "evaluation" in p]


def _clip_folder(tmp_path, model_type="clip", weights=True, processor=True, tokenizer=True):
    folder = tmp_path / "clip"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    if weights:
        (folder / "model.safetensors").write_bytes(b"x")
    if processor:
        (folder / "preprocessor_config.json").write_text("{}")
    if tokenizer:
        (folder / "vocab.json").write_text("{}")
        (folder / "merges.txt").write_text("")
    return folder


@pytest.mark.parametrize(("layout", "expected"), [
    ({"model_type": "clip_text_model"}, "model_type 'clip'"),
    ({"weights": False}, "weights"),
    ({"processor": False}, "preprocessor_config.json"),
    ({"tokenizer": False}, "tokenizer files"),
])
def test_a_clip_folder_of_the_wrong_layout_is_named(tmp_path, layout, expected):
    problem = find_clip_layout_problem(_clip_folder(tmp_path, **layout), "spec.evaluation.scorers[0].clip.uri")
    assert problem is not None and expected in problem
    assert problem.startswith("spec.evaluation.scorers[0].clip.uri:")


def test_sail_validate_checks_local_clip_folders(tmp_path):
    good, empty = _clip_folder(tmp_path), tmp_path / "empty"
    empty.mkdir()
    scorers = [{"name": "good", "clip": {"uri": str(good)}}, {"name": "bad", "clip": {"uri": str(empty)}}]
    spec = make_spec(evaluation={"scorers": scorers})
    problems = [p for p in check_local_inputs(spec) if "evaluation" in p]
    assert len(problems) == 1 and problems[0].startswith("spec.evaluation.scorers[1].clip.uri:")


def test_cluster_policy_covers_the_evaluation_uris():
    spec = SAILRunSpec.model_validate({**make_spec().model_dump(by_alias=True), "evaluation": {
        "scorers": [{"name": "pick", "clip": {"uri": "/local/pickscore"}}], "prompts": {"uri": "s3://b/eval.txt"}}})
    problems = check_data_uris(spec, OperatorPolicy(), "default")
    assert [p.split(" ")[0] for p in problems] == ["spec.evaluation.scorers[0].clip.uri"]


def test_an_evaluate_attempt_is_an_indexed_job_with_its_shards_and_resources():
    from sail_operator.kube.jobs import build_phase_job
    from tests.unit.test_kube_jobs import SETTINGS, action, build_run, container

    run = build_run(evaluation={"scorers": [TOY], "shards": 3},
                    resources={"evaluate": {"limits": {"nvidia.com/gpu": "1"}}})
    status, created = play(make_spec(evaluation=evaluation(shards=3)))
    [first] = [c for c in created if c.phase is Phase.EVALUATE and c.iteration == 0]
    job = build_phase_job(run, action(Phase.EVALUATE, iteration=0, shards=first.shards), SETTINGS)
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 3
    command = container(job)["command"] + container(job).get("args", [])
    assert "evaluate" in command and command[-2:] == ["--shards", "3"]
    assert container(job)["resources"]["limits"] == {"nvidia.com/gpu": "1"}


def test_the_cost_estimate_counts_the_evaluate_sampling():
    from sail_operator.estimate import compute_estimate

    plain = make_spec(seedPairs={"uri": "s3://b/seed.jsonl", "limit": 100})
    spec = make_spec(seedPairs={"uri": "s3://b/seed.jsonl", "limit": 100}, evaluation=evaluation(count=10))
    without, with_eval = compute_estimate(plain), compute_estimate(spec)
    evaluate = [p for p in with_eval.phases if p.phase == "evaluate"]
    steps, cfg = spec.sail.sampler.steps, 2
    assert [(p.iteration, p.unet_forwards) for p in evaluate] == [(0, 10 * 2 * steps * cfg), (1, 10 * 3 * steps * cfg)]
    assert with_eval.total().unet_forwards == without.total().unet_forwards + 50 * steps * cfg
    assert not [p for p in without.phases if p.phase == "evaluate"]


def _play_gate(gate: dict, fidelity: dict[int, tuple[float, float]], accuracy: float = 0.7):
    """Run to the end; evaluate of iteration i reports fidelity (previous, current) means."""
    from sail_api.phases import PhaseSummary
    from tests.builders.planner_play import play_to_end

    def summary_of(action):
        metrics = {"loss": 0.5}
        if action.phase is Phase.TRAIN:
            metrics["heldout_accuracy_vs_base"] = accuracy
        if action.phase is Phase.EVALUATE:
            previous, current = fidelity[action.iteration]
            metrics |= {"eval_fidelity_mean_previous": previous, "eval_fidelity_mean_current": current,
                        "eval_oracle_mean_previous": 0.0, "eval_oracle_mean_current": -5.0}
        return PhaseSummary(phase=action.phase, iteration=action.iteration, outcome="committed",
                            manifest_uri="s3://b/x", metrics=metrics, shard="0/1")

    spec = make_spec(sail={"rounds": 3}, roundGate=gate,
                     evaluation={"scorers": [{"name": "fidelity", "callable": "m:f"}, TOY]})
    status, created, events = play_to_end(spec, summary_of)
    return status, [(a.iteration, a.phase) for a in created], events


FIDELITY = {0: (0.7, 0.6), 1: (0.6, 0.62), 2: (0.62, 0.5), 3: (0.5, 0.55)}


def test_the_round_gate_stops_on_a_guarded_scorer_that_regresses_after_evaluate():
    status, created, events = _play_gate({"scorers": ["fidelity"], "scorerTolerance": 0.05}, FIDELITY)
    assert created[-1] == (2, Phase.EVALUATE), "stopped after round 2's evaluate, round 3 never started"
    accepted = next(c for c in status.conditions if c.type == "RoundAccepted")
    assert accepted.status == "False" and "scorer fidelity" in accepted.message and "0.12" in accepted.message
    assert any("stopping" in e.message and "scorer fidelity" in e.message for e in events)


def test_scorers_not_named_in_the_gate_and_drops_within_tolerance_never_stop_a_run():
    status, created, _ = _play_gate({"scorers": ["fidelity"], "scorerTolerance": 0.2}, FIDELITY)
    assert created[-1] == (3, Phase.EVALUATE) and status.state == "Succeeded"
    assert next(c for c in status.conditions if c.type == "RoundAccepted").status == "True"
    _, created, _ = _play_gate({}, FIDELITY)  # the oracle scorer falls by 5 each round: not guarded
    assert created[-1] == (3, Phase.EVALUATE)


def test_a_gated_scorer_must_be_an_evaluation_scorer():
    run = build_run(evaluation=evaluation(), roundGate={"scorers": ["oracle", "pickscore"]})
    assert [p.split(":")[0] for p in check_semantics(run) if "roundGate" in p] == ["spec.roundGate.scorers[1]"]
