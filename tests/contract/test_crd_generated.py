"""The SAILRun CRD: generated from the pydantic models, committed without drift, structural,
accepted by Kubernetes' own CRD schema, with CEL rules that mean what pydantic means."""

from __future__ import annotations

import copy
import enum
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel, Field

from sail_api import crd as crd_module
from sail_api.crd import (
    API_REFERENCE_PATH,
    CHART_CRD_PATH,
    CRD_PATH,
    REGENERATE_COMMAND,
    build_crd,
    build_openapi_schema,
    render_chart_crd_template,
    render_crd_yaml,
    without_nulls,
)
from sail_api.spec import SAILRunSpec
from sail_api.status import SAILRunStatus

ROOT = Path(__file__).resolve().parents[2]
CEL_MISSING = "cel-python is not installed (dev dependency): `.venv/bin/pip install cel-python`"
KUBE_VERSION = "1.30.0"  # oldest Kubernetes we support: CEL fieldPath/reason need >= 1.28


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return build_crd()


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return build_openapi_schema()


def cel(rule: str, self_value: Any, old_value: Any = None) -> bool:
    """Evaluate one CEL rule with Kubernetes' variable names (self, oldSelf)."""
    celpy = pytest.importorskip("celpy", reason=CEL_MISSING)
    env = celpy.Environment()
    program = env.program(env.compile(rule))
    activation = {"self": celpy.json_to_cel(without_nulls(self_value))}
    if old_value is not None:
        activation["oldSelf"] = celpy.json_to_cel(without_nulls(old_value))
    result = program.evaluate(activation)
    assert isinstance(result, celpy.celtypes.BoolType), f"{rule!r} gave {result!r}, not a bool"
    return bool(result)


# ---------------------------------------------------------------- committed copies


@pytest.mark.parametrize(
    ("relative", "render"),
    [(CRD_PATH, render_crd_yaml), (CHART_CRD_PATH, render_chart_crd_template),
     (API_REFERENCE_PATH, crd_module.render_api_reference)],
    ids=["crds/ copy", "chart copy", "API reference"],
)
def test_committed_generated_file_matches_the_models(relative, render):
    committed = (ROOT / relative).read_text(encoding="utf-8") if (ROOT / relative).exists() else ""
    assert committed == render(), f"{relative} is stale: run `{REGENERATE_COMMAND}` and commit the result"


def test_chart_copy_is_the_same_crd_kept_on_uninstall_and_switchable(crd):
    text = (ROOT / CHART_CRD_PATH).read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[1] == "{{- if .Values.crds.install }}" and lines[-1] == "{{- end }}"
    chart_crd = yaml.safe_load("\n".join(lines[2:-1]))
    assert chart_crd["metadata"].pop("annotations") == {"helm.sh/resource-policy": "keep"}
    assert chart_crd == crd


