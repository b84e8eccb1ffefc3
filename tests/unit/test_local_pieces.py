"""Pure pieces of `sail run` / `sail status` / `sail report`: paths, progress lines, state, table, plots."""

from __future__ import annotations

import io

import pytest

from sail_api.spec import SAILRun
from sail_api.status import Condition, CurrentAttempt, IterationRecord, PhaseRecord, RunState, SAILRunStatus
from sail_operator.local.paths import build_local_run, find_state_file, resolve_uri
from sail_operator.local.progress import (
    ProgressDisplay,
    ProgressLine,
    combine_shards,
    parse_progress_line,
)
from sail_operator.local.state import (
    LocalState,
    build_resumed_state,
    build_retry_of_failed,
    load_state,
    save_state,
)
from sail_operator.planner.model import AttemptObservation, AttemptState
from sail_operator.report.artifacts import parse_metric_history
from sail_operator.report.plots import Series, compute_ticks, render_line_plot
from sail_operator.report.table import (
    build_status_rows,
    format_duration,
    format_phase_numbers,
    render_status_text,
)
from tests.builders.sailrun_spec import build_sailrun


def make_run(**spec) -> SAILRun:
    storage = spec.pop("storage", None)  # none: the local executor's default beside the run file
    return build_sailrun("demo", model="models/base", seed_pairs="data/seed.jsonl",
                         prompts="s3://bucket/prompts.txt", storage=storage, **spec)


# ------------------------------------------------------------------ paths


def test_relative_inputs_resolve_against_the_files_folder_and_storage_defaults_beside_it(tmp_path):
    (tmp_path / "models" / "base").mkdir(parents=True)
    run, paths = build_local_run(make_run(), tmp_path / "run.yaml", None)
    assert run.spec.model.uri == str(tmp_path / "models" / "base")
    assert run.spec.seed_pairs.uri == str(tmp_path / "data" / "seed.jsonl")
    assert run.spec.prompts.uri == "s3://bucket/prompts.txt"
    assert paths.storage_uri == str(tmp_path / ".sail" / "demo") == run.spec.storage.uri
    assert paths.state_file == tmp_path / ".sail" / "demo" / "local" / "state.json"


def test_storage_from_the_file_is_relative_to_the_file_and_from_the_command_line_to_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, from_file = build_local_run(make_run(storage={"uri": "out/runs"}), tmp_path / "sub" / "run.yaml", None)
    assert from_file.storage_uri == str(tmp_path / "sub" / "out" / "runs")
    _, from_cli = build_local_run(make_run(storage={"uri": "out/runs"}), tmp_path / "sub" / "run.yaml", "cli-root")
    assert from_cli.storage_uri == str(tmp_path / "cli-root")


def test_s3_storage_keeps_the_executor_files_beside_the_run_file(tmp_path):
    _, paths = build_local_run(make_run(), tmp_path / "run.yaml", "s3://bucket/runs/demo/")
    assert paths.storage_uri == "s3://bucket/runs/demo"
    assert paths.local_dir == tmp_path / ".sail" / "demo" / "s3" / "bucket" / "runs" / "demo" / "local"
    assert paths.local_root is None


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        pytest.param("s3://b/m", "s3://b/m", id="s3 uris are kept"),
        pytest.param("file:///data/m", "/data/m", id="file uris become paths"),
        pytest.param("/abs/m", "/abs/m", id="absolute paths are kept"),
        pytest.param("org/model", "org/model", id="a hub id that is no folder here stays a hub id"),
        pytest.param("./org/model", "BASE/org/model", id="dot paths always resolve"),
    ],
)
def test_resolve_uri(uri, expected, tmp_path):
    assert resolve_uri(uri, tmp_path) == expected.replace("BASE", str(tmp_path))


def test_find_state_file_accepts_the_root_the_local_folder_or_the_state_file(tmp_path):
    state_file = tmp_path / "local" / "state.json"
    save_state(state_file, LocalState(name="demo", storage_uri=str(tmp_path)))
    for target in (tmp_path, tmp_path / "local", state_file):
        assert find_state_file(target) == state_file
    assert find_state_file(tmp_path / "elsewhere") is None


# ------------------------------------------------------------------ progress


def test_progress_lines_are_found_inside_log_lines():
    line = "2026-11-25 INFO [run=x phase=generate] sail_trainer.progress: progress phase=generate done=12 total=64 rate=3.1/s"
    assert parse_progress_line(line) == ProgressLine("generate", 12, 64, 3.1)
    assert parse_progress_line("progress phase=train done=1 total=2") == ProgressLine("train", 1, 2, None)
    assert parse_progress_line("loss=0.3 step=4") is None


