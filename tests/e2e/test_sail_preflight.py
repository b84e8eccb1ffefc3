"""`sail run` finds what it can before compute is spent (issue 19 items 1, 3-6), through `sail`'s main.

Each case is refused before any phase process starts (no state file, no `run.json` written),
with a message that names the field or file and the remedy. S3 is the moto server over HTTP;
an unreachable endpoint is a closed local port (refused at once, no network needed).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import yaml

from sail_api.resolved import build_resolved_run
from sail_api.spec import SAILRun
from sail_api.status import IterationRecord, PhaseRecord, SAILRunStatus
from sail_operator.cli import EXIT_BAD_INPUT, EXIT_FAILED, main
from sail_operator.local.paths import build_local_run
from sail_operator.local.state import LocalState, save_state

ROOT = Path(__file__).resolve().parents[2]
TOY = ROOT / "examples" / "toy"


def write_run(folder: Path, *, name: str = "pre", storage: dict | None = None, **sail) -> Path:
    spec = {"model": {"uri": str(TOY / "model"), "precision": "fp32"},
            "seedPairs": {"uri": str(TOY / "seed-pairs" / "pairs.jsonl")},
            "prompts": {"uri": str(TOY / "prompts.txt")},
            "sail": {"rounds": 2, "promptsPerRound": 16, **sail}}
    if storage:
        spec["storage"] = storage
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "sail.dev/v1alpha1", "kind": "SAILRun",
                                    "metadata": {"name": name}, "spec": spec}))
    return path


def nothing_started(folder: Path) -> bool:
    return not list(folder.rglob("state.json")) and not list(folder.rglob("run.json"))


def test_a_prompt_pool_too_small_for_every_round_is_refused_by_validate_and_run(tmp_path, capsys):
    """Item 3: found only when round 4 ran out of prompts, after step 0 and three rounds trained."""
    path = write_run(tmp_path, rounds=4)
    assert main(["validate", str(path)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "4 rounds x 16 prompts = 64 fresh prompts are needed" in err and "holds 54" in err
    assert "lower spec.sail.promptsPerRound to 13" in err and "lower spec.sail.rounds to 3" in err
    assert main(["run", str(path)]) == EXIT_BAD_INPUT
    assert "64 fresh prompts" in capsys.readouterr().err
    assert nothing_started(tmp_path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(None, "does not exist", id="missing"),
        pytest.param("", "is empty", id="empty"),
        pytest.param("\n  \n", "holds no non-blank prompt", id="blank lines only"),
    ],
)
def test_validate_reads_the_local_prompts_file(tmp_path, capsys, content, expected):
    """Item 4: a missing or empty prompts file passed `sail validate` and failed at step 0."""
    path = write_run(tmp_path)
    prompts = tmp_path / "prompts.txt"
    if content is not None:
        prompts.write_text(content)
    body = yaml.safe_load(path.read_text())
    body["spec"]["prompts"]["uri"] = "prompts.txt"
    path.write_text(yaml.safe_dump(body))
    assert main(["validate", str(path)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "spec.prompts.uri" in err and expected in err and str(prompts) in err


def test_validate_reads_the_header_of_a_local_seed_pairs_file(tmp_path, capsys):
    path = write_run(tmp_path)
    (tmp_path / "pairs.jsonl").write_text('{"caption": "a", "jpg_0": "x.png"}\n')
    body = yaml.safe_load(path.read_text())
    body["spec"]["seedPairs"]["uri"] = "pairs.jsonl"
    path.write_text(yaml.safe_dump(body))
    assert main(["validate", str(path)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "spec.seedPairs.uri" in err and "line 1: missing prompt, winner, loser" in err


def test_an_edited_algorithm_field_is_refused_before_compute_naming_it_and_the_allowed_edits(tmp_path, capsys):
    """Item 3: the digest refusal did not name the field that changed (and came from a phase)."""
    path = write_run(tmp_path, promptsPerRound=16)
    run, paths = build_local_run(SAILRun.model_validate(yaml.safe_load(path.read_text())), path, None)
    Path(paths.storage_uri).mkdir(parents=True)
    (Path(paths.storage_uri) / "run.json").write_text(build_resolved_run(run, paths.storage_uri).to_json())
    write_run(tmp_path, promptsPerRound=8)
    assert main(["run", str(path)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "spec.sail.promptsPerRound: 16 -> 8" in err
    assert "Allowed edits: sail.rounds" in err
    assert not paths.state_file.exists()


def test_a_run_root_of_another_run_is_refused(tmp_path, capsys):
    path = write_run(tmp_path, name="pre")
    other = build_resolved_run(SAILRun.model_validate(yaml.safe_load(write_run(tmp_path, name="other").read_text())),
                               str(tmp_path / "root"))
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "run.json").write_text(other.to_json())
    write_run(tmp_path, name="pre")
    assert main(["run", str(path), "--storage", str(tmp_path / "root")]) == EXIT_BAD_INPUT
    assert "holds run 'other', not 'pre'" in capsys.readouterr().err


def test_an_uncreatable_storage_folder_says_so_without_a_resume_hint(tmp_path, capsys):
    """Item 6: the hint was "the state is in ..., run `sail run` again to resume"."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    path = write_run(tmp_path)
    assert main(["run", str(path), "--storage", str(blocker / "runs")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"cannot create the run root folder {blocker / 'runs'}" in err and "--storage" in err
    assert "resume" not in err


def test_a_missing_bucket_is_a_permanent_error_not_retried(tmp_path, moto_s3, s3_bucket, capsys):
    """Item 5: BucketNotFound was retried on the run's budgets."""
    path = write_run(tmp_path, storage={"uri": f"s3://{s3_bucket}-missing/runs/pre", "endpoint": moto_s3.endpoint})
    assert main(["run", str(path)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"bucket {s3_bucket}-missing does not exist" in err and "not retried" in err
    assert nothing_started(tmp_path)


def test_missing_credentials_are_a_permanent_error_naming_the_variables(tmp_path, moto_s3, s3_bucket, monkeypatch,
                                                                         capsys):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    path = write_run(tmp_path, storage={"uri": f"s3://{s3_bucket}/runs/pre", "endpoint": moto_s3.endpoint})
    assert main(["run", str(path)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "AWS_ACCESS_KEY_ID" in err and "not retried" in err


def test_an_unreachable_endpoint_fails_at_once_with_the_endpoint_named(tmp_path, aws_env, capsys):
    """Item 5: an unreachable endpoint was retried for about an hour before the run failed."""
    with socket.socket() as probe:  # a port nothing listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    path = write_run(tmp_path, storage={"uri": "s3://bucket/runs/pre", "endpoint": endpoint})
    assert main(["run", str(path)]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "is not reachable" in err and endpoint in err and "nothing was started" in err
    assert nothing_started(tmp_path)


def test_a_state_of_committed_phases_over_an_empty_s3_root_is_refused(tmp_path, moto_s3, s3_bucket, capsys):
    """Item 1: local state and storage disagree (the root was emptied, or is another one)."""
    root = f"s3://{s3_bucket}/runs/pre"
    path = write_run(tmp_path, storage={"uri": root, "endpoint": moto_s3.endpoint})
    _, paths = build_local_run(SAILRun.model_validate(yaml.safe_load(path.read_text())), path, None)
    done = SAILRunStatus(iterations=[IterationRecord(iteration=0, phases=[PhaseRecord(phase="mixup",
                                                                                      result="Succeeded")])])
    save_state(paths.state_file, LocalState(name="pre", storage_uri=root, status=done))
    assert main(["run", str(path)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "records 1 committed phase(s)" in err and "holds no run.json" in err
    assert json.loads(paths.state_file.read_text())["name"] == "pre"  # left as it was


def test_judge_reference_step0_is_warned_about_before_the_run(tmp_path, capsys):
    """Item 7: round 1's rewards were all exactly 0 (pairs arbitrary) with no warning."""
    path = write_run(tmp_path, judgeReference="step0")
    assert main(["validate", str(path)]) == 0
    captured = capsys.readouterr()
    assert "warning: spec.sail.judgeReference: step0" in captured.err and "exactly 0" in captured.err
    assert "valid SAILRun" in captured.out
    write_run(tmp_path, judgeReference="base")
    assert main(["validate", str(path)]) == 0
    assert "warning" not in capsys.readouterr().err
