"""`sail`: run a SAILRun on this machine, inspect and report runs, validate files, start the operator.

    sail run FILE [--storage PATH|s3://...] [--workers N]   the embedded local executor
    sail status PATH|FILE                                   iteration x phase table
    sail report PATH|FILE [--out FILE]                      self-contained HTML report
    sail validate FILE                                      schema, semantic and local input checks
    sail plan FILE [--card H100] [--json] [--policy-file F] cost estimate before the run starts
    sail crd                                                the CRD YAML
    sail export RUN [--iteration N|best|latest] OUT         a committed model as a clean diffusers folder
    sail operator ...                                       the kopf operator (sail_operator.kube.entry)
    sail toy ...                                            the toy world (sail-trainer toy ...)

This is the one module of the operator package that writes to stdout with _out().
Exit codes: 0 success, 1 run failed / report error, 2 bad input (file, arguments),
3 run suspended, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from sail_api.logsafety import quiet_credential_loggers

# Imports inside the command functions are deliberate: `sail --help`, `sail validate` and `sail status`
# must not load the executors, the report, kopf or boto3; each command loads only what it runs.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


# function-length: one declarative table of subcommands and flags, read top to bottom like the CLI reference
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sail", description="SAIL: align text-to-image diffusion models, on one machine (sail run) or on "
        "Kubernetes (sail operator).",
        epilog="exit codes: 0 success, 1 run failed, 2 bad input, 3 run suspended, 130 interrupted. "
        "Docs: docs/cli.md")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser(
        "run", help="run a SAILRun file here, phase by phase; run again to resume",
        description="Run a SAILRun on this machine with the operator's planner: each phase is a sail-trainer "
        "process. Inputs, storage and the run root are checked before anything starts. Run it again to resume "
        "(committed phases are kept), to retry a failed run, or to extend a finished one after raising "
        "spec.sail.rounds. Ctrl-C stops cleanly.",
        epilog="exit codes: 0 complete, 1 failed (or storage unreachable), 2 bad file, inputs or arguments, "
        "3 suspended, 130 interrupted. Docs: docs/cli.md")
    run.add_argument("file", type=Path, help="SAILRun YAML file")
    run.add_argument("--storage", metavar="PATH|s3://BUCKET/PREFIX",
                     help="run root (default: spec.storage.uri, else <file dir>/.sail/<run name>); a relative "
                     "path is relative to the working directory")
    run.add_argument("--workers", type=int, default=None, metavar="N",
                     help="shard processes at once (default: one per GPU, 1 without GPUs)")
    status = sub.add_parser(
        "status", help="iteration x phase table of a run",
        description="Print a run's state, its final model (or latest checkpoint) and the iteration x phase "
        "table: result, attempts, duration and each phase's own numbers.",
        epilog="exit codes: 0 shown, 2 no run found")
    status.add_argument("path", type=Path, help="run root folder, its local/state.json, or the SAILRun file")
    report = sub.add_parser(
        "report", help="write a self-contained HTML report of a run",
        description="Write one HTML file (no server, no network): state, sample grids per iteration, metric "
        "plots, the phase table and the spec; prints its path.",
        epilog="exit codes: 0 written, 1 cannot write or read the run root, 2 no run found")
    report.add_argument("path", type=Path, help="run root folder, its local/state.json, or the SAILRun file")
    report.add_argument("--out", type=Path, metavar="FILE", help="HTML file (default: <run root>/report/report.html)")
    validate = sub.add_parser(
        "validate", help="check a SAILRun file (schema, semantics, local input files)",
        description="Check a SAILRun file without running it: the schema, the semantic rules, and the local "
        "input files it names (model folder, seed-pair header, prompt pool vs rounds x promptsPerRound). "
        "Every problem is printed, naming the field or file and the fix.",
        epilog="exit codes: 0 valid (warnings may be printed), 2 invalid")
    validate.add_argument("file", type=Path, help="SAILRun YAML file")
    validate.add_argument("--policy-file", help="also judge it as the operator does on a cluster with this admin "
                          "policy (the chart's policy.json): the same verdict as the operator's")
    plan = sub.add_parser(
        "plan", help="estimate a run's cost (UNet passes, GPU-hours, storage) before it starts",
        description="Estimate what a SAILRun will cost before any compute is spent: per phase and per round the "
        "UNet forward/backward passes, GPU-hours on the card (from measured H100 throughput anchors, "
        "docs/performance.md section 5), stored bytes and objects, and the total.",
        epilog="exit codes: 0 shown, 2 invalid file, unknown card or over the policy's budget")
    plan.add_argument("file", type=Path, help="SAILRun YAML file")
    plan.add_argument("--card", help="GPU the GPU-hours are for (default: the spec's nvidia.com/gpu.product "
                      "node selector, else H100)")
    plan.add_argument("--seed-pairs", type=int, help="seed pairs in the data set (default: seedPairs.limit, or "
                      "the lines of a local JSONL file)")
    plan.add_argument("--json", action="store_true", help="print the estimate as JSON")
    plan.add_argument("--policy-file", type=Path, help="the operator's policy.json: check the run against its "
                      "budget (maxRoundGpuHours, maxRoundStorageBytes) as the operator will; exit 2 when over")
    sub.add_parser("crd", help="print the SAILRun CustomResourceDefinition YAML",
                   description="Print the SAILRun CRD generated from the API models (kubectl apply -f -).")
    sub.add_parser("operator", help="start the Kubernetes operator (arguments passed on)", add_help=False)
    sub.add_parser("toy", help="the toy world: sail-trainer toy ... (arguments passed on)", add_help=False)
    export = sub.add_parser(
        "export", help="copy a committed model out as a clean diffusers pipeline folder",
        description="Copy the model folder a train phase committed (every file checked against its manifest's "
        "sha256) into OUT as a diffusers pipeline folder with its model card; nothing partial is left on failure.",
        epilog="exit codes: 0 copied, 1 cannot copy, 2 no such run or iteration, or OUT not empty")
    export.add_argument("run", help="run root (folder or s3://bucket/prefix), its local/state.json, or the SAILRun file")
    export.add_argument("out", type=Path, help="output folder (must not exist, or be empty)")
    export.add_argument("--iteration", help="a number, best (highest held-out accuracy vs the base) or latest "
                        "(default)")
    export.add_argument("--endpoint", help="S3 endpoint URL for an s3:// run root (default: the run's spec)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if len(args_list) > 1 and args_list[0] in ("-v", "--verbose") and args_list[1] in ("operator", "toy"):
        args_list = args_list[1:]  # the delegated commands have their own logging options
    if args_list and args_list[0] == "operator":
        return run_operator(args_list[1:])
    if args_list and args_list[0] == "toy":
        return run_toy(args_list[1:])
    args = build_parser().parse_args(args_list)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_credential_loggers()
    if args.command == "export":
        return cmd_export(args)
    handlers = {"run": cmd_run, "status": cmd_status, "report": cmd_report, "validate": cmd_validate,
                "crd": cmd_crd, "plan": cmd_plan}
    return handlers[args.command](args)


# ------------------------------------------------------------------ commands


def _out(text: object) -> None:
    """CLI output (the operator package logs elsewhere; only the CLI writes to stdout)."""
    sys.stdout.write(f"{text}\n")
    sys.stdout.flush()


def _err(text: object) -> None:
    sys.stderr.write(f"{text}\n")
    sys.stderr.flush()


def _load(file: Path, policy_file: str | None = None):  # -> SAILRun | None (printing the problems)
    from sail_api.validation import RunFileError, check_run, load_run_file

    try:
        run = load_run_file(file)
    except RunFileError as exc:
        _err(str(exc))
        return None
    cluster_rules = None
    if policy_file:  # the operator's own cluster rules, from the one place they are defined
        from sail_operator.kube.entry import load_policy
        from sail_operator.kube.observe import compute_cluster_violations

        policy = load_policy(policy_file)
        cluster_rules = lambda parsed: compute_cluster_violations(parsed, policy)  # noqa: E731
    problems = check_run(run, cluster_rules)
    if problems:
        _report_problems(file, problems)
        return None
    return run


def _report_problems(file: Path, problems: list[str]) -> None:
    count = len(problems)
    _err(f"{file}: {count} problem{'s' if count != 1 else ''}")
    for problem in problems:
        _err(f"  - {problem}")


def _check_inputs(run, file: Path) -> bool:  # run: SAILRun with URIs resolved; prints the problems
    from sail_api.inputs import find_spec_warnings
    from sail_operator.local.preflight import check_inputs

    for warning in find_spec_warnings(run.spec):
        _err(f"warning: {warning}")
    problems = check_inputs(run)
    if problems:
        _report_problems(file, problems)
    return not problems


def _check_scorers(run, file: Path) -> bool:
    """`sail run` only (its trainer runs in this environment): every `module:function` scorer imports."""
    from sail_api.inputs import check_scorer_imports

    problems = check_scorer_imports(run.spec)
    if problems:
        _report_problems(file, problems)
    return not problems


def cmd_validate(args: argparse.Namespace) -> int:
    from sail_operator.local.paths import build_local_run

    run = _load(args.file, args.policy_file)
    if run is None:
        return EXIT_BAD_INPUT
    if not _check_inputs(build_local_run(run, args.file, None)[0], args.file):
        return EXIT_BAD_INPUT
    rounds = run.spec.sail.rounds
    _out(f"{args.file}: valid SAILRun {run.metadata.name!r} (step 0 + {rounds} round{'s' if rounds != 1 else ''})")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from sail_operator.local.executor import LocalExecutor, detect_gpus
    from sail_operator.local.paths import build_local_run

    gpus = detect_gpus()
    workers = args.workers if args.workers is not None else max(1, len(gpus))
    if workers < 1:
        _err("--workers must be at least 1")
        return EXIT_BAD_INPUT
    run = _load(args.file)
    if run is None:
        return EXIT_BAD_INPUT
    local_run, paths = build_local_run(run, args.file, args.storage)
    model_uri = local_run.spec.model.uri
    if "://" not in model_uri and not Path(model_uri).is_absolute():
        _err(f"note: spec.model.uri {model_uri!r} is not a folder next to {args.file} "
             f"({args.file.resolve().parent / model_uri} does not exist): using it as a hub id")
    if not _check_inputs(local_run, args.file):
        return EXIT_BAD_INPUT
    if not _check_scorers(local_run, args.file):
        return EXIT_BAD_INPUT
    code = _check_storage(local_run, paths)
    if code is not None:
        return code
    _out(f"run {run.metadata.name}: storage {paths.storage_uri}; state {paths.state_file}")
    try:
        executor = LocalExecutor(local_run, paths, out=sys.stdout, workers=workers, gpus=gpus,
                                 source_file=args.file)
    except ValueError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    try:
        code = executor.execute()
    except (OSError, RuntimeError, ValueError) as exc:
        resume = (f"; the state is in {paths.state_file}, run `sail run` again to resume"
                  if paths.state_file.is_file() else "")
        _err(f"sail run stopped: {exc}{resume}")
        return EXIT_FAILED
    if code == 0 and paths.local_root is not None:
        _out(f"status: sail status {paths.local_root}\nreport: sail report {paths.local_root}")
    return code


def _check_storage(run, paths) -> int | None:  # SAILRun, RunPaths -> exit code when the run must not start
    """Before compute: the run root is reachable, and it, the file and the local state agree."""
    from sail_operator.local.preflight import PreflightError, check_agreement, read_committed_run
    from sail_operator.local.state import load_state

    try:
        check_agreement(run, paths, read_committed_run(run, paths), load_state(paths.state_file))
    except PreflightError as exc:
        _err(f"sail run: {exc}")
        return EXIT_BAD_INPUT if exc.permanent else EXIT_FAILED
    except ValueError as exc:  # an unreadable state file names itself
        _err(str(exc))
        return EXIT_BAD_INPUT
    return None


def _find_state(path: Path) -> Path | None:
    from sail_operator.local.paths import find_state_file

    try:
        found = find_state_file(path)
    except ValueError as exc:
        _err(str(exc))
        return None
    if found is None:
        _err(f"{path}: no sail run state found (expected <run root>/local/state.json; has `sail run` "
              "started this run?)")
    return found


def cmd_status(args: argparse.Namespace) -> int:
    from sail_operator.local.state import load_state
    from sail_operator.report.artifacts import fetch_model_folders
    from sail_operator.report.table import render_status_text

    state_file = _find_state(args.path)
    if state_file is None:
        return EXIT_BAD_INPUT
    state = load_state(state_file)
    assert state is not None
    _out(render_status_text(state, fetch_model_folders(state)))
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from sail_operator.local.state import load_state
    from sail_operator.report.html import write_report

    state_file = _find_state(args.path)
    if state_file is None:
        return EXIT_BAD_INPUT
    state = load_state(state_file)
    assert state is not None
    try:
        path = write_report(state, args.out, state_file=state_file)
    except (OSError, ValueError) as exc:
        _err(f"cannot write the report: {exc}")
        return EXIT_FAILED
    _out(path)
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    import json

    from sail_operator.plan_cli import build_estimate_json, estimate_run_file, render_estimate_text

    run = _load(args.file)
    if run is None:
        return EXIT_BAD_INPUT
    try:
        estimate = estimate_run_file(run, args.file, card=args.card, seed_pairs=args.seed_pairs)
    except ValueError as exc:
        _err(f"--card: {exc}")
        return EXIT_BAD_INPUT
    if args.json:
        _out(json.dumps(build_estimate_json(run.metadata.name, estimate), indent=1))
    else:
        _out(render_estimate_text(run.metadata.name, estimate, run.spec.sail.rounds))
    if args.policy_file is not None:
        from sail_operator.plan_cli import check_budget_file

        problems = check_budget_file(run, args.policy_file)
        for problem in problems:
            _err(problem)
        return EXIT_BAD_INPUT if problems else EXIT_OK
    return EXIT_OK


def cmd_crd(args: argparse.Namespace) -> int:
    from sail_api.crd import render_crd_yaml

    sys.stdout.write(render_crd_yaml())
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from sail_api.storage import S3Connection, StorageError, open_store
    from sail_operator.export import ExportError, export_model
    from sail_operator.local.paths import is_remote

    if is_remote(args.run):
        store = open_store(args.run, S3Connection(endpoint=args.endpoint))
    else:
        store = _open_local_run_store(Path(args.run), args.endpoint)
        if store is None:
            return EXIT_BAD_INPUT
    try:
        done = export_model(store, args.iteration, args.out)
    except ExportError as exc:
        _err(f"sail export: {exc}")
        return EXIT_BAD_INPUT
    except (StorageError, OSError) as exc:
        _err(f"sail export: cannot copy the model: {exc}")
        return EXIT_FAILED
    _out(f"exported iteration {done.iteration} ({done.files} files from {done.source}) to {done.folder}\n"
         f"load: DiffusionPipeline.from_pretrained({str(done.folder)!r})")
    return EXIT_OK


def _open_local_run_store(path: Path, endpoint: str | None):  # -> Store | None (printing the problem)
    from sail_api.layout import RUN_FILE
    from sail_api.storage import LocalStore, open_store
    from sail_operator.local.state import load_state
    from sail_operator.report.artifacts import state_connection

    if path.is_dir() and (path / RUN_FILE).is_file():
        return LocalStore(str(path))
    state_file = _find_state(path)
    if state_file is None:
        return None
    state = load_state(state_file)
    assert state is not None
    connection = state_connection(state)
    return open_store(state.storage_uri, replace(connection, endpoint=endpoint or connection.endpoint))


def run_operator(argv: list[str]) -> int:
    """Delegate to the kube engineer's entry point, imported only now (kopf is an extra)."""
    try:
        entry = importlib.import_module("sail_operator.kube.entry")
    except ImportError as exc:
        _err(f"the operator is not available: {exc}; install the operator extra "
              "(pip install 'sail-operator[operator]')")
        return EXIT_BAD_INPUT
    result = entry.main(argv)
    return int(result or 0)


def run_toy(argv: list[str]) -> int:
    """`sail toy ...` is `sail-trainer toy ...` (the trainer owns the toy world)."""
    return subprocess.call([sys.executable, "-m", "sail_trainer", "toy", *argv])  # noqa: S603


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
