"""Generated near-misses of examples/sd15.yaml: pydantic and the CRD schema must give the same verdict.

The hand-written bad corpus covers the mistakes people make; this table covers every field.
For each spec field the generator derives edits from the CRD schema itself (each bound and
one step past it, a wrong type, an unknown enum value, null, an unknown sibling key, a
missing required field) and asserts that `load_run_file`'s verdict (`validate_run_document`) equals
the API server's (JSON Schema view + CEL). A disagreement means the models and the CRD drifted.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from sail_api.crd import build_json_schema, build_openapi_schema, iter_cel_rules
from sail_api.validation import RunFileError, parse_yaml_documents, validate_run_document

ROOT = Path(__file__).resolve().parents[2]
MISSING = object()


def minimal(schema: dict[str, Any]) -> Any:
    """The smallest valid value of a schema node (to reach fields of absent objects and lists)."""
    kind = schema["type"]
    if "default" in schema:
        return copy.deepcopy(schema["default"])
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object":
        return {name: minimal(schema["properties"][name]) for name in schema.get("required", [])}
    if kind == "array":
        return [minimal(schema["items"])]
    if kind in ("integer", "number"):
        return schema.get("minimum", 0) + (1 if schema.get("exclusiveMinimum") else 0)
    if kind == "boolean":
        return False
    return "x" * max(schema.get("minLength", 1), 1)


def edits(schema: dict[str, Any]) -> list[tuple[str, Any]]:
    """(name, new value) edits of one leaf field, derived from its schema."""
    kind = schema["type"]
    # No null edit for enums: pydantic takes None for `Literal[...] | None` and the CRD says
    # enum + nullable, but whether the API server's enum check lets null through is not
    # something we can show without an API server; write such fields by leaving them out.
    out: list[tuple[str, Any]] = [("null", None)] if "enum" not in schema else []
    wrong_type = {"string": 7, "integer": "7", "number": "0.5", "boolean": "true", "object": 3, "array": {}}
    out.append(("wrong type", wrong_type[kind]))
    if kind in ("integer", "number"):
        step = 1 if kind == "integer" else 0.5
        for bound, sign in (("minimum", -1), ("maximum", +1)):
            if bound in schema:
                out += [(f"at {bound}", schema[bound]), (f"past {bound}", schema[bound] + sign * step)]
        if "multipleOf" in schema:
            out.append(("not a multiple", (schema.get("minimum", 0) or schema["multipleOf"]) + 1))
        if kind == "integer":
            out.append(("fraction", 2.5))
    if "enum" in schema:
        out += [("unknown enum value", "no-such-value"), ("each enum value", schema["enum"][-1])]
    if "minLength" in schema:
        out.append(("too short", ""))
    if "pattern" in schema:
        out.append(("pattern miss", "lots of"))
    return out


def walk(schema: dict[str, Any], path: tuple[Any, ...]):
    """Yield (path, leaf schema) for every scalar field of the spec, list items as index 0."""
    if schema["type"] == "object" and "properties" in schema:
        for name, child in schema["properties"].items():
            yield from walk(child, (*path, name))
    elif schema["type"] == "object":
        yield from walk(schema["additionalProperties"], (*path, "example.com/key"))
    elif schema["type"] == "array":
        yield from walk(schema["items"], (*path, 0))
    else:
        yield path, schema


def set_at(document: dict[str, Any], schema: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """A copy of `document` with `path` set (MISSING deletes), creating minimal parents on the way."""
    document = copy.deepcopy(document)
    node, node_schema = document, schema
    for part in path[:-1]:
        child_schema = _child_schema(node_schema, part)
        if isinstance(node, list):
            if not node:
                node.append(minimal(child_schema))
        elif part not in node or node[part] is None:
            node[part] = minimal(child_schema) if child_schema["type"] != "object" or "properties" in child_schema else {}
        node, node_schema = node[part], child_schema
    if value is MISSING:
        node.pop(path[-1], None)
    elif isinstance(node, list):
        node[0:1] = [value]
    else:
        node[path[-1]] = value
    return document


def _child_schema(schema: dict[str, Any], part: Any) -> dict[str, Any]:
    if schema["type"] == "array":
        return schema["items"]
    return schema["properties"].get(part) or schema["additionalProperties"]


def build_cases() -> list[Any]:
    schema = build_openapi_schema()
    (base,) = parse_yaml_documents((ROOT / "examples" / "sd15.yaml").read_text(encoding="utf-8"))
    cases = []
    for path, leaf in walk(schema["properties"]["spec"], ("spec",)):
        label = ".".join(str(p) for p in path)
        for name, value in edits(leaf):
            cases.append(pytest.param(set_at(base, schema, path, value), id=f"{label}: {name}"))
    for path, node in _objects(schema["properties"]["spec"], ("spec",)):
        label = ".".join(str(p) for p in path)
        cases.append(pytest.param(set_at(base, schema, (*path, "notAField"), 1), id=f"{label}: unknown key"))
        for required in node.get("required", []):
            cases.append(pytest.param(set_at(base, schema, (*path, required), MISSING),
                                      id=f"{label}.{required}: missing"))
    return cases


def _objects(schema: dict[str, Any], path: tuple[Any, ...]):
    if schema["type"] == "array":
        yield from _objects(schema["items"], (*path, 0))
    elif "properties" in schema:
        yield path, schema
        for name, child in schema["properties"].items():
            yield from _objects(child, (*path, name))


@cache
def _openapi() -> dict[str, Any]:
    return build_openapi_schema()


@cache
def _validator() -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(build_json_schema())


@cache
def _program(rule: str):
    celpy = pytest.importorskip("celpy", reason="cel-python (dev dependency) evaluates the CRD's CEL rules")
    env = celpy.Environment()
    return env.program(env.compile(rule))


def schema_accepts(document: dict[str, Any]) -> bool:
    if any(True for _ in _validator().iter_errors(document)):
        return False
    celpy = pytest.importorskip("celpy")
    for _, rule, value in iter_cel_rules(_openapi(), document):
        if "oldSelf" not in rule["rule"] and not _program(rule["rule"]).evaluate({"self": celpy.json_to_cel(value)}):
            return False
    return True


def pydantic_accepts(document: dict[str, Any]) -> bool:
    try:
        validate_run_document(document, "generated")
    except RunFileError:
        return False
    return True


CASES = build_cases()


def test_the_generator_covers_the_spec_with_both_verdicts():
    assert len(CASES) > 300
    verdicts = [pydantic_accepts(case.values[0]) for case in CASES]
    assert verdicts.count(True) > 50 and verdicts.count(False) > 150


@pytest.mark.parametrize("document", CASES)
def test_pydantic_and_the_crd_schema_agree(document, request):
    by_schema, by_pydantic = schema_accepts(document), pydantic_accepts(document)
    assert by_schema == by_pydantic, (
        f"{request.node.callspec.id}: CRD schema {'accepts' if by_schema else 'rejects'}, "
        f"pydantic {'accepts' if by_pydantic else 'rejects'}"
    )
