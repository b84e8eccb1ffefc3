"""`sail-trainer`: run one phase of one iteration of a run (or delegate to the toy trainer).

    sail-trainer <generate|annotate|mixup|train> --run URI --iteration I --spec PATH [--shards S | --shard K/S]
    sail-trainer toy ...

With `--shards S` the shard index comes from JOB_COMPLETION_INDEX (Indexed Jobs; the local
executor sets it too). Exit codes: sail_api.phases.ExitCode (64 bad spec, 65 bad data: not
retryable; 75 transient storage trouble; 1 anything else). A PhaseSummary JSON goes to the
termination log (SAIL_TERMINATION_LOG, default /dev/termination-log, skipped when not
writable) and is printed as the last stdout line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from sail_api.phases import (
    DEFAULT_TERMINATION_LOG,
    SHARD_INDEX_ENV,
    SHARDED_PHASES,
    TERMINATION_LOG_ENV,
    TERMINATION_MESSAGE_LIMIT,
    ExitCode,
    Phase,
    PhaseSummary,
)

log = logging.getLogger("sail_trainer.cli")
# The imports inside functions below are deliberate: `sail-trainer --help`, a bad flag and the
# torchrun launcher must not pay for the runner, storage and (through the phases) torch; each
# module loads only on the path that uses it (tests/integration/test_trainer_cli_light.py).


class UsageError(Exception):
    """A command-line problem (reported as BAD_SPEC: retrying cannot fix it)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sail-trainer", description="Run one phase of a SAIL run.")
    sub = parser.add_subparsers(dest="command", required=True)
    for phase in Phase:
        p = sub.add_parser(phase.value, help=f"run the {phase.value} phase")
        p.add_argument("--run", required=True, help="run root URI (local path or s3://bucket/prefix)")
        p.add_argument("--iteration", required=True, type=int, help="iteration (0 = step 0)")
        p.add_argument("--spec", required=True, help="resolved spec JSON file (sail_api.resolved.ResolvedRun)")
        group = p.add_mutually_exclusive_group()
        group.add_argument("--shards", type=int, help=f"shard count; the index comes from ${SHARD_INDEX_ENV}")
        group.add_argument("--shard", help="explicit shard K/S")
        p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub.add_parser("toy", help="the toy trainer (sail_trainer.toy)", add_help=False)
    return parser


def parse_shard(phase: Phase, shards: int | None, shard: str | None, env: dict[str, str]) -> tuple[int | None, int | None]:
    """(k, S) for sharded phases, (None, None) otherwise; UsageError naming the flag or variable."""
    if shard is not None:
        try:
            k_text, s_text = shard.split("/")
            k, s = int(k_text), int(s_text)
        except ValueError as exc:
            raise UsageError(f"--shard {shard!r}: expected K/S, e.g. 0/4") from exc
    elif shards is not None:
        raw = env.get(SHARD_INDEX_ENV)
        if raw is None:
            raise UsageError(f"--shards {shards} needs ${SHARD_INDEX_ENV} (the shard index); or pass --shard K/S")
        try:
            k, s = int(raw), shards
        except ValueError as exc:
            raise UsageError(f"${SHARD_INDEX_ENV}={raw!r} is not an integer") from exc
    else:
        k, s = (0, 1) if phase in SHARDED_PHASES else (None, None)
        return k, s
    if phase not in SHARDED_PHASES:
        raise UsageError(f"{phase.value} is not sharded: drop --shard/--shards")
    if s < 1 or not 0 <= k < s:
        raise UsageError(f"shard {k}/{s}: need S >= 1 and 0 <= K < S")
    return k, s


def write_termination_log(text: str, env: dict[str, str]) -> None:
    """Best effort: the file may not exist or be writable outside Kubernetes."""
    from sail_trainer.launch import resolve_termination_log

    path = resolve_termination_log(env.get(TERMINATION_LOG_ENV, DEFAULT_TERMINATION_LOG), env)
    try:
        Path(path).write_text(text)
    except OSError:
        log.debug("termination log %s is not writable; skipped", path)


def fit_summary(summary: PhaseSummary) -> str:
    """Compact JSON under the 4096-byte termination-message limit (drops extras, then metrics, then trims)."""
    from sail_trainer.phases.runner import dump_summary

    text = dump_summary(summary)
    if len(text.encode()) >= TERMINATION_MESSAGE_LIMIT:
        summary = summary.model_copy(update={"extra": {}})
        text = dump_summary(summary)
    if len(text.encode()) >= TERMINATION_MESSAGE_LIMIT:
        summary = summary.model_copy(update={"metrics": {}, "error": (summary.error or "")[:1000]})
        text = dump_summary(summary)
    return text


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # `torchrun ... -m sail_trainer -- train --run ...` (torchrun's --run-path eats --run)
        argv = argv[1:]
    if argv and argv[0] == "toy":
        from sail_trainer.toy.cli import main as toy_main

        return int(toy_main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    from sail_trainer.logs import configure_logging

    configure_logging(logging.DEBUG if args.verbose else logging.INFO)
    phase = Phase(args.command)
    env = dict(os.environ)
    if phase is Phase.TRAIN:
        from sail_trainer.launch import launch_workers, requested_world_size

        if requested_world_size(env) > 1:
            log.info("train: starting %d processes with torchrun (PET_* environment)", requested_world_size(env))
            code, text = launch_workers(argv, env)
            if text is not None:
                write_termination_log(text, env)
                print(text, flush=True)  # noqa: T201
            return code
    summary = PhaseSummary(phase=phase, iteration=max(0, args.iteration), outcome="failed")
    try:
        shard, shards = parse_shard(phase, args.shards, args.shard, env)
        summary.shard = None if shard is None else f"{shard}/{shards}"
        if args.iteration < 0:
            raise UsageError(f"--iteration {args.iteration}: must be >= 0")
        if args.iteration == 0 and phase in (Phase.GENERATE, Phase.ANNOTATE):
            raise UsageError(f"{phase.value} runs in rounds (--iteration >= 1); iteration 0 is mixup + train only")
        summary = _execute(phase, args, shard, shards)
    except Exception as exc:  # the boundary: classify, report, exit with the documented code
        code = ExitCode.BAD_SPEC if isinstance(exc, UsageError) else _classify(exc)
        log.error("%s failed (exit %d): %s", phase.value, int(code), exc, exc_info=code == ExitCode.FAILURE)
        summary = summary.model_copy(update={"outcome": "failed", "exit_code": int(code),
                                             "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:1500]})
    text = fit_summary(summary)
    write_termination_log(text, env)
    print(text, flush=True)  # noqa: T201  (CLI output: the last stdout line is the summary)
    return summary.exit_code


def _classify(exc: BaseException) -> ExitCode:
    from sail_trainer.errors import classify_exit_code

    return classify_exit_code(exc)


def _execute(phase: Phase, args: argparse.Namespace, shard: int | None, shards: int | None) -> PhaseSummary:
    from sail_trainer.phases.runner import PhaseRequest, env_rank, execute_phase

    rank, world = env_rank() if phase is Phase.TRAIN else (0, 1)
    request = PhaseRequest(phase, args.run, args.iteration, args.spec, shard, shards)
    return execute_phase(request, rank=rank, world_size=world)


if __name__ == "__main__":
    sys.exit(main())
