"""Bad SAILRun input, generated (hypothesis): every reader rejects it cleanly, naming the field.

A valid SAILRun is mutated at one generated place: a value replaced by one of the wrong type,
an out-of-range number, a huge or exotic unicode string, a field deleted, an unknown field
added. Whatever comes out, and whatever raw text is fed in:
- `sail_api.validation.parse_run` returns a SAILRun or raises RunFileError (nothing else) whose
  text names the mutated field by its camelCase name;
- `sail validate FILE` (the CLI's `main`, in-process) exits 0 or 2 and never raises;
- the operator's `validate_run` (kube observe) never raises and names the field too;
- `check_semantics` and the planner's `decide` never crash on any spec that validated.
Examples are bounded (this is a unit test); `deadline=None` because the first example pays
pydantic's schema build.
"""

from __future__ import annotations

import copy
import io
import json
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sail_api.status import SAILRunStatus
from sail_api.validation import RunFileError, check_semantics, parse_run, validate_run_document
from sail_operator.cli import main as sail_main
from sail_operator.kube.observe import validate_run
from sail_operator.kube.settings import OperatorSettings
from sail_operator.planner.decide import decide
from sail_operator.planner.model import Observed
from sail_operator.policy import OperatorPolicy

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

BASE: dict[str, Any] = {
    "apiVersion": "sail.dev/v1alpha1",
    "kind": "SAILRun",
    "metadata": {"name": "fuzz", "namespace": "team-a"},
    "spec": {
        "model": {"uri": "s3://models/sd15", "layout": "sd15", "precision": "bf16"},
        "seedPairs": {"uri": "s3://data/seed.jsonl", "format": "jsonl", "limit": 100},
        "prompts": {"uri": "s3://data/prompts.txt", "column": "prompt"},
        "sail": {
            "rounds": 2, "promptsPerRound": 16, "candidatesPerPrompt": 4, "rewardDraws": 2, "alpha": 0.25,
            "beta": 5000.0, "seed": 3,
            "sampler": {"kind": "ddim", "steps": 10, "guidanceScale": 7.5, "resolution": 64, "batchSize": 4},
            "train": {"effectiveBatch": 8, "microBatch": 2, "checkpointEvery": 10,
                      "optimizer": {"kind": "adamw", "learningRate": 1e-6}},
        },
        "storage": {"uri": "s3://runs/fuzz", "endpoint": "http://minio:9000", "region": "us-east-1",
                    "credentialsSecretRef": {"name": "s3-creds"}},
        "template": {"image": "ghcr.io/sail-dev/sail-trainer:0.1.0", "env": [{"name": "HF_HOME", "value": "/c"}],
                     "nodeSelector": {"gpu": "a100"},
                     "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
        "resources": {"train": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"nvidia.com/gpu": "1"}}},
        "parallelism": {"generateShards": 2, "annotateShards": 2, "trainNodes": 1, "gpusPerNode": 1},
        "failurePolicy": {"appRetries": 2, "infraRetries": 3,
                          "backoff": {"initialSeconds": 1, "maxSeconds": 10, "factor": 2, "jitter": 0.1}},
        "queueName": "gpu-queue",
        "activeDeadlineSeconds": 3600,
    },
}

Path_ = tuple[str | int, ...]


def _paths(node: Any, prefix: Path_ = ()) -> list[Path_]:
    """Every path into the base document (mappings by key, lists by index)."""
    found: list[Path_] = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


ALL_PATHS = _paths(BASE)
def _at(document: Any, path: Path_) -> Any:
    for part in path:
        document = document[part]
    return document


FREE_MAPS = ("nodeSelector", "requests", "limits")  # user keys, not fields: any name is allowed
MAPPING_PATHS = [p for p in [(), *ALL_PATHS] if isinstance(_at(BASE, p), dict) and p[-1:] not in [(m,) for m in FREE_MAPS]]

weird_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30),
    st.sampled_from(["", " ", "\u202e", "\x00", "\U0001f600" * 3, "a" * 100_000, "../../etc/passwd",
                     "s3://", "hostPath:/", "file:///etc", "${AWS_SECRET_ACCESS_KEY}", "1e-8", "yes", "null"]),
)
bad_values = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    weird_text,
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=8), st.integers(), max_size=3),
)


@st.composite
def mutated_documents(draw: st.DrawFn) -> tuple[dict[str, Any], Path_, str]:
    """(document, path touched, kind of mutation)."""
    document = copy.deepcopy(BASE)
    kind = draw(st.sampled_from(["replace", "delete", "unknown"]))
    if kind == "unknown":
        path = draw(st.sampled_from(MAPPING_PATHS))
        name = draw(st.sampled_from(["bogusField", "hostPath", "privileged", "volumes", "command", "zz\u00e9"]))
        _at(document, path)[name] = draw(bad_values)
        return document, (*path, name), kind
    path = draw(st.sampled_from(ALL_PATHS))
    parent = _at(document, path[:-1])
    if kind == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(bad_values)
    return document, path, kind


def _named_in(path: Path_, text: str) -> bool:
    """The field is named: its camelCase key (or, for a list item, the list's key) is in the text."""
    names = [part for part in path if isinstance(part, str)]
    return not names or names[-1] in text or json.dumps(names[-1]) in text


def _to_yaml(document: Any) -> str:
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)


