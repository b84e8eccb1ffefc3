"""The report's "did it get better?" section and the status lines: numbers from status, verdict, comparison."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from sail_api.status import IterationRecord, PhaseRecord, SAILRunStatus
from sail_operator.local.state import LocalState
from sail_operator.report.artifacts import IterationArtifacts
from sail_operator.report.html import render_report_html
from sail_operator.report.quality import (
    IterationQuality,
    build_comparison_png,
    collect_quality,
    comparison_grids,
    compute_verdict,
)
from sail_operator.report.table import render_status_text


def _train(acc_base: float, acc_ref: float, pairs: int = 100) -> PhaseRecord:
    return PhaseRecord(phase="train", result="Succeeded", metrics={
        "loss": 0.6, "heldout_accuracy": acc_ref, "heldout_accuracy_vs_base": acc_base,
        "heldout_margin_vs_base": 0.01, "heldout_pairs": float(pairs)})


def _annotate(trust: float, pairs: int = 100) -> PhaseRecord:
    return PhaseRecord(phase="annotate", result="Succeeded", metrics={"judge_trust": trust,
                                                                        "judge_trust_pairs": float(pairs)})


def make_state(*iterations: IterationRecord) -> LocalState:
    return LocalState(name="demo", storage_uri="/runs/demo", spec={"sail": {"rounds": 2}},
                      status=SAILRunStatus(iterations=list(iterations)))


STATE = make_state(
    IterationRecord(iteration=0, phases=[PhaseRecord(phase="mixup", result="Succeeded"), _train(0.71, 0.71)]),
    IterationRecord(iteration=1, phases=[_annotate(0.69), _train(0.78, 0.62)]),
    IterationRecord(iteration=2, phases=[_annotate(0.52), _train(0.62, 0.41)]),
)


def test_numbers_per_iteration_come_from_the_train_and_annotate_metrics_in_status():
    rows = collect_quality(STATE)
    assert [(r.iteration, r.accuracy_vs_base, r.accuracy_vs_reference, r.judge_trust) for r in rows] == [
        (0, 0.71, 0.71, None), (1, 0.78, 0.62, 0.69), (2, 0.62, 0.41, 0.52)]


def test_verdict_names_a_regression_and_noisy_self_labels():
    verdict = compute_verdict(collect_quality(STATE))
    assert verdict.startswith("Better than the base: round 2")
    assert "Round 2 regressed from round 1 (78%)" in verdict and "--iteration best" in verdict
    assert "noise in round 2" in verdict and "round 1," not in verdict


@pytest.mark.parametrize(("accuracy", "pairs", "opening"), [
    (0.58, 100, "Not measurably"), (0.61, 100, "Better"), (0.6, 10, "Not measurably"), (0.39, 100, "Worse"),
    (0.42, 100, "Not measurably")])
def test_verdict_calls_a_difference_only_beyond_two_standard_errors(accuracy, pairs, opening):
    verdict = compute_verdict([IterationQuality(1, accuracy_vs_base=accuracy, pairs=pairs)])
    assert verdict.startswith(opening), verdict


def test_without_heldout_pairs_the_verdict_says_it_cannot_tell():
    assert "cannot say whether it got better" in compute_verdict([])
    assert collect_quality(make_state(IterationRecord(iteration=0, phases=[_train(0.7, 0.7)]).model_copy(
        update={"phases": [PhaseRecord(phase="train", result="Succeeded", metrics={"loss": 0.6})]}))) == []


def test_status_text_ends_with_the_verdict_and_the_table():
    text = render_status_text(STATE)
    assert "Better than the base" in text
    assert any(line.split()[:2] == ["round", "1"] and "78%" in line and "69%" in line for line in text.splitlines())
    assert any(line.startswith("base") and "50% (chance)" in line for line in text.splitlines())


def _grid(colour: tuple[int, int, int], tile: int = 4, columns: int = 3, seeds: int = 2) -> bytes:
    image = Image.new("RGB", (columns * tile, seeds * tile), colour)
    image.putpixel((0, tile), (255, 255, 255))  # first pixel of seed 2's first tile
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_comparison_puts_models_side_by_side_per_seed_nearest_neighbour_upscaled():
    png = build_comparison_png([("base", _grid((255, 0, 0))), ("round 1", _grid((0, 0, 255)))])
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.size == (90 + 3 * 128, 2 * 2 * 128)  # 4-pixel tiles -> 128; rows: seed x model
    assert image.getpixel((90 + 200, 10)) == (255, 0, 0) and image.getpixel((90 + 200, 128 + 10)) == (0, 0, 255)
    # the white pixel of seed 2 becomes a sharp 32x32 block (nearest neighbour, no blur) in the base's seed-2 row
    assert image.getpixel((90 + 31, 256 + 31)) == (255, 255, 255) and image.getpixel((90 + 32, 256)) == (255, 0, 0)
    assert build_comparison_png([("base", _grid((255, 0, 0)))]) is None, "one grid: nothing to compare"


def test_report_opens_with_the_answer_before_the_grids():
    artifacts = [IterationArtifacts(0, samples=_grid((0, 255, 0)), base_samples=_grid((255, 0, 0))),
                 IterationArtifacts(1, samples=_grid((0, 0, 255)))]
    assert [label for label, _ in comparison_grids(artifacts)] == ["base", "step 0", "round 1"]
    page = render_report_html(STATE, artifacts, {})
    assert page.index("id=verdict") < page.index("<h2>Sample grids")
    assert "id=comparison" in page and "Round 2 regressed" in page


def test_the_round_gates_best_checkpoint_is_named_in_status_and_report():
    from sail_api.status import BestCheckpointStatus

    state = STATE.model_copy(deep=True)
    state.status.best_checkpoint = BestCheckpointStatus(uri="/runs/demo/iter-001/train/model", iteration=1,
                                                        metric="heldout_accuracy_vs_base", value=0.78)
    line = "best checkpoint by heldout_accuracy_vs_base (0.78): iteration 1, /runs/demo/iter-001/train/model"
    assert render_status_text(state).endswith(line)
    assert f"<p id=best>{line}</p>" in render_report_html(state, [], {})
