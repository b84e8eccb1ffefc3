"""The CLI's pure parts: shard flags, the summary size limit, exit-code classification."""

from __future__ import annotations

from pathlib import Path

import pytest

from sail_api.phases import ExitCode, Phase, PhaseSummary, build_phase_args
from sail_api.storage import StorageUnavailable
from sail_trainer.cli import UsageError, build_parser, fit_summary, parse_shard, write_termination_log
from sail_trainer.data.errors import DataError
from sail_trainer.errors import BadSpecError, classify_exit_code


def test_parser_accepts_the_executors_command_line() -> None:
    args = build_parser().parse_args(build_phase_args(Phase.GENERATE, "s3://b/r", 2, "/etc/sail/spec.json", shards=4))
    assert (args.command, args.run, args.iteration, args.spec, args.shards) == ("generate", "s3://b/r", 2,
                                                                               "/etc/sail/spec.json", 4)


@pytest.mark.parametrize("phase,shards,shard,env,expected", [
    (Phase.GENERATE, 4, None, {"JOB_COMPLETION_INDEX": "3"}, (3, 4)),
    (Phase.ANNOTATE, None, "1/2", {}, (1, 2)),
    (Phase.GENERATE, None, None, {}, (0, 1)),
    (Phase.TRAIN, None, None, {}, (None, None)),
])
def test_shard_comes_from_the_flag_or_the_completion_index(phase, shards, shard, env, expected) -> None:
    assert parse_shard(phase, shards, shard, env) == expected


@pytest.mark.parametrize("phase,shards,shard,env,needle", [
    (Phase.GENERATE, 2, None, {}, "JOB_COMPLETION_INDEX"),
    (Phase.GENERATE, 2, None, {"JOB_COMPLETION_INDEX": "2"}, "0 <= K < S"),
    (Phase.ANNOTATE, None, "one/two", {}, "K/S"),
    (Phase.TRAIN, None, "0/2", {}, "not sharded"),
])
def test_bad_shard_flags_name_the_flag(phase, shards, shard, env, needle) -> None:
    with pytest.raises(UsageError, match=needle):
        parse_shard(phase, shards, shard, env)


def test_summary_fits_the_termination_message_limit() -> None:
    big = PhaseSummary(phase=Phase.TRAIN, iteration=1, outcome="failed", exit_code=1, error="x" * 5000,
                       metrics={f"m{i}": float(i) for i in range(300)}, extra={"k": "v" * 3000})
    assert len(fit_summary(big).encode()) < 4096
    small = PhaseSummary(phase=Phase.MIXUP, iteration=0, outcome="committed", metrics={"loss": 0.5})
    assert '"loss":0.5' in fit_summary(small)


def test_termination_log_is_skipped_when_not_writable(tmp_path: Path) -> None:
    write_termination_log("{}", {"SAIL_TERMINATION_LOG": str(tmp_path / "missing-dir" / "log")})
    target = tmp_path / "log"
    write_termination_log('{"a":1}', {"SAIL_TERMINATION_LOG": str(target)})
    assert target.read_text() == '{"a":1}'


@pytest.mark.parametrize("exc,code", [
    (BadSpecError("x"), ExitCode.BAD_SPEC),
    (DataError("bad", source="f.jsonl"), ExitCode.BAD_DATA),
    (StorageUnavailable("down"), ExitCode.TRANSIENT),
    (RuntimeError("boom"), ExitCode.FAILURE),
])
def test_exceptions_map_to_documented_exit_codes(exc: Exception, code: ExitCode) -> None:
    assert classify_exit_code(exc) == code


@pytest.mark.parametrize("env,expected", [
    ({}, 1),
    ({"PET_NNODES": "1", "PET_NPROC_PER_NODE": "1"}, 1),
    ({"PET_NNODES": "2", "PET_NPROC_PER_NODE": "4"}, 8),
    ({"PET_NNODES": "1:2", "PET_NPROC_PER_NODE": "2"}, 4),
    ({"PET_NNODES": "2", "PET_NPROC_PER_NODE": "4", "RANK": "3"}, 1),  # already a torchrun worker
])
def test_pet_environment_decides_whether_train_launches_workers(env: dict[str, str], expected: int) -> None:
    from sail_trainer.launch import requested_world_size

    assert requested_world_size(env) == expected


def test_workers_write_per_rank_termination_logs() -> None:
    from sail_trainer.launch import resolve_termination_log

    assert resolve_termination_log("/tmp/s-{rank}.json", {"RANK": "1"}) == "/tmp/s-1.json"
    assert resolve_termination_log("/dev/termination-log", {"RANK": "1"}) == "/dev/termination-log"


def test_toy_subcommand_is_delegated_with_its_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    from sail_trainer.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["toy", "--help"])
    assert exit_info.value.code == 0
    assert "toy" in capsys.readouterr().out


def test_run_flag_naming_another_root_than_the_spec_is_bad_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The spec's storage.uri is the run root; `--run` only cross-checks it. A mismatch used to be a
    warning (and --run won), so a phase could write to a root its run.json does not describe."""
    from sail_trainer.cli import main
    from tests.builders.tiny_pipeline import build_tiny_run_spec

    monkeypatch.setenv("SAIL_TERMINATION_LOG", str(tmp_path / "termination"))
    spec = tmp_path / "spec.json"
    spec.write_text(build_tiny_run_spec(str(tmp_path / "run-a"), "m", "p.jsonl", "q.jsonl"))
    code = main(["mixup", "--run", str(tmp_path / "run-b"), "--iteration", "0", "--spec", str(spec)])
    assert code == ExitCode.BAD_SPEC
    assert "differs from storage.uri" in capsys.readouterr().out
    assert not (tmp_path / "run-a").exists() and not (tmp_path / "run-b").exists()


def test_run_flag_written_another_way_for_the_same_root_is_accepted() -> None:
    from sail_api.resolved import ResolvedRun
    from sail_trainer.phases.runner import PhaseRequest, check_run_root
    from tests.builders.tiny_pipeline import build_tiny_run_spec

    resolved = ResolvedRun.model_validate_json(build_tiny_run_spec("/tmp/runs/a", "m", "p.jsonl", "q.jsonl"))
    check_run_root(PhaseRequest(Phase.MIXUP, "file:///tmp/runs/a/", 0, "spec.json"), resolved)
    with pytest.raises(BadSpecError, match="--run s3://b/a differs"):
        check_run_root(PhaseRequest(Phase.MIXUP, "s3://b/a", 0, "spec.json"), resolved)