def test_shard_progress_adds_up():
    combined = combine_shards([ProgressLine("generate", 3, 8, 1.0), ProgressLine("generate", 8, 8, 2.0)])
    assert combined == ProgressLine("generate", 11, 16, 3.0)
    assert combine_shards([]) is None


def test_the_total_of_sharded_progress_does_not_grow_as_shards_start():
    """Issue 19 item 9: with fewer workers than shards, annotate's total grew as shards reported."""
    first = combine_shards([ProgressLine("annotate", 2, 8)], shards=3)
    both = combine_shards([ProgressLine("annotate", 8, 8), ProgressLine("annotate", 1, 8)], shards=3)
    assert (first.total, both.total) == (24, 24)
    assert combine_shards([ProgressLine("mixup", 32, 0)], shards=None).total == 0


def test_a_phase_without_a_known_total_shows_a_count_not_32_of_0():
    """Issue 19 item 9: mixup's progress read `32/0 (0%)`."""
    out = io.StringIO()
    ProgressDisplay(out, use_bars=False).phase(("job", 1), ProgressLine("mixup", 32, 0, 4.0))
    assert out.getvalue().splitlines() == ["  mixup: 32 done 4.00/s"]
    bars = io.StringIO()
    display = ProgressDisplay(bars, use_bars=True)
    display.phase(("job", 1), ProgressLine("mixup", 32, 0, None))
    display.close()
    assert "32 done" in bars.getvalue() and "32/0" not in bars.getvalue()


def test_plain_progress_output_is_throttled_and_names_the_phase():
    out = io.StringIO()
    display = ProgressDisplay(out, use_bars=False, every_seconds=3600)
    display.overall(1, 6, "iteration 0/1 train")
    display.overall(1, 6, "iteration 0/1 train")  # unchanged: not repeated
    for done in range(1, 4):
        display.phase(("job", 1), ProgressLine("train", done, 10, 2.0))
    display.phase(("job", 1), ProgressLine("train", 10, 10, 2.0))
    lines = out.getvalue().splitlines()
    assert lines == ["run [iteration 0/1 train]: 1/6 (16%)", "  train: 1/10 (10%) 2.00/s ETA 0:04",
                     "  train: 10/10 (100%) 2.00/s ETA 0:00"]


# ------------------------------------------------------------------ state


def _attempt(name: str, state: AttemptState, iteration=0, phase="mixup") -> AttemptObservation:
    return AttemptObservation(name=name, iteration=iteration, phase=phase, attempt=1, state=state)


def test_resumed_state_forgets_attempts_that_were_running_and_keeps_finished_ones():
    run = make_run()
    state = LocalState(name="demo", storage_uri="/r", attempts={
        "a": _attempt("a", AttemptState.RUNNING), "b": _attempt("b", AttemptState.SUCCEEDED),
        "c": _attempt("c", AttemptState.FAILED), "d": _attempt("d", AttemptState.PENDING)})
    resumed = build_resumed_state(state, run.spec)
    assert sorted(resumed.attempts) == ["b", "c"]
    assert resumed.generation == 1
    edited = make_run(suspend=True)
    assert build_resumed_state(resumed, edited.spec).generation == 2
    assert build_resumed_state(resumed, run.spec).generation == 1


def test_retry_of_a_failed_run_resets_budgets_and_the_failed_phase_but_not_an_invalid_spec():
    status = SAILRunStatus(state=RunState.FAILED, current_iteration=1, current_phase="generate",
                           current=CurrentAttempt(job_name="j", iteration=1, phase="generate", attempt=3),
                           conditions=[Condition(type="Failed", status="True", reason="AppRetryBudgetExhausted",
                                                 message="", last_transition_time="2026-01-01T00:00:00Z")])
    status.restarts.app = 2
    state = LocalState(name="demo", storage_uri="/r", status=status, attempts={
        "g": _attempt("g", AttemptState.FAILED, 1, "generate"), "m": _attempt("m", AttemptState.SUCCEEDED)})
    retried = build_retry_of_failed(state)
    assert retried.status.state == RunState.RUNNING and retried.status.restarts.app == 0
    assert retried.status.current is None and sorted(retried.attempts) == ["m"]
    assert retried.status.conditions[0].status == "False"
    invalid = state.model_copy(deep=True)
    invalid.status.conditions = [Condition(type="Failed", status="True", reason="InvalidSpec", message="",
                                           last_transition_time="2026-01-01T00:00:00Z")]
    assert build_retry_of_failed(invalid) is invalid


def test_a_corrupt_state_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=str(path)):
        load_state(path)


# ------------------------------------------------------------------ table, report pieces


