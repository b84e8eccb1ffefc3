"""Checks of a run's input files that can be made before any compute is spent.

`sail validate` and `sail run` (first thing) call `check_local_inputs`; the operator can call
`check_prompt_pool` once it knows the pool size. Only local files are read here (an `s3://`
input or a hub id is the trainer's to read); each problem is one line `spec.field: problem;
fix`, naming the file (and line) at fault.

The prompt count follows the trainer's reader (sail_trainer.data.prompts): prompts are
stripped, blank lines and blank or null values are skipped, duplicates are kept; a folder
is read as its files with a known extension. The pool must hold `rounds x promptsPerRound`
prompts because rounds take disjoint slices of one seeded permutation of it.
"""

from __future__ import annotations

import json
from pathlib import Path

from sail_api.spec import SAILRunSpec

PROMPT_SUFFIXES = {"text": (".txt", ".text", ".prompts"), "jsonl": (".jsonl", ".ndjson"), "parquet": (".parquet", ".pq")}
SEED_SUFFIXES = {"jsonl": (".jsonl", ".ndjson", ".json"), "parquet": (".parquet", ".pq")}
GENERIC_SEED_COLUMNS = ("prompt", "winner", "loser")
PICKAPIC_SEED_COLUMNS = ("caption", "jpg_0", "jpg_1", "label_0")


class InputProblem(ValueError):
    """One input problem, already phrased `spec.field: problem; fix`."""


def is_local(uri: str) -> bool:
    """A path on this machine (absolute, as `sail run` resolves them); s3:// URIs and hub ids are not."""
    return "://" not in uri and Path(uri).is_absolute()


def _files(path: Path, suffixes: tuple[str, ...], field: str) -> list[Path]:
    if not path.exists():
        raise InputProblem(f"{field}: {path} does not exist; fix the path (relative paths are relative to the "
                           "SAILRun file's folder)")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(suffixes))
        if not files:
            raise InputProblem(f"{field}: the folder {path} holds no {'/'.join(suffixes)} files; point at a file "
                               "or a folder of them")
        return files
    if path.stat().st_size == 0:
        raise InputProblem(f"{field}: {path} is empty; fill it or point at another file")
    return [path]


def _format_of(path: Path, fmt: str, table: dict[str, tuple[str, ...]], field: str) -> str:
    if fmt != "auto":
        return "parquet" if fmt == "pickapic" else fmt
    for name, suffixes in table.items():
        if path.name.lower().endswith(suffixes):
            return name
    raise InputProblem(f"{field}: cannot tell the format of {path} from its extension; name it "
                       f"{', '.join(s for group in table.values() for s in group)} or set the format field")


def count_prompts(uri: str, fmt: str = "auto", column: str = "prompt") -> int | None:
    """Non-blank prompts of a local pool (file or folder); InputProblem naming the file and line.

    None when it cannot be counted here (Parquet without pyarrow installed).
    """
    field = "spec.prompts.uri"
    total = 0
    for path in _files(Path(uri), tuple(s for group in PROMPT_SUFFIXES.values() for s in group), field):
        kind = _format_of(path, fmt, PROMPT_SUFFIXES, "spec.prompts.format")
        if kind == "parquet":
            count = _count_parquet_prompts(path, column)
            if count is None:
                return None
            total += count
            continue
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InputProblem(f"{field}: {path} is not valid UTF-8 ({exc.reason}); save it as UTF-8") from exc
        for line_no, line in enumerate(text.splitlines(), start=1):
            if kind == "text":
                total += bool(line.strip())
            elif line.strip():
                total += bool(_jsonl_prompt(line, path, line_no, column).strip())
    return total


def _jsonl_prompt(line: str, path: Path, line_no: int, column: str) -> str:
    where = f"spec.prompts.uri: {path}, line {line_no}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputProblem(f"{where}: not valid JSON ({exc.msg}); write one JSON object per line") from exc
    if not isinstance(record, dict):
        raise InputProblem(f"{where}: expected a JSON object, got {type(record).__name__}")
    if column not in record:
        raise InputProblem(f"{where}: missing key {column!r}, found {sorted(record)}; set spec.prompts.column "
                           "to the key that holds the prompt")
    value = record[column]
    if value is not None and not isinstance(value, str):
        raise InputProblem(f"{where}: the prompt must be a string, got {type(value).__name__}")
    return value or ""


def _parquet_columns(path: Path, field: str) -> list[str] | None:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # no pyarrow here: the trainer checks the file
        return None
    try:
        return list(pq.read_schema(path).names)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError on a bad file
        raise InputProblem(f"{field}: {path} is not a readable Parquet file ({exc}); check the file or its format") from exc


