"""`sail` as a user types it: the console entry, delegation to the operator and the toy world, errors."""

from __future__ import annotations

import subprocess
import sys

from sail_operator.cli import EXIT_BAD_INPUT, main


def sail(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sail_operator", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_command():
    done = sail("--help")
    assert done.returncode == 0
    for command in ("run", "status", "report", "validate", "crd", "operator", "toy"):
        assert command in done.stdout


def test_operator_arguments_go_to_the_kube_entry_point():
    done = sail("operator", "--help")
    assert done.returncode == 0
    assert "--namespace" in done.stdout


def test_toy_arguments_go_to_the_trainer_toy_world():
    done = sail("toy", "--help")
    assert done.returncode == 0
    assert "sail-trainer toy" in done.stdout


def test_status_of_a_folder_without_a_run_says_what_it_expected(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == EXIT_BAD_INPUT
    assert "local/state.json" in capsys.readouterr().err


def test_run_rejects_zero_workers(tmp_path, capsys):
    assert main(["run", str(tmp_path / "x.yaml"), "--workers", "0"]) == EXIT_BAD_INPUT
    assert "--workers" in capsys.readouterr().err


def test_run_of_an_invalid_file_starts_nothing(tmp_path, capsys):
    bad = tmp_path / "run.yaml"
    bad.write_text("apiVersion: sail.dev/v1alpha1\nkind: SAILRun\nmetadata: {name: x}\nspec: {}\n")
    assert main(["run", str(bad)]) == EXIT_BAD_INPUT
    assert "spec.model: required field is missing" in capsys.readouterr().err
    assert not (tmp_path / ".sail").exists()


def test_every_subcommand_and_argument_says_what_it_is():
    """Issue 19 item 9: `--help` gaps (a bare `file`, no description, no exit codes)."""
    import argparse

    from sail_operator.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        if name in ("operator", "toy"):
            continue  # their arguments go to another program with its own --help
        assert parser.description, f"sail {name} --help has no description"
        for action in parser._actions:
            assert action.help, f"sail {name}: {action.dest} has no help"
    run_help = sail("run", "--help").stdout
    assert "exit codes" in run_help and "--storage PATH|s3://BUCKET/PREFIX" in run_help


def test_validate_counts_one_round_in_the_singular(tmp_path, capsys):
    from tests.e2e.test_sail_preflight import write_run

    assert main(["validate", str(write_run(tmp_path, rounds=1))]) == 0
    assert "(step 0 + 1 round)" in capsys.readouterr().out


def test_toy_eval_refuses_one_image_per_caption_before_loading_anything(tmp_path):
    """Issue 19 item 9: `sail toy eval --per-caption 1` sampled for 53 s before refusing the argument."""
    done = sail("toy", "eval", "--model", str(tmp_path / "no-model-here"), "--per-caption", "1")
    assert done.returncode == 2  # argparse: a usage error, before the (missing) model is touched
    assert "--per-caption: 1: at least 2" in done.stderr and "no-model-here" not in done.stderr
