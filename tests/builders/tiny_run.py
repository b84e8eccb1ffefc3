"""A tiny run on disk (pipeline, seed pairs, prompts, spec) and helpers to drive `sail-trainer`.

`create_tiny_run(folder, run_uri)` writes every input of a tiny SD1.5 (or SDXL) run and the
resolved spec; `run_trainer_process` starts `python -m sail_trainer` as a subprocess with a
list of arguments and returns its exit code, parsed summary (the last stdout line) and stderr.
Operator/CLI tests reuse these for their end-to-end runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.builders.tiny_pipeline import (
    build_tiny_prompts,
    build_tiny_run_spec,
    build_tiny_sd15,
    build_tiny_sdxl,
    build_tiny_seed_pairs,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class TinyRun:
    folder: Path
    run_uri: str
    model: Path
    seed_pairs: Path
    prompts: Path
    spec: Path


def create_tiny_run(folder: Path, run_uri: str | None = None, *, layout: str = "sd15", endpoint: str | None = None,
                    model: Path | None = None, num_pairs: int = 8, num_prompts: int = 16, **sail: Any) -> TinyRun:
    """Write a tiny pipeline (unless `model` is given), seed pairs, prompts and `spec.json` under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    if model is None:
        model = (build_tiny_sd15 if layout == "sd15" else build_tiny_sdxl)(folder / "model")
    pairs = build_tiny_seed_pairs(folder / "seed", num_pairs)
    prompts = build_tiny_prompts(folder / "prompts.txt", num_prompts)
    run_uri = run_uri or str(folder / "run")
    spec = folder / "spec.json"
    spec.write_text(build_tiny_run_spec(run_uri, str(model), str(pairs), str(prompts), endpoint=endpoint, **sail))
    return TinyRun(folder, run_uri, model, pairs, prompts, spec)


def phase_args(run: TinyRun, phase: str, iteration: int, *extra: str) -> list[str]:
    return [phase, "--run", run.run_uri, "--iteration", str(iteration), "--spec", str(run.spec), *extra]


@dataclass(frozen=True)
class TrainerResult:
    returncode: int
    summary: dict[str, Any]
    stderr: str


def run_trainer_process(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 300,
                        termination_log: Path | None = None) -> TrainerResult:
    """Run `python -m sail_trainer ARGS` (list args, no shell); parse the summary line."""
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("OMP_NUM_THREADS", "1")
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), full_env.get("PYTHONPATH", "")]))
    if termination_log is not None:
        full_env["SAIL_TERMINATION_LOG"] = str(termination_log)
    proc = subprocess.run([sys.executable, "-m", "sail_trainer", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, check=False)
    lines = [line for line in proc.stdout.strip().splitlines() if line.strip()]
    summary = json.loads(lines[-1]) if lines else {}
    return TrainerResult(proc.returncode, summary, proc.stderr)
