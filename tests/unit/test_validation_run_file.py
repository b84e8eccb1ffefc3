"""load_run_file and check_semantics: every problem named by file and dotted camelCase path, with the fix."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import yaml

from sail_api.spec import SAILRun
from sail_api.validation import (
    RunFileError,
    check_semantics,
    format_path,
    load_run_file,
    parse_quantity,
    parse_run,
)
from tests.builders.sailrun_spec import build_sailrun_dict, build_spec_body


def run_body(**spec: Any) -> dict[str, Any]:
    """A minimal valid SAILRun; keyword arguments replace top-level spec fields."""
    body = build_spec_body(model="s3://models/sd15", seed_pairs="s3://data/seed.jsonl",
                           prompts="s3://data/prompts.txt", storage=None)
    return build_sailrun_dict("demo", {**body, **spec})


def write_run(tmp_path, body: dict[str, Any] | str, name: str = "run.yaml"):
    path = tmp_path / name
    path.write_text(body if isinstance(body, str) else yaml.safe_dump(body), encoding="utf-8")
    return path


def build_run(**spec: Any) -> SAILRun:
    return parse_run(yaml.safe_dump(run_body(**spec)), "test.yaml")


# ---------------------------------------------------------------- load_run_file


def test_a_valid_file_loads_with_defaults(tmp_path):
    run = load_run_file(write_run(tmp_path, run_body(sail={"rounds": 2})))
    assert run.metadata.name == "demo" and run.spec.sail.rounds == 2 and run.spec.sail.alpha == 0.25


def test_every_problem_is_listed_with_its_camel_case_path(tmp_path):
    path = write_run(tmp_path, run_body(
        sail={"alpha": 1.5, "candidatesPerPrompt": 1, "sampler": {"resolution": 513}},
        template={"env": [{"name": "A", "value": 3}]},
    ))
    with pytest.raises(RunFileError) as info:
        load_run_file(path)
    error = info.value
    assert error.path == str(path) and str(path) in str(error)
    assert sorted(error.problems) == [
        "spec.sail.alpha: must be <= 1 (got 1.5)",
        "spec.sail.candidatesPerPrompt: must be >= 2 (got 1)",
        "spec.sail.sampler.resolution: must be a multiple of 8 (got 513)",
        "spec.template.env[0].value: must be a string (got 3); quote it, e.g. '3'",
    ]
    assert str(error).startswith(f"{path}: 4 problems\n")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"sail": {"bogus": 1}}, "spec.sail.bogus: unknown field; known fields here: rounds,"),
        ({"sail": {"reward_draws": 4}}, "fields are camelCase: write 'rewardDraws'"),
        ({"sail": {"train": {"optimiser": {}}}}, "did you mean 'optimizer'?"),
        ({"sail": {"sampler": {"kind": "heun"}}}, "spec.sail.sampler.kind: must be one of 'ddpm', "),
        ({"sail": {"beta": "high"}}, "spec.sail.beta: must be a number (got 'high'); write it without quotes"),
        ({"sail": {"replaySelfPairs": "yes please"}}, "spec.sail.replaySelfPairs: must be true or false"),
        ({"sail": 3}, "spec.sail: must be a mapping of fields (got 3)"),
        ({"template": {"env": {"A": "1"}}}, "spec.template.env: must be a list"),
        ({"model": {}}, "spec.model.uri: required field is missing"),
        ({"model": {"uri": ""}}, "spec.model.uri: must have at least 1 characters"),
        ({"resources": {"train": {"limits": {"memory": "lots"}}}}, "is not a Kubernetes quantity"),
        ({"sail": {"train": {"microBatch": 256}}}, "must not exceed sail.train.effectiveBatch (128)"),
        ({"storage": {"uri": "gs://b/x"}}, "spec.storage.uri: storage.uri 'gs://b/x': only s3:// URIs"),
    ],
    ids=["unknown field lists the known ones", "snake case gets the camelCase name",
         "typo gets the closest field", "enum lists the choices", "quoted number", "not a bool",
         "scalar for an object", "map for a list", "missing nested field", "empty string",
         "bad quantity", "cross-field rule", "storage scheme"],
)
def test_field_errors_say_what_to_do(spec, expected):
    with pytest.raises(RunFileError) as info:
        parse_run(yaml.safe_dump(run_body(**spec)), "x.yaml")
    assert expected in str(info.value)


def test_types_are_strict_like_the_api_server():
    """A string where Kubernetes wants an integer is refused, although lax pydantic would coerce it."""
    body = run_body(sail={"rounds": "3"})
    assert SAILRun.model_validate(body).spec.sail.rounds == 3  # lax: coerced
    with pytest.raises(RunFileError, match=r"spec\.sail\.rounds: must be an integer \(got '3'\)"):
        parse_run(yaml.safe_dump(body), "x.yaml")


def test_integers_are_accepted_for_numbers():
    assert build_run(sail={"beta": 2000}).spec.sail.beta == 2000.0


def test_yaml_is_read_like_kubernetes_reads_it():
    text = yaml.safe_dump(run_body()) + "  sail:\n    beta: 2e3\n    train:\n      optimizer:\n        learningRate: 1e-6\n"
    text = text.replace("name: demo", "name: demo\n  annotations:\n    since: 2026-11-25T10:00:00Z")
    run = parse_run(text, "x.yaml")
    assert run.spec.sail.beta == 2000.0 and run.spec.sail.train.optimizer.learning_rate == 1e-6
    assert run.metadata.annotations == {"since": "2026-11-25T10:00:00Z"}  # a string, as in Kubernetes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the file is empty"),
        ("# just a comment\n", "the file is empty"),
        ("kind: SAILRun\nspec: [\n", "YAML syntax error at line 3, column 1"),
        ("a: 1\nb:\n\t- 2\n", "YAML syntax error at line 3, column 1"),
        ("kind: SAILRun\nkind: SAILRun\n", "line 2, column 1: duplicate key 'kind'"),
        ("kind: SAILRun\n---\nkind: SAILRun\n", "holds 2 YAML documents"),
        ("- kind: SAILRun\n", "must be a mapping with apiVersion, kind, metadata and spec (got a list"),
        ("apiVersion: apps/v1\nkind: Deployment\n", "kind: must be SAILRun (got 'Deployment')"),
        ("kind: SAILRun\n", "apiVersion: must be sail.dev/v1alpha1 (missing)"),
        ("apiVersion: sail.dev/v1\nkind: SAILRun\n", "apiVersion: must be sail.dev/v1alpha1 (got 'sail.dev/v1')"),
        ("apiVersion: sail.dev/v1alpha1\nkind: SAILRun\nmetadata: {name: demo}\n", "spec: required field is missing"),
    ],
    ids=["empty", "comments only", "unclosed list", "tab indent", "duplicate key", "two documents",
         "a list", "wrong kind", "no apiVersion", "wrong version", "no spec"],
)
def test_file_level_problems(text, expected):
    with pytest.raises(RunFileError) as info:
        parse_run(text, "run.yaml")
    assert str(info.value).startswith("run.yaml: 1 problem")
    assert expected in str(info.value)


def test_a_missing_file_is_a_run_file_error(tmp_path):
    with pytest.raises(RunFileError, match="cannot read the file"):
        load_run_file(tmp_path / "nope.yaml")


def test_paths_quote_map_keys_that_are_not_identifiers():
    assert format_path(("spec", "resources", "train", "limits", "nvidia.com/gpu")) == (
        'spec.resources.train.limits["nvidia.com/gpu"]'
    )
    assert format_path(("spec", "template", "tolerations", 2, "key")) == "spec.template.tolerations[2].key"


# ---------------------------------------------------------------- check_semantics


def test_a_plain_run_has_no_semantic_problems():
    assert check_semantics(build_run()) == []


SEMANTIC_CASES = [
    pytest.param({"sail": {"train": {"effectiveBatch": 128, "microBatch": 8}},
                  "parallelism": {"trainNodes": 1, "gpusPerNode": 3}},
                 "spec.sail.train.effectiveBatch: 128 is not a multiple of microBatch x devices = 8 x 3 = 24",
                 id="effective batch not a whole number of micro-batches over devices"),
    pytest.param({"sail": {"train": {"effectiveBatch": 64, "microBatch": 8}},
                  "parallelism": {"trainNodes": 2, "gpusPerNode": 8}},
                 "= 8 x 16 = 128", id="more devices than the effective batch can feed"),
    pytest.param({"resources": {"train": {"limits": {"nvidia.com/gpu": "4"}}}, "parallelism": {"gpusPerNode": 1}},
                 'spec.resources.train.limits["nvidia.com/gpu"]: 4 GPUs per pod but spec.parallelism.gpusPerNode is 1',
                 id="train pod GPUs differ from gpusPerNode"),
    pytest.param({"resources": {"generate": {"requests": {"nvidia.com/gpu": "1"}}}},
                 'spec.resources.generate.requests["nvidia.com/gpu"]: extended resources must be set in limits',
                 id="GPU only in requests"),
    pytest.param({"resources": {"annotate": {"requests": {"nvidia.com/gpu": "2"}, "limits": {"nvidia.com/gpu": "1"}}}},
                 "cannot be overcommitted", id="GPU request differs from limit"),
    pytest.param({"resources": {"mixup": {"requests": {"memory": "32Gi"}, "limits": {"memory": "16Gi"}}}},
                 'spec.resources.mixup.requests["memory"]: request 32Gi exceeds limit 16Gi',
                 id="memory request above limit"),
    pytest.param({"storage": {"uri": "s3://B/x"}}, "has no valid bucket name ('B')", id="bad bucket"),
    pytest.param({"storage": {"uri": "s3:///x"}}, "has no valid bucket name ('')", id="no bucket"),
    pytest.param({"storage": {"uri": "./runs/x", "credentialsSecretRef": {"name": "s3"}}},
                 "spec.storage: endpoint, region and credentialsSecretRef apply to s3:// only",
                 id="S3 settings with a local uri"),
    pytest.param({"storage": {"uri": "s3://bucket/x", "endpoint": "minio:9000"}},
                 "spec.storage.endpoint: 'minio:9000' needs a scheme, e.g. https://minio:9000",
                 id="endpoint without scheme"),
    pytest.param({"template": {"env": [{"name": "A"}, {"name": "A"}]}},
                 "spec.template.env[1].name: 'A' is set twice", id="duplicate env"),
    pytest.param({"template": {"env": [{"name": "A=B"}]}}, "must not contain '='", id="env name with ="),
    pytest.param({"template": {"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}},
                 "spec.template.tolerations[0].value: must be empty when operator is Exists",
                 id="Exists toleration with a value"),
    pytest.param({"template": {"tolerations": [{"operator": "Equal", "value": "v"}]}},
                 "an empty key needs operator Exists", id="empty key with Equal"),
    pytest.param({"template": {"tolerations": [{"key": "k", "operator": "Exists", "tolerationSeconds": 60}]}},
                 "tolerationSeconds: only valid with effect NoExecute", id="tolerationSeconds without NoExecute"),
    pytest.param({"queueName": "team queue"}, "spec.queueName: 'team queue' is not a valid label value",
                 id="queue name not a label value"),
    pytest.param({"startIteration": 5, "sail": {"rounds": 3}},
                 "spec.startIteration: 5 is past the last iteration (spec.sail.rounds = 3)",
                 id="rewind past the end"),
    pytest.param({"failurePolicy": {"backoff": {"initialSeconds": 60, "maxSeconds": 10}}},
                 "spec.failurePolicy.backoff.maxSeconds: 10 is below initialSeconds 60", id="backoff cap below start"),
    pytest.param({"model": {"uri": "s3://models/sd15", "revision": "main"}},
                 "spec.model.revision: only applies to hub ids", id="revision on a path"),
]


@pytest.mark.parametrize(("spec", "expected"), SEMANTIC_CASES)
def test_semantic_problem_is_reported_once_with_its_path(spec, expected):
    problems = check_semantics(build_run(**spec))
    assert len(problems) == 1, problems
    assert expected in problems[0]


@pytest.mark.parametrize(
    "spec",
    [
        {"sail": {"train": {"effectiveBatch": 128, "microBatch": 2}}, "parallelism": {"trainNodes": 2, "gpusPerNode": 8},
         "resources": {"train": {"limits": {"nvidia.com/gpu": "8"}, "requests": {"nvidia.com/gpu": "8"}}}},
        {"resources": {"train": {"requests": {"memory": "1Gi", "cpu": "500m"}, "limits": {"memory": "1024Mi", "cpu": "1"}}}},
        {"storage": {"uri": "s3://my.bucket-1/runs/x", "endpoint": "https://minio:9000", "region": "us-east-1"}},
        {"template": {"tolerations": [{"operator": "Exists"}, {"key": "k", "operator": "Equal", "value": "v",
                                                               "effect": "NoExecute", "tolerationSeconds": 5}]}},
        {"queueName": "team-a.gpu_queue", "startIteration": 3, "sail": {"rounds": 3}},
    ],
    ids=["multi-node batch that divides", "equal quantities in other units", "valid S3 settings",
         "valid tolerations", "valid queue and rewind"],
)
def test_near_misses_are_not_reported(spec):
    assert check_semantics(build_run(**spec)) == []


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", Decimal("0.5")), ("16Gi", Decimal(16 * 2**30)), ("1e3", Decimal(1000)), ("2", Decimal(2)),
     ("1.5k", Decimal(1500)), ("1E", Decimal(10**18))],
)
def test_parse_quantity(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["lots", "1Gb", "", "1..2"])
def test_parse_quantity_refuses_non_quantities(text):
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity(text)


def test_an_object_read_back_from_the_cluster_loads_with_its_status():
    """`kubectl get sailrun x -o yaml > run.yaml` output: server metadata, timestamps, status."""
    text = yaml.safe_dump(run_body()) + """\
status:
  state: Running
  currentIteration: 1
  currentPhase: annotate
  checkpoint: {uri: s3://b/run/iter-000/train/model, iteration: 0, time: 2026-11-25T10:00:00Z}
  conditions:
  - {type: Running, status: "True", reason: PhaseStarted, message: "",
     lastTransitionTime: 2026-11-25T10:00:00Z}
"""
    text = text.replace("name: demo", "name: demo\n  uid: 0b5c\n  resourceVersion: '42'\n"
                        "  creationTimestamp: 2026-11-25T09:00:00Z\n  generation: 3")
    run = parse_run(text, "run.yaml")
    assert run.status is not None and run.status.state == "Running"
    assert run.status.checkpoint.time == "2026-11-25T10:00:00Z"
    assert run.status.conditions[0].last_transition_time == "2026-11-25T10:00:00Z"
