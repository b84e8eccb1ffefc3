"""Good and bad SAILRun files get the same verdict from pydantic and from the generated CRD schema.

The API is written once. The "schema verdict" is what the API server would say: the CRD's
openAPIV3Schema as JSON Schema (`build_json_schema`: nullable, strict field validation,
name checks) plus every CEL rule evaluated with cel-python. The "pydantic verdict" is
`load_run_file`, the function behind `sail validate`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from sail_api.crd import build_json_schema, build_openapi_schema, iter_cel_rules
from sail_api.spec import SAILRun
from sail_api.validation import RunFileError, check_semantics, load_run_file, parse_yaml_documents

ROOT = Path(__file__).resolve().parents[2]
GOOD = sorted((ROOT / "examples").glob("*.yaml"))
BAD = sorted((ROOT / "examples" / "bad").glob("*.yaml"))


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft4Validator:
    schema = build_json_schema()
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return build_openapi_schema()


def schema_problems(document: dict[str, Any], validator, openapi) -> list[str]:
    """Everything the API server's schema check (types, bounds, CEL on create) refuses."""
    problems = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]
    if problems:
        return problems  # like the server: CEL runs only on a well-typed object
    celpy = pytest.importorskip("celpy", reason="cel-python (dev dependency) evaluates the CRD's CEL rules")
    env = celpy.Environment()
    for path, rule, value in iter_cel_rules(openapi, document):
        if "oldSelf" in rule["rule"]:
            continue  # transition rules do not run on create
        result = env.program(env.compile(rule["rule"])).evaluate({"self": celpy.json_to_cel(value)})
        assert isinstance(result, celpy.celtypes.BoolType), f"{path}: {rule['rule']} gave {result!r}"
        if not result:
            problems.append(f"{path}: {rule['message']}")
    return problems


def expected_error(path: Path) -> str:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name}: first line must be `# expect: <error substring>`"
    return first.removeprefix("# expect: ").strip()


def test_the_corpus_is_there():
    names = {path.name for path in GOOD}
    assert {"sd15.yaml", "sdxl.yaml"} <= names
    assert len(BAD) >= 10


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_good_example_is_accepted_by_pydantic_and_by_the_crd_schema(path, validator, openapi):
    run = load_run_file(path)
    (document,) = parse_yaml_documents(path.read_text(encoding="utf-8"), str(path))
    assert schema_problems(document, validator, openapi) == []
    assert check_semantics(run) == [], f"{path.name} should be a clean example"


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_server_side_defaults_do_not_change_what_the_trainer_sees(path, openapi):
    """The API server fills CRD defaults in; the parsed spec must be the one pydantic builds."""
    (document,) = parse_yaml_documents(path.read_text(encoding="utf-8"), str(path))
    defaulted = apply_defaults(openapi, copy.deepcopy(document))
    assert SAILRun.model_validate(defaulted).spec == SAILRun.model_validate(document).spec


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it: only inside objects that exist."""
    if isinstance(value, dict) and "properties" in schema:
        for name, child in schema["properties"].items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                apply_defaults(child, value[name])
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            apply_defaults(schema["items"], item)
    return value


def test_server_side_defaults_fill_every_defaulted_field(openapi):
    """Negative control for the test above: defaulting really adds fields."""
    (document,) = parse_yaml_documents((ROOT / "examples" / "bad" / "alpha-above-one.yaml").read_text())
    document["spec"]["sail"] = {}
    defaulted = apply_defaults(openapi, copy.deepcopy(document))
    assert defaulted["spec"]["sail"]["beta"] == 5000.0 and defaulted["spec"]["model"]["layout"] == "auto"


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_example_is_rejected_by_pydantic_with_the_expected_message(path):
    expected = expected_error(path)
    with pytest.raises(RunFileError) as info:
        load_run_file(path)
    message = str(info.value)
    assert str(path) in message, "the error must name the file"
    assert expected in message


def single_object(path: Path) -> dict[str, Any] | None:
    """The one mapping a file holds, or None (empty, broken YAML, several documents)."""
    try:
        documents = parse_yaml_documents(path.read_text(encoding="utf-8"), str(path))
    except RunFileError:
        return None
    return documents[0] if len(documents) == 1 and isinstance(documents[0], dict) else None


# Files that are not one object never reach a schema: YAML parsing refuses them first.
BAD_OBJECTS = [path for path in BAD if single_object(path) is not None]


@pytest.mark.parametrize("path", BAD_OBJECTS, ids=lambda p: p.name)
def test_bad_example_is_rejected_by_the_crd_schema_too(path, validator, openapi):
    """Files that are one YAML object must be refused by the server's checks as well."""
    assert schema_problems(single_object(path), validator, openapi), f"{path.name} passes the CRD schema"


def test_most_of_the_bad_corpus_reaches_the_schema():
    assert len(BAD_OBJECTS) >= len(BAD) - 3


def test_schema_verdict_is_not_vacuous(validator, openapi):
    """The schema check does reject and accept: a near-miss of a good example is refused."""
    (document,) = parse_yaml_documents((ROOT / "examples" / "sd15.yaml").read_text())
    assert schema_problems(document, validator, openapi) == []
    document["spec"]["sail"]["train"]["microBatch"] = 256
    assert any("microBatch" in problem for problem in schema_problems(document, validator, openapi))
    document["spec"]["sail"]["train"]["microBatch"] = "8"
    assert any("microBatch" in problem for problem in schema_problems(document, validator, openapi))