@FUZZ
@given(mutated_documents())
def test_parse_run_accepts_or_names_the_field(case: tuple[dict[str, Any], Path_, str]) -> None:
    document, path, kind = case
    try:
        run = parse_run(_to_yaml(document), "fuzz.yaml")
    except RunFileError as error:
        text = str(error)
        assert text.startswith("fuzz.yaml: ") and error.problems
        assert _named_in(path, text), (path, kind, text)
        return
    # The envelope and metadata allow extra keys (objects read back from the API server carry them).
    assert kind != "unknown" or path[0] != "spec", f"unknown field {path} was accepted"
    assert isinstance(check_semantics(run), list)


@FUZZ
@given(mutated_documents())
def test_operator_validation_never_raises_and_names_the_field(case: tuple[dict[str, Any], Path_, str]) -> None:
    document, path, kind = case
    # the base run's MinIO endpoint is a site store the admin allows (custom endpoints are refused by default)
    spec, message = validate_run(document, OperatorSettings(policy=OperatorPolicy(allowed_endpoints=("http://minio:9000",))))
    assert (spec is None) != (message is None)
    if message is not None and path[:1] == ("spec",):
        assert _named_in(path, message), (path, kind, message)
    if kind == "unknown" and path[:1] == ("spec",):
        assert spec is None, f"the operator accepted unknown field {path}"


@FUZZ
@given(mutated_documents())
def test_sail_validate_exits_cleanly(case: tuple[dict[str, Any], Path_, str]) -> None:
    document, path, _kind = case
    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder, "run.yaml")
        file.write_text(_to_yaml(document), encoding="utf-8")
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = sail_main(["validate", str(file)])
    assert code in (0, 2), (code, err.getvalue())
    if code == 2:
        assert str(file) in err.getvalue()
        assert "Traceback" not in err.getvalue()
    else:
        assert "valid SAILRun" in out.getvalue()


@FUZZ
@given(st.one_of(
    st.text(max_size=400),
    st.binary(max_size=400).map(lambda b: b.decode("latin-1")),
    st.sampled_from(["", "---\n---\n", "a: [", "kind: SAILRun\nkind: SAILRun\n", "!!python/object:os.system {}",
                     "- 1\n- 2\n", "apiVersion: sail.dev/v1alpha1\nkind: SAILRun\nmetadata: 3\nspec: []\n",
                     "&a {kind: SAILRun, apiVersion: sail.dev/v1alpha1, spec: *a}", "x: " + "[" * 150, "&a [*a]", "x: " + "[" * 2000]),
))
def test_arbitrary_text_is_a_run_file_error_or_a_run(text: str) -> None:
    try:
        parse_run(text, "raw.yaml")
    except RunFileError as error:
        assert str(error).startswith("raw.yaml: ")


def _validate_file(text: str) -> tuple[int, str]:
    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder, "run.yaml")
        file.write_text(text, encoding="utf-8")
        err = io.StringIO()
        with redirect_stdout(io.StringIO()), redirect_stderr(err):
            code = sail_main(["validate", str(file)])
    return code, err.getvalue()


@pytest.mark.parametrize("text", ["&a [*a]", "kind: &a [*a]\n", "kind: SAILRun\napiVersion: &v [*v]\n"])
def test_self_referencing_alias_is_a_run_file_error(text: str) -> None:
    code, err = _validate_file(text)
    assert code == 2 and "run.yaml" in err


def test_deeply_nested_yaml_is_a_run_file_error() -> None:
    code, err = _validate_file("x: " + "[" * 2000)
    assert code == 2 and "run.yaml" in err


@FUZZ
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=20))
def test_any_parsed_object_is_validated_without_crashing(document: Any) -> None:
    try:
        validate_run_document(document, "obj")
    except RunFileError:
        pass
    raw = document if isinstance(document, dict) else {"spec": document}
    spec, message = validate_run(raw, OperatorSettings())
    assert spec is None and message


@settings(max_examples=60, deadline=None, derandomize=True)
@given(mutated_documents())
def test_planner_drives_every_accepted_spec_to_completion(case: tuple[dict[str, Any], Path_, str]) -> None:
    """Any spec the validator accepts, the planner can plan: a calm world finishes it with no crash."""
    from sail_api.phases import PhaseSummary
    from sail_operator.planner.model import AttemptObservation, AttemptState, CreatePhaseJob

    document, _path, _kind = case
    try:
        run = validate_run_document(document, "obj")
    except RunFileError:
        return
    status, jobs, now = SAILRunStatus(), {}, NOW
    for _ in range(4 * (run.spec.sail.rounds + 1) * 3 + 10):
        observed = Observed(name=run.metadata.name, namespace="ns", uid="u", generation=1, spec=run.spec,
                            spec_error=None, status=status, attempts=tuple(jobs.values()))
        decision = decide(observed, now)
        status = decision.status
        if status.state is not None and status.state.value in ("Succeeded", "Failed"):
            break
        for action in decision.actions:
            if isinstance(action, CreatePhaseJob):
                assert action.name not in jobs
                summaries = tuple(
                    PhaseSummary(phase=action.phase, iteration=action.iteration, outcome="committed",
                                 shard=None if not action.shards else f"{k}/{action.shards}",
                                 manifest_uri=f"s3://runs/x/{action.name}/_SUCCESS.json")
                    for k in range(action.shards or 1))
                jobs[action.name] = AttemptObservation(
                    name=action.name, iteration=action.iteration, phase=action.phase, attempt=action.attempt,
                    state=AttemptState.SUCCEEDED, created_at=now, started_at=now, finished_at=now,
                    summaries=summaries, owned=True)
        now = now.replace(second=(now.second + 1) % 60)
    assert status.state is not None and status.state.value == "Succeeded", status.state
