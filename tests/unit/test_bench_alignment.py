"""bench/alignment.py's pure parts: arm naming, setting selection under the fidelity constraint,
aggregation, the table, overrides and the SAILRun algorithm each arm family trains with. (The
benchmark itself trains dozens of models: it measures; these check its bookkeeping.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import alignment as A


def test_arm_iterations_name_every_arm_of_a_family():
    assert A.arm_iterations("sail", 2) == {"sail_r1": 1, "sail_r2": 2, "dpo_seed": 0}
    assert A.arm_iterations("nomix", 2) == {"sail_nomix_r1": 1, "sail_nomix_r2": 2}
    assert A.arm_iterations("seed_iter", 1) == {"seed_iter_r1": 1}
    assert A.arm_iterations("dpo_full_matched", 3) == {"dpo_full_matched": 0}
    every = set().union(*(A.arm_iterations(f, 2) for f in A.FAMILIES + A.OPTIONAL_FAMILIES))
    gated = {"sail_gated", "sail_nomix_gated", "seed_iter_gated"}  # rows copied from the kept iteration
    assert every | {"base"} | gated == set(A.arm_order(2))


def test_selection_prefers_the_best_oracle_within_the_fidelity_slack():
    scores = {"a": {"oracle_score": 0.50, "fidelity": 0.60},   # best oracle, but unfaithful
              "b": {"oracle_score": 0.40, "fidelity": 0.68},
              "c": {"oracle_score": 0.35, "fidelity": 0.72}}
    assert A.select_setting(scores, base_fidelity=0.70) == "b"
    # Nothing within the slack: the most faithful one.
    assert A.select_setting(scores, base_fidelity=0.90) == "c"


def test_aggregate_and_markdown_report_mean_and_spread():
    per_seed = [{"base": {"oracle_score": 0.2, "fidelity": 0.7}}, {"base": {"oracle_score": 0.4, "fidelity": 0.7}}]
    agg = A.aggregate(per_seed)
    assert agg["base"]["oracle_score"] == pytest.approx([0.3, 0.1])
    cols = ["oracle_score", "win_rate", "fidelity", "colour_accuracy", "shape_accuracy", "diversity"]
    arm = {c: [0.5, 0.01] for c in cols}
    result = {"oracle": "size", "seeds": 2, "config": {"pairs": 256, "seed_pairs": 16, "seed_fraction": 0.0625,
                                                       "rounds": 1},
              "human_label_agreement": 0.85, "arms": {"base": arm, "sail_r1": arm},
              "selected": {"sail_r1": {"lr": 3e-5, "beta": 1000.0}}, "self_label_agreement": {"sail_r1": [0.9, 0.05]}}
    md = A.render_markdown(result)
    assert "| sail_r1 | 3e-05 | 1000.0 | 0.500 ± 0.010" in md and "0.900 ± 0.050 |" in md
    assert md.index("| base |") < md.index("| sail_r1 |")


def test_overrides_reject_unknown_fields_by_name():
    cfg = A.apply_overrides(A.QUICK, ["rounds=1", "reward_min_fraction=0.25"])
    assert (cfg.rounds, cfg.reward_min_fraction) == (1, 0.25)
    with pytest.raises(SystemExit, match="expected FIELD=VALUE"):
        A.apply_overrides(A.QUICK, ["sweep_lr=1"])


def test_main_restores_torch_thread_count_even_when_it_fails():
    """main() sets 2 threads for its own runs; an in-process caller (a test) keeps its count, or
    later in-process trainer runs reduce in another order."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(SystemExit, match="expected FIELD=VALUE"):
            A.main(["--quick", "--set", "sweep_lr=1"])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("family", A.FAMILIES)
def test_each_family_trains_a_valid_sailrun_algorithm(tmp_path, family):
    ctx = A.Context(A.QUICK, "size", tmp_path / "model", tmp_path)
    alg = A.build_algorithm(ctx, Path("/pool"), 3, family, A.Setting(3e-5, 1000.0))
    s = alg.sail
    assert (s.candidates_per_prompt, s.reward_draws, s.reward_timesteps.min_fraction) == (8, 16, 0.5)
    assert s.train.optimizer.learning_rate == 3e-5 and s.beta == 1000.0 and s.seed == 3
    if family.startswith("dpo_full"):
        assert s.rounds == 0 and alg.seed_pairs.limit is None  # 100% of the pairs
        extra = A.QUICK.rounds * A.QUICK.round_steps if family == "dpo_full_matched" else 0
        assert s.train.step0_steps == A.QUICK.step0_steps + extra
        assert s.validation.uri is None and s.validation.fraction == 0.0  # it trains on every pair
    else:
        assert s.rounds == A.QUICK.rounds and alg.seed_pairs.limit == A.QUICK.seed_pairs
        assert s.alpha == A.ALPHA[family]
        assert s.validation.uri == "/pool/heldout.jsonl"  # outside the seed: judge trust, nothing trained on


def test_judge_trust_correlation_needs_three_points_and_spread():
    assert A.compute_correlation([(0.6, 0.7), (0.7, 0.8)]) is None
    assert A.compute_correlation([(0.6, 0.7), (0.6, 0.8), (0.6, 0.9)]) is None
    assert A.compute_correlation([(0.5, 0.6), (0.6, 0.7), (0.7, 0.8)]) == pytest.approx(1.0)
    assert A.compute_correlation([(0.5, 0.8), (0.6, 0.7), (0.7, 0.6)]) == pytest.approx(-1.0)


def test_blind_control_is_one_round_whose_judge_is_the_model_itself(tmp_path):
    """judgeReference step0 at round 1 compares theta_0 with theta_0: all rewards 0, so the self
    pair is two random candidates; the control keeps SAIL's mixture but not its information."""
    ctx = A.Context(A.QUICK, "size", tmp_path / "model", tmp_path)
    alg = A.build_algorithm(ctx, Path("/pool"), 0, "blind", A.Setting(3e-5, 1000.0))
    assert (alg.sail.rounds, alg.sail.judge_reference, alg.sail.alpha) == (1, "step0", A.ALPHA["sail"])
    assert A.arm_iterations("blind", 2) == {"sail_blind_r1": 1}
    assert "sail_blind_r1" in A.arm_order(2)
    sail = A.build_algorithm(ctx, Path("/pool"), 0, "sail", A.Setting(3e-5, 1000.0))
    assert sail.sail.judge_reference == "base"


def test_the_gated_arm_keeps_the_best_iteration_at_the_first_held_out_regression():
    acc = "heldout_accuracy_vs_base"
    assert A.gated_iteration({0: {acc: 0.6}, 1: {acc: 0.7}, 2: {acc: 0.75}}) == 2  # never regressed: the last
    assert A.gated_iteration({0: {acc: 0.6}, 1: {acc: 0.7}, 2: {acc: 0.65}}) == 1  # 0.05 below the best: stop
    assert A.gated_iteration({0: {acc: 0.6}, 1: {acc: 0.59}, 2: {acc: 0.7}}) == 2  # within the 0.02 tolerance
    assert A.gated_iteration({0: {acc: 0.6}, 1: {acc: 0.5}, 2: {acc: 0.9}}) == 0  # stopped before round 2 ran
    assert A.gated_iteration({0: {}, 1: {}}) == 1  # no held-out metric: the gate cannot judge, the run goes on
