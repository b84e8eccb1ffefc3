"""`sail validate` on the bad example corpus: each file's offending field is printed, exit non-zero.

Each examples/bad/*.yaml starts with `# expect: <text>`; the CLI's error output must contain it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sail_operator.cli import EXIT_BAD_INPUT, main

ROOT = Path(__file__).resolve().parents[2]
BAD = sorted((ROOT / "examples" / "bad").glob("*.yaml"))
# Schema-valid files whose local input files are wrong: only `sail validate` (and `sail run`) can tell.
BAD_INPUTS = sorted((ROOT / "examples" / "bad-inputs").glob("*.yaml"))


def expected_text(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("# expect:"):
            return line.removeprefix("# expect:").strip()
    raise AssertionError(f"{path} has no '# expect:' line")


def test_the_bad_corpus_is_not_empty():
    assert len(BAD) >= 10


@pytest.mark.parametrize("path", BAD + BAD_INPUTS, ids=[p.stem for p in BAD + BAD_INPUTS])
def test_validate_names_the_offending_field_and_fails(path, capsys):
    assert main(["validate", str(path)]) == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert expected_text(path) in captured.err
    assert str(path) in captured.err
    assert captured.out == ""


@pytest.mark.parametrize("name", ["sd15.yaml", "sdxl.yaml", "quickstart.yaml"])
def test_validate_accepts_the_good_examples(name, capsys):
    assert main(["validate", str(ROOT / "examples" / name)]) == 0
    assert "valid SAILRun" in capsys.readouterr().out


def test_the_console_script_exits_non_zero_on_a_bad_file():
    path = ROOT / "examples" / "bad" / "alpha-above-one.yaml"
    done = subprocess.run([sys.executable, "-m", "sail_operator", "validate", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == EXIT_BAD_INPUT
    assert "spec.sail.alpha" in done.stderr


def test_crd_prints_the_generated_crd(capsys):
    assert main(["crd"]) == 0
    out = capsys.readouterr().out
    assert "kind: CustomResourceDefinition" in out and "sailruns.sail.dev" in out
