"""The shipped quick-start SAILRun with its toy-world paths resolved to this checkout's examples/."""

from __future__ import annotations

from pathlib import Path

from sail_api.spec import SAILRun
from sail_api.validation import load_run_file

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_quickstart_run() -> SAILRun:
    run = load_run_file(EXAMPLES / "quickstart.yaml")
    spec = run.spec
    spec.model.uri = str(EXAMPLES / "toy" / "model")
    spec.seed_pairs.uri = str(EXAMPLES / "toy" / "seed-pairs" / "pairs.jsonl")
    spec.prompts.uri = str(EXAMPLES / "toy" / "prompts.txt")
    spec.sail.validation.uri = str(EXAMPLES / "toy" / "heldout-pairs" / "pairs.jsonl")
    return run
