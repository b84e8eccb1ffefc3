"""Pure pieces behind `sail validate` / `sail run`'s checks before compute (issue 19 items 3-5).

Input counting follows the trainer's reader; the algorithm differences name the fields; the
retry policy of the storage probe is bounded in time; storage errors no retry can fix exit
as bad spec. (The `sail` command itself is exercised in tests/e2e/test_sail_preflight.py.)
"""

from __future__ import annotations

import pytest

from sail_api.inputs import InputProblem, check_prompt_pool, count_prompts
from sail_api.phases import ExitCode
from sail_api.resolved import compute_algorithm_differences
from sail_api.storage import BucketNotFound, StoragePermissionDenied
from sail_api.storage.retry import PROBE_POLICY, RetryPolicy, run_with_retries
from tests.builders.sailrun_spec import build_sailrun


def make_spec(**sail):
    return build_sailrun("x", model="m", seed_pairs="s.jsonl", prompts="p.txt", storage=None, sail=sail).spec


def test_prompts_are_counted_as_the_trainer_reads_them(tmp_path):
    (tmp_path / "a.txt").write_text("\ufeffone\n\n  two  \n   \nthree\n")
    (tmp_path / "b.jsonl").write_text('{"prompt": "four"}\n\n{"prompt": null}\n{"prompt": " "}\n{"prompt": "five"}\n')
    assert count_prompts(str(tmp_path / "a.txt")) == 3
    assert count_prompts(str(tmp_path / "b.jsonl")) == 2
    assert count_prompts(str(tmp_path)) == 5  # a folder: its files with a known extension


def test_a_jsonl_prompt_without_the_column_names_file_line_and_field(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"prompt": "a"}\n{"caption": "b"}\n')
    with pytest.raises(InputProblem, match=r"p\.jsonl, line 2: missing key 'prompt', found \['caption'\].*prompts\.column"):
        count_prompts(str(tmp_path / "p.jsonl"))


def test_the_pool_check_gives_both_ways_out():
    assert check_prompt_pool(make_spec(rounds=3, promptsPerRound=10), 30, "p.txt") is None
    problem = check_prompt_pool(make_spec(rounds=3, promptsPerRound=10), 25, "p.txt")
    assert problem.startswith("spec.sail.promptsPerRound: 3 rounds x 10 prompts = 30")
    assert "add 5 prompt(s) to p.txt" in problem
    assert "promptsPerRound to 8" in problem and "sail.rounds to 2" in problem


def test_algorithm_differences_name_the_fields_and_leave_rounds_out():
    base = make_spec(promptsPerRound=16).algorithm()
    assert compute_algorithm_differences(base, make_spec(promptsPerRound=16, rounds=9).algorithm()) == []
    changed = compute_algorithm_differences(base, make_spec(promptsPerRound=8, beta=10).algorithm())
    assert changed == ["spec.sail.beta: 5000.0 -> 10.0", "spec.sail.promptsPerRound: 16 -> 8"]


def test_a_retry_policy_with_a_time_bound_starts_no_retry_past_it():
    now = [0.0]
    calls = []

    def down():
        calls.append(now[0])
        now[0] += 3.0  # each try takes 3 s (a connect timeout)
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError):
        run_with_retries(down, policy=RetryPolicy(attempts=10, base_delay=1.0, max_delay=1.0, total_seconds=5.0),
                         is_transient=lambda e: True, label="probe", sleep=lambda s: now.__setitem__(0, now[0] + s),
                         unit_random=lambda: 1.0, clock=lambda: now[0])
    assert calls == [0.0, 4.0]  # the third try would start past 5 s
    assert PROBE_POLICY.total_seconds is not None and PROBE_POLICY.attempts <= 3


@pytest.mark.parametrize("exc", [BucketNotFound("bucket b does not exist"), StoragePermissionDenied("no credentials")])
def test_storage_errors_no_retry_can_fix_exit_as_bad_spec(exc):
    from sail_trainer.errors import classify_exit_code

    assert classify_exit_code(exc) == ExitCode.BAD_SPEC


def test_a_missing_input_file_names_its_path_once(tmp_path):
    """Issue 19 item 9: `X: X does not exist` repeated the path."""
    from sail_trainer.data.errors import DataError
    from sail_trainer.data.prompts import read_prompts

    missing = tmp_path / "nope.txt"
    with pytest.raises(DataError) as info:
        read_prompts(str(missing))
    assert str(info.value).count(str(missing)) == 1 and "does not exist" in str(info.value)


def test_the_trainers_digest_refusal_names_the_changed_field_and_the_allowed_edits():
    """Issue 19 item 3: the refusal said only that the digest differed."""
    from sail_api.resolved import build_resolved_run
    from sail_api.storage import MemoryStore
    from sail_trainer.errors import BadSpecError
    from sail_trainer.phases.runner import ensure_run_file

    def resolved(**sail):
        run = build_sailrun("x", model="m", seed_pairs="s.jsonl", prompts="p.txt", storage=None, sail=sail)
        return build_resolved_run(run, "mem://run")

    store = MemoryStore()
    ensure_run_file(store, "run.json", resolved(promptsPerRound=16), may_write=True)
    ensure_run_file(store, "run.json", resolved(promptsPerRound=16, rounds=7), may_write=False)  # rounds may grow
    with pytest.raises(BadSpecError, match=r"spec\.sail\.promptsPerRound: 16 -> 8.*allowed edits: sail\.rounds"):
        ensure_run_file(store, "run.json", resolved(promptsPerRound=8), may_write=False)