def test_check_mode_reports_drift_and_names_the_command(tmp_path):
    stale = tmp_path / CRD_PATH
    stale.parent.mkdir(parents=True)
    stale.write_text("old\n")
    result = subprocess.run(
        [sys.executable, "-m", "sail_api.crd", "--check", "--root", str(tmp_path)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 1
    assert REGENERATE_COMMAND in result.stderr and str(CRD_PATH) in result.stderr


def test_write_mode_produces_the_files_the_check_accepts(tmp_path):
    written = crd_module.write_generated_files(tmp_path)
    assert set(written) == {CRD_PATH, CHART_CRD_PATH, API_REFERENCE_PATH}
    assert crd_module.find_stale_files(tmp_path) == []
    assert crd_module.write_generated_files(tmp_path) == []  # idempotent


# ---------------------------------------------------------------- Kubernetes accepts it


@pytest.mark.parametrize("version", [KUBE_VERSION, "1.37.0"])
def test_kubernetes_validate_strict_accepts_the_crd(crd, version):
    kubernetes_validate.validate(crd, version, strict=True)


def test_kubernetes_validate_strict_would_catch_a_misspelt_schema_key(crd):
    broken = copy.deepcopy(crd)
    broken["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["nulable"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSION, strict=True)


def test_names_version_and_status_subresource(crd):
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "sailruns.sail.dev" and spec["group"] == "sail.dev"
    assert spec["names"]["kind"] == "SAILRun" and spec["names"]["plural"] == "sailruns"
    assert spec["names"]["shortNames"] == ["sail"] and spec["names"]["categories"]
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def test_printer_columns_point_at_status_fields_that_exist(crd, schema):
    columns = {c["name"]: c for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert [name for name in columns if columns[name].get("priority", 0) == 0] == [
        "State", "Iteration", "Phase", "Progress", "Checkpoint", "Age"
    ]
    assert columns["Checkpoint"]["type"] == "date" and columns["Age"]["type"] == "date"
    for column in columns.values():
        path = column["jsonPath"].lstrip(".").split(".")
        if path[0] == "metadata":
            continue
        node = schema
        for part in path:
            node = node["properties"][part]
        assert node["type"] in ("string", "integer"), column


# ---------------------------------------------------------------- structural schema


def _walk(node: dict[str, Any], path: str):
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}.*")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")


def test_schema_is_structural_and_explained(schema):
    forbidden = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "title", "const", "$schema"}
    nodes = list(_walk(schema, ""))
    assert len(nodes) > 100
    for path, node in nodes:
        assert not forbidden & node.keys(), f"{path}: {forbidden & node.keys()}"
        assert node.get("type") in ("object", "array", "string", "integer", "number", "boolean"), path
        assert node.get("description") or path == ".metadata", f"{path}: no description for kubectl explain"
        if node["type"] == "object" and path != ".metadata":
            kinds = ("properties" in node) + ("additionalProperties" in node) + (
                "x-kubernetes-preserve-unknown-fields" in node)
            assert kinds == 1, f"{path}: an object needs exactly one of properties/map/preserve"
        if node.get("additionalProperties") is False:
            pytest.fail(f"{path}: additionalProperties false is not structural")
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert node.get(bound, True) is True, f"{path}: {bound} must be the OpenAPI v3.0 boolean"
    free_form = [path for path, node in nodes if "x-kubernetes-preserve-unknown-fields" in node]
    assert free_form == [], "nothing in SAILRun is free-form today; say why if that changes"


class _Level(enum.StrEnum):
    LOW = "low"
    HIGH = "high"


class _Item(BaseModel):
    """An item with its own docstring."""

    size: int = Field(2, gt=0, multiple_of=2, description="Even size.")


class _Sample(BaseModel):
    """A model exercising every conversion rule."""

    name: str = Field(min_length=1, max_length=9, pattern="^[a-z]+$", description="Name.")
    mode: typing.Literal["a", "b"] | None = Field(None, description="Mode.")
    level: _Level = Field(_Level.LOW, description="Level.")
    ratio: float = Field(0.5, gt=0, lt=1, description="Ratio.")
    items: list[_Item] = Field(default_factory=list, description="Items.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels.")
    extra: dict[str, typing.Any] = Field(default_factory=dict, description="Anything.")
    child: _Item | None = Field(None, description="A child.")


def test_conversion_rules_on_a_model_that_uses_all_of_them():
    out = crd_module.build_model_schema(_Sample, "sample", with_defaults=True)
    props = out["properties"]
    assert out["description"] == "A model exercising every conversion rule." and out["required"] == ["name"]
    assert props["name"] == {"type": "string", "description": "Name.", "minLength": 1, "maxLength": 9,
                             "pattern": "^[a-z]+$"}
    assert props["mode"] == {"type": "string", "description": "Mode.", "enum": ["a", "b"], "nullable": True}
    assert props["level"] == {"type": "string", "description": "Level.", "enum": ["low", "high"], "default": "low"}
    assert props["ratio"] == {"type": "number", "description": "Ratio.", "minimum": 0, "exclusiveMinimum": True,
                              "maximum": 1, "exclusiveMaximum": True, "default": 0.5}
    assert props["items"]["items"]["description"] == "An item with its own docstring."
    assert props["items"]["items"]["properties"]["size"]["multipleOf"] == 2
    assert props["labels"]["additionalProperties"]["type"] == "string"
    assert props["extra"]["x-kubernetes-preserve-unknown-fields"] is True
    assert props["child"]["nullable"] is True and props["child"]["description"] == "A child."
    assert "default" not in crd_module.build_model_schema(_Sample, "sample", with_defaults=False)["properties"]["level"]


def test_a_field_without_description_is_refused_with_its_path():
    class Bare(BaseModel):
        """Bare."""

        count: int = 1

    with pytest.raises(crd_module.CrdGenerationError, match=r"bare\.count: field has no description"):
        crd_module.build_model_schema(Bare, "bare", with_defaults=True)


def test_a_real_union_is_refused():
    class Either(BaseModel):
        """Either."""

        value: int | str = Field(description="Int or string.")

    with pytest.raises(crd_module.CrdGenerationError, match=r"either\.value: only `X \| None` unions"):
        crd_module.build_model_schema(Either, "either", with_defaults=True)


def test_schema_carries_pydantic_constraints_and_nullability(schema):
    sail = schema["properties"]["spec"]["properties"]["sail"]["properties"]
    assert (sail["alpha"]["minimum"], sail["alpha"]["maximum"], sail["alpha"]["default"]) == (0.0, 1.0, 0.25)
    assert sail["sampler"]["properties"]["resolution"]["multipleOf"] == 8
    assert sail["sampler"]["properties"]["kind"]["enum"] == ["ddpm", "ddim", "euler", "euler_ancestral", "dpmsolver"]
    learning_rate = sail["train"]["properties"]["optimizer"]["properties"]["learningRate"]
    assert learning_rate == {**learning_rate, "type": "number", "nullable": True, "minimum": 0.0,
                             "exclusiveMinimum": True}
    assert "default" not in learning_rate
    status = schema["properties"]["status"]["properties"]
    assert status["state"]["enum"] == ["Pending", "Running", "Retrying", "Suspended", "Succeeded", "Failed"]
    assert "default" not in status["state"], "status is written whole by the operator: no defaults"
    limits = schema["properties"]["spec"]["properties"]["resources"]["properties"]["train"]["properties"]["limits"]
    assert limits["additionalProperties"]["type"] == "string" and "pattern" in limits["additionalProperties"]


def _nested_model(annotation):
    """The pydantic model inside `X`, `X | None` or `list[X]`, if any."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
        inner = typing.get_args(candidate)
        if inner and isinstance(inner[0], type) and issubclass(inner[0], BaseModel):
            return inner[0]
    return None


@pytest.mark.parametrize(("model", "key"), [(SAILRunSpec, "spec"), (SAILRunStatus, "status")])
def test_every_pydantic_field_appears_in_the_schema_by_its_camel_case_name(schema, model, key):
    checked = []

    def check(model, node, path):
        node = node.get("items", node)
        assert set(node["properties"]) == {field.alias or name for name, field in model.model_fields.items()}, path
        for name, field in model.model_fields.items():
            alias = field.alias or name
            assert node["properties"][alias]["description"] == field.description, f"{path}.{alias}"
            checked.append(f"{path}.{alias}")
            nested = _nested_model(field.annotation)
            if nested is not None:
                check(nested, node["properties"][alias], f"{path}.{alias}")

    check(model, schema["properties"][key], key)
    assert len(checked) > 40


# ---------------------------------------------------------------- CEL rules


def _rules(node: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {rule["rule"]: rule for rule in node.get("x-kubernetes-validations", [])}


def _pydantic_allows(sail: dict[str, Any]) -> bool:
    body = {"model": {"uri": "m"}, "seedPairs": {"uri": "s"}, "prompts": {"uri": "p"}, "sail": sail}
    try:
        SAILRunSpec.model_validate(body)
    except ValueError:
        return False
    return True


def test_cel_rules_are_where_pydantic_has_code_validators(schema):
    spec = schema["properties"]["spec"]
    assert any("self.metadata.name.size() <= 40" == rule for rule in _rules(schema))
    assert any("oldSelf" in rule for rule in _rules(spec))
    assert any("microBatch" in rule for rule in _rules(spec["properties"]["sail"]["properties"]["train"]))
    assert any("s3://" in rule for rule in _rules(spec["properties"]["storage"]))
    for _, node in _walk(schema, ""):
        for rule in node.get("x-kubernetes-validations", []):
            assert rule["message"], rule


@pytest.mark.parametrize(
    ("name", "allowed"),
    [("a" * 40, True), ("a" * 41, False), ("sd15-paper", True), ("sd15.paper", False)],
    ids=["forty characters pass", "forty-one fail", "a DNS label passes", "a dot fails"],
)
def test_metadata_name_rules(schema, name, allowed):
    verdicts = [cel(rule, {"metadata": {"name": name}}) for rule in _rules(schema)]
    assert all(verdicts) is allowed


@pytest.mark.parametrize(
    ("train", "allowed"),
    [({}, True), ({"microBatch": 8, "effectiveBatch": 8}, True), ({"microBatch": 9, "effectiveBatch": 8}, False),
     ({"microBatch": 200}, False), ({"effectiveBatch": 4}, False)],
    ids=["defaults", "equal", "micro above effective", "micro above the default effective",
         "effective below the default micro"],
)
def test_micro_batch_rule_matches_pydantic_including_defaults(schema, train, allowed):
    (rule,) = _rules(schema["properties"]["spec"]["properties"]["sail"]["properties"]["train"])
    assert cel(rule, train) is allowed
    assert _pydantic_allows({"train": train}) is allowed


@pytest.mark.parametrize(
    ("range_", "allowed"),
    [({}, True), ({"minFraction": 0.5}, True), ({"maxFraction": 0.25}, True), ({"minFraction": 0.5, "maxFraction": 0.5}, False),
     ({"minFraction": 0.75, "maxFraction": 0.5}, False)],
    ids=["defaults", "upper half", "lower quarter", "empty", "reversed"],
)
def test_reward_timesteps_rule_matches_pydantic_including_defaults(schema, range_, allowed):
    (rule,) = _rules(schema["properties"]["spec"]["properties"]["sail"]["properties"]["rewardTimesteps"])
    assert cel(rule, range_) is allowed
    assert _pydantic_allows({"rewardTimesteps": range_}) is allowed


@pytest.mark.parametrize(
    ("old", "new", "allowed"),
    [
        ({}, {"storage": {"uri": "s3://b/x"}}, True),
        ({"storage": {}}, {"storage": {"uri": "s3://b/x"}}, True),
        ({"storage": {"uri": "s3://b/x"}}, {"storage": {"uri": "s3://b/x", "region": "eu"}}, True),
        ({"storage": {"uri": "s3://b/x"}}, {"storage": {"uri": "s3://b/y"}}, False),
        ({"storage": {"uri": "s3://b/x"}}, {"storage": {}}, False),
        ({"storage": {"uri": "s3://b/x"}}, {}, False),
        ({"storage": {"uri": None}}, {"storage": {"uri": "s3://b/x"}}, True),
        ({"storage": {"uri": "s3://b/x"}}, {"storage": {"uri": None}}, False),
    ],
    ids=["set for the first time", "set inside an existing storage", "other storage fields may change",
         "changing it is refused", "removing it is refused", "removing storage is refused",
         "an explicit null counts as unset", "nulling it is refused"],
)
def test_storage_uri_is_immutable_once_set(schema, old, new, allowed):
    (rule,) = _rules(schema["properties"]["spec"])
    assert cel(rule, new, old) is allowed


@pytest.mark.parametrize(
    ("uri", "allowed"),
    [("s3://b/run", True), ("file:///data/run", True), ("./runs/x", True), ("gs://b/run", False)],
)
def test_storage_scheme_rule(schema, uri, allowed):
    (rule,) = _rules(schema["properties"]["spec"]["properties"]["storage"])
    assert cel(rule, {"uri": uri}) is allowed
    assert cel(rule, {}) is True
    assert cel(rule, {"uri": None}) is True


def test_conditions_are_a_list_map_keyed_on_type_with_metav1_required_fields(schema):
    """As metav1.Condition lists are (`+listType=map`, `+listMapKey=type`): one entry per type, merged
    by type under server-side apply; lastTransitionTime and message required like metav1.Condition."""
    conditions = schema["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    required = set(conditions["items"]["required"])
    assert required == {"type", "status", "lastTransitionTime", "reason", "message"}
    assert "nullable" not in conditions["items"]["properties"]["lastTransitionTime"]


@pytest.mark.parametrize("missing", ["lastTransitionTime", "message"])
def test_the_model_refuses_a_condition_without_a_metav1_required_field(missing):
    condition = {"type": "Running", "status": "True", "reason": "PhaseStarted", "message": "",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"}
    del condition[missing]
    with pytest.raises(ValueError, match=missing):
        SAILRunStatus.model_validate({"conditions": [condition]})