def _count_parquet_prompts(path: Path, column: str) -> int | None:
    columns = _parquet_columns(path, "spec.prompts.uri")
    if columns is None:
        return None
    if column not in columns:
        raise InputProblem(f"spec.prompts.column: {path} has no column {column!r}, found {columns}; set "
                           "spec.prompts.column")
    import pyarrow.parquet as pq

    values = pq.read_table(path, columns=[column]).column(0).to_pylist()
    return sum(1 for v in values if isinstance(v, str) and v.strip())


def check_seed_pairs_file(uri: str, fmt: str = "auto") -> None:
    """Exists, not empty, and its header (first JSONL record / Parquet schema) has the pair columns."""
    field = "spec.seedPairs.uri"
    for path in _files(Path(uri), tuple(s for group in SEED_SUFFIXES.values() for s in group), field)[:1]:
        kind = _format_of(path, fmt, SEED_SUFFIXES, "spec.seedPairs.format")
        if kind == "parquet":
            columns = _parquet_columns(path, field)
            if columns is not None and not (set(GENERIC_SEED_COLUMNS) <= set(columns)
                                            or set(PICKAPIC_SEED_COLUMNS) <= set(columns)):
                raise InputProblem(f"{field}: {path} has columns {columns}; expected {', '.join(GENERIC_SEED_COLUMNS)} "
                                   f"or (Pick-a-Pic v2) {', '.join(PICKAPIC_SEED_COLUMNS)}")
            continue
        first = next(((n, line) for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1)
                      if line.strip()), None)
        if first is None:
            raise InputProblem(f"{field}: {path} holds only blank lines; write one pair per line")
        line_no, line = first
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputProblem(f"{field}: {path}, line {line_no}: not valid JSON ({exc.msg}); write one JSON "
                               "object per line") from exc
        missing = [c for c in GENERIC_SEED_COLUMNS if not isinstance(record, dict) or c not in record]
        if missing:
            found = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise InputProblem(f"{field}: {path}, line {line_no}: missing {', '.join(missing)} (found {found}); "
                               f"each line needs {', '.join(GENERIC_SEED_COLUMNS)}")


def check_model_folder(uri: str) -> None:
    path = Path(uri)
    if not path.exists():
        raise InputProblem(f"spec.model.uri: {path} does not exist; fix the path or give a hub id")
    if path.is_dir() and not (path / "model_index.json").is_file():
        raise InputProblem(f"spec.model.uri: {path} has no model_index.json; point at a diffusers pipeline folder")


CLIP_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                     "pytorch_model.bin.index.json")
CLIP_TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))


def find_clip_layout_problem(folder: Path, field: str) -> str | None:
    """What is wrong with a CLIP scorer folder (transformers CLIPModel + CLIPProcessor), or None.

    Shared by `sail validate` (local folders) and the trainer (after downloading an s3:// folder).
    """
    if not folder.is_dir():
        return f"{field}: {folder} is not a folder; give a transformers CLIP folder (local path or s3:// URI)"
    config = folder / "config.json"
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return f"{field}: {config} is missing or not JSON; save the model with CLIPModel.save_pretrained"
    missing = []
    if model_type != "clip":
        missing.append(f"config.json model_type 'clip' (found {model_type!r})")
    if not any((folder / name).is_file() for name in CLIP_WEIGHT_FILES):
        missing.append(f"weights ({' or '.join(CLIP_WEIGHT_FILES[:2])})")
    if not (folder / "preprocessor_config.json").is_file():
        missing.append("preprocessor_config.json (CLIPProcessor.save_pretrained)")
    if not any(all((folder / name).is_file() for name in group) for group in CLIP_TOKENIZER_FILES):
        missing.append("tokenizer files (tokenizer.json, or vocab.json + merges.txt)")
    if missing:
        return (f"{field}: {folder} is not a CLIPModel + CLIPProcessor folder (PickScore layout): missing "
                f"{'; '.join(missing)}; save both model and processor into one folder")
    return None


def check_evaluation_inputs(spec: SAILRunSpec) -> list[str]:
    """Local CLIP scorer folders and a local evaluation prompt file."""
    evaluation = spec.evaluation
    if evaluation is None:
        return []
    problems = []
    for k, scorer in enumerate(evaluation.scorers):
        if scorer.clip is not None and is_local(scorer.clip.uri):
            problem = find_clip_layout_problem(Path(scorer.clip.uri), f"spec.evaluation.scorers[{k}].clip.uri")
            if problem:
                problems.append(problem)
    prompts = evaluation.prompts
    if prompts is not None and is_local(prompts.uri):
        try:
            if count_prompts(prompts.uri, prompts.format, prompts.column) == 0:
                problems.append(f"spec.evaluation.prompts.uri: {prompts.uri} holds no non-blank prompt; write one "
                                "prompt per line (or check spec.evaluation.prompts.column)")
        except InputProblem as exc:
            problems.append(str(exc).replace("spec.prompts", "spec.evaluation.prompts"))
    return problems


