"""Bad inputs fail with the documented exit code and a message naming the file and field.

Each case runs the real CLI entry point (`sail_trainer.cli.main`, in process for speed) and
checks the exit code, the summary printed as the last stdout line and the error text.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sail_api.phases import ExitCode
from sail_trainer.cli import main
from tests.builders.tiny_pipeline import build_tiny_run_spec
from tests.builders.tiny_run import TinyRun, create_tiny_run, phase_args


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.builders.tiny_pipeline import build_tiny_sd15

    return build_tiny_sd15(tmp_path_factory.mktemp("model") / "sd15")


def _run(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
         tmp_path: Path) -> tuple[int, dict]:
    monkeypatch.setenv("SAIL_TERMINATION_LOG", str(tmp_path / "termination-log"))
    code = main(args)
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["exitCode"] == code
    assert json.loads((tmp_path / "termination-log").read_text()) == summary
    return code, summary


def _respec(run: TinyRun, **changes: str) -> None:
    spec = json.loads(run.spec.read_text())
    spec["algorithm"] = {**spec["algorithm"], **{k: {**spec["algorithm"][k], "uri": v} for k, v in changes.items()}}
    run.spec.write_text(json.dumps(spec))


def test_missing_model_folder_is_bad_spec_naming_model_uri(tmp_path, tiny_model, capsys, monkeypatch) -> None:
    run = create_tiny_run(tmp_path, model=tiny_model)
    _respec(run, model=str(tmp_path / "no-such-model"))
    code, summary = _run(phase_args(run, "mixup", 0), capsys, monkeypatch, tmp_path)
    assert code == ExitCode.BAD_SPEC
    assert "model.uri" in summary["error"] and "no-such-model" in summary["error"]
    assert summary["outcome"] == "failed"


def test_corrupt_seed_image_is_bad_data_naming_the_file(tmp_path, tiny_model, capsys, monkeypatch) -> None:
    run = create_tiny_run(tmp_path, model=tiny_model)
    (run.seed_pairs.parent / "images" / "0003-l.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    code, summary = _run(phase_args(run, "mixup", 0), capsys, monkeypatch, tmp_path)
    assert code == ExitCode.BAD_DATA
    assert "pairs.jsonl" in summary["error"] and "loser" in summary["error"]


def test_empty_prompt_file_is_bad_data_naming_the_file(tmp_path, tiny_model, capsys, monkeypatch) -> None:
    run = create_tiny_run(tmp_path, model=tiny_model)
    run.prompts.write_text("")
    code, summary = _run(phase_args(run, "generate", 1, "--shard", "0/1"), capsys, monkeypatch, tmp_path)
    assert code == ExitCode.BAD_DATA
    assert "prompts.txt" in summary["error"]


def test_too_small_prompt_pool_is_bad_data_naming_prompts_uri(tmp_path, tiny_model, capsys, monkeypatch) -> None:
    run = create_tiny_run(tmp_path, model=tiny_model, num_prompts=3)
    code, summary = _run(phase_args(run, "generate", 1, "--shard", "0/1"), capsys, monkeypatch, tmp_path)
    assert code == ExitCode.BAD_DATA
    assert "prompts.uri" in summary["error"] and "promptsPerRound" in summary["error"]


def test_wrong_parquet_schema_is_bad_data_naming_the_column(tmp_path, tiny_model, capsys, monkeypatch) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    run = create_tiny_run(tmp_path, model=tiny_model)
    bad = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"caption": ["a cat"], "image": [b"x"]}), bad)
    _respec(run, seedPairs=str(bad))
    code, summary = _run(phase_args(run, "mixup", 0), capsys, monkeypatch, tmp_path)
    assert code == ExitCode.BAD_DATA
    assert "pairs.parquet" in summary["error"] and "prompt" in summary["error"]


def test_spec_digest_mismatch_is_bad_spec(tmp_path, tiny_model, capsys, monkeypatch) -> None:
    run = create_tiny_run(tmp_path, model=tiny_model)
    code, _ = _run(phase_args(run, "mixup", 0), capsys, monkeypatch, tmp_path)
    assert code == ExitCode.OK
    run.spec.write_text(build_tiny_run_spec(run.run_uri, str(run.model), str(run.seed_pairs), str(run.prompts),
                                            beta=2000.0))
    code, summary = _run(phase_args(run, "train", 0), capsys, monkeypatch, tmp_path)
    assert code == ExitCode.BAD_SPEC
    assert "digest" in summary["error"] and "run.json" in summary["error"]


def test_unreadable_spec_and_bad_shard_flags_are_bad_spec(tmp_path, capsys, monkeypatch) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"name": "x", "algorithm": {"model": {"uri": "m"}}, "storage": {"uri": "r"}}))
    code, summary = _run(["mixup", "--run", str(tmp_path), "--iteration", "0", "--spec", str(spec)],
                         capsys, monkeypatch, tmp_path)
    assert code == ExitCode.BAD_SPEC and "spec.json" in summary["error"] and "seedPairs" in summary["error"]
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    code, summary = _run(["generate", "--run", str(tmp_path), "--iteration", "1", "--spec", str(spec),
                          "--shards", "2"], capsys, monkeypatch, tmp_path)
    assert code == ExitCode.BAD_SPEC and "JOB_COMPLETION_INDEX" in summary["error"]


def test_generate_at_iteration_zero_is_bad_spec(tmp_path, capsys, monkeypatch) -> None:
    code, summary = _run(["generate", "--run", str(tmp_path), "--iteration", "0", "--spec", "unused.json"],
                         capsys, monkeypatch, tmp_path)
    assert code == ExitCode.BAD_SPEC and "iteration" in summary["error"]