def test_status_rows_show_every_planned_phase_with_results_metrics_and_checkpoint():
    status = SAILRunStatus(state=RunState.RUNNING, current_iteration=1, current_phase="generate", iterations=[
        IterationRecord(iteration=0, phases=[
            PhaseRecord(phase="mixup", result="Succeeded", duration_seconds=3.0),
            PhaseRecord(phase="train", result="Succeeded", duration_seconds=75.0,
                        metrics={"loss": 0.69, "implicit_accuracy": 0.5, "reward_margin": 0.01}),
        ]),
        IterationRecord(iteration=1, phases=[PhaseRecord(phase="generate", result="Running", attempts=2)]),
    ])
    state = LocalState(name="demo", storage_uri="/runs/demo", status=status, spec={"sail": {"rounds": 1}})
    rows = build_status_rows(state)
    assert [(r.iteration, r.phase, r.result) for r in rows] == [
        (0, "mixup", "Succeeded"), (0, "train", "Succeeded"), (1, "generate", "Running"),
        (1, "annotate", "-"), (1, "mixup", "-"), (1, "train", "-")]
    assert rows[1].numbers == "loss 0.69 acc 0.5 margin 0.01 (- steps, last step)"
    assert rows[1].checkpoint == "/runs/demo/iter-000/train/model"
    assert build_status_rows(state, {0: "/runs/demo/iter-000/train/attempt-ab12/model"})[1].checkpoint == \
        "/runs/demo/iter-000/train/attempt-ab12/model"
    assert rows[1].duration == "1m15s" and rows[2].attempts == "2"
    text = render_status_text(state)
    assert "numbers" in text and "Running" in text


def test_each_phase_shows_its_own_numbers_train_means_and_shard_totals():
    """Issue 19 item 9: the table showed the last step's metrics, and `-` for generate/annotate/mixup."""
    train = {"loss": 1.99, "implicit_accuracy": 0.75, "reward_margin": 0.02, "mean_loss": 1.34,
             "mean_implicit_accuracy": 0.375, "mean_reward_margin": -0.25, "steps": 2.0}
    assert format_phase_numbers("train", train) == "loss 1.34 acc 0.375 margin -0.25 (2 steps)"
    assert format_phase_numbers("generate", {"prompts": 2.0, "images": 4.0}, shards=2) == "8 images of 4 prompts"
    assert format_phase_numbers("annotate", {"prompts": 2.0, "mean_margin": 3.3}, shards=2) == \
        "4 pairs, mean margin 3.3"
    mixup = {"mixture_size": 8.0, "self_pairs": 4.0, "self_drawn": 4.0, "seed_drawn": 4.0}
    assert format_phase_numbers("mixup", mixup) == "8 pairs: 4 self (of 4 kept), 4 seed"
    assert format_phase_numbers("mixup", {"mixture_size": 8.0, "seed_pairs": 8.0, "self_pairs": 0.0}) == \
        "8 seed pairs"
    assert format_phase_numbers("generate", {}) == "-"


@pytest.mark.parametrize(("seconds", "text"), [(None, "-"), (4.25, "4.2s"), (75, "1m15s"), (7322, "2h02m")])
def test_durations_read_naturally(seconds, text):
    assert format_duration(seconds) == text


def test_metric_history_accepts_step_lists_or_one_dict():
    assert parse_metric_history([{"step": 0, "loss": 1, "note": "x"}]) == [{"step": 0.0, "loss": 1.0}]
    assert parse_metric_history({"loss": 0.5}) == [{"loss": 0.5}]
    assert parse_metric_history("junk") == []


def test_ticks_cover_the_range_with_round_steps():
    ticks = compute_ticks(0.03, 0.97)
    assert ticks[0] <= 0.03 and ticks[-1] >= 0.97 and len(ticks) <= 8
    for low, high in [(0.0, 1.05), (-0.59, 0.02), (0.6931, 1.9945), (3.0, 123.4), (-7.5, -7.49)]:
        ticks = compute_ticks(low, high)  # issue 19 item 9: the y range did not cover the data
        assert ticks[0] <= low and ticks[-1] >= high and len(ticks) <= 8, (low, high, ticks)
    assert compute_ticks(-0.2, 0.0)[-1] == 0.0
    assert compute_ticks(1.0, 1.0)  # a flat series still gets an axis


def test_plots_are_png_and_differ_with_the_data():
    first = render_line_plot("loss", [Series("iter 0", (1.0, 0.8, 0.7)), Series("iter 1", (0.7, 0.6))])
    second = render_line_plot("loss", [Series("iter 0", (1.0, 0.9, 0.95))])
    assert first.startswith(b"\x89PNG") and first != second
    assert render_line_plot("empty", []).startswith(b"\x89PNG")