_IMPORT_PROBE = """
import importlib, json, sys
failures = {}
for path in sys.argv[1:]:
    module, _, name = path.partition(":")
    try:
        found = getattr(importlib.import_module(module), name, None)
    except Exception as exc:
        failures[path] = f"cannot import module {module!r} ({type(exc).__name__}: {exc})"
        continue
    if not callable(found):
        failures[path] = f"module {module!r} has no callable {name!r}"
print(json.dumps(failures))
"""


def check_scorer_imports(spec: SAILRunSpec, python: str | None = None, timeout: float = 300.0) -> list[str]:
    """For `sail run` (the trainer runs in this environment): each `module:function` scorer must import.

    Imported in a child Python (`python`, default this one): user code never runs in the CLI process.
    """
    import subprocess
    import sys

    scorers = [(k, s) for k, s in enumerate(spec.evaluation.scorers if spec.evaluation else []) if s.callable]
    if not scorers:
        return []
    args = [python or sys.executable, "-c", _IMPORT_PROBE, *[s.callable for _, s in scorers]]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
        failures = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        return [f"spec.evaluation.scorers: could not check the callables ({type(exc).__name__}: {exc})"]
    return [f"spec.evaluation.scorers[{k}] ({s.name}).callable: {failures[s.callable]}; install it where "
            "the trainer runs or fix the name" for k, s in scorers if s.callable in failures]


def check_prompt_pool(spec: SAILRunSpec, pool: int, source: str) -> str | None:
    """The pool must cover every round with fresh prompts; the problem and both ways out, or None."""
    rounds, per_round = spec.sail.rounds, spec.sail.prompts_per_round
    needed = rounds * per_round
    if pool >= needed:
        return None
    ways = [f"add {needed - pool} prompt(s) to {source}"]
    if pool // rounds >= 1:
        ways.append(f"lower spec.sail.promptsPerRound to {pool // rounds} (only before the run starts: it is part of "
                    "the algorithm)")
    if pool // per_round >= 1:
        ways.append(f"lower spec.sail.rounds to {pool // per_round}")
    return (f"spec.sail.promptsPerRound: {rounds} rounds x {per_round} prompts = {needed} fresh prompts are needed "
            f"(rounds never reuse a prompt) but {source} holds {pool}; {', or '.join(ways)}")


def find_spec_warnings(spec: SAILRunSpec) -> list[str]:
    """Valid settings that quietly waste compute: said before the run starts, the run is not refused."""
    warnings = []
    if spec.sail.judge_reference == "step0" and spec.sail.rounds >= 1 and (spec.start_iteration or 0) <= 1:
        warnings.append(
            "spec.sail.judgeReference: step0 judges round 1 with the very model that generates it (step 0's), so "
            "every round-1 reward is exactly 0 and its self-labelled pairs are arbitrary (later rounds are "
            "fine); use base (the default) or previous to get a signal in round 1"
        )
    return warnings


def check_local_inputs(spec: SAILRunSpec) -> list[str]:
    """Every problem with the local input files of a spec whose URIs are resolved; empty when fine."""
    problems: list[str] = []
    checks = []
    if is_local(spec.model.uri):
        checks.append(lambda: check_model_folder(spec.model.uri))
    if is_local(spec.seed_pairs.uri):
        checks.append(lambda: check_seed_pairs_file(spec.seed_pairs.uri, spec.seed_pairs.format))
    for check in checks:
        try:
            check()
        except InputProblem as exc:
            problems.append(str(exc))
    if is_local(spec.prompts.uri):
        try:
            pool = count_prompts(spec.prompts.uri, spec.prompts.format, spec.prompts.column)
        except InputProblem as exc:
            problems.append(str(exc))
        else:
            if pool == 0:
                problems.append(f"spec.prompts.uri: {spec.prompts.uri} holds no non-blank prompt; write one prompt "
                                "per line (or check spec.prompts.column)")
            elif pool is not None:
                problem = check_prompt_pool(spec, pool, spec.prompts.uri)
                if problem:
                    problems.append(problem)
    return problems + check_evaluation_inputs(spec)
