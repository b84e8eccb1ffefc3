"""Reading a SAILRun file, and the checks the schema cannot express.

`load_run_file(path)` turns a YAML file into a `SAILRun` or raises `RunFileError`, whose
message names the file and every offending field as a dotted camelCase path with the
fix (`spec.sail.alpha: must be <= 1 (got 1.5)`). It judges a file the way the API
server judges the same object: YAML is read like Kubernetes reads it (timestamps stay
strings, `1e-8` is a number, duplicate keys are an error), fields are matched by their
camelCase names only, and types are strict (`"8"` is not an integer). So `sail validate`
and `kubectl apply` agree, and a contract test holds them to it.

`check_semantics(run)` lists real problems that types and bounds cannot say: batch
arithmetic across devices, GPU counts, pod resources Kubernetes would refuse, storage
settings that would be ignored or fail. Cluster policy (allowed images, reserved env,
s3-only storage) is the operator's business (sail_operator.policy), not this module's.

Pure except for reading the one file in `load_run_file`.
"""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel

from sail_api.spec import API_GROUP, API_VERSION, KIND, ResourceRequirements, SAILRun
from sail_api.uris import UriKind, classify_uri, is_s3_uri, s3_bucket

EXAMPLE_HINT = "see examples/sd15.yaml and docs/api-reference.md"
_EXPECTED_API_VERSION = f"{API_GROUP}/{API_VERSION}"


class RunFileError(ValueError):
    """A SAILRun file that cannot be used; `problems` holds one `path: message` line each."""

    def __init__(self, path: str | Path, problems: list[str]) -> None:
        self.path = str(path)
        self.problems = list(problems)
        count = len(self.problems)
        heading = f"{self.path}: {count} problem{'s' if count != 1 else ''}"
        super().__init__(heading + "\n" + "\n".join(f"  - {problem}" for problem in self.problems))


# ---------------------------------------------------------------- YAML the way Kubernetes reads it


class _KubeYamlLoader(yaml.SafeLoader):
    """SafeLoader without timestamp parsing, with YAML 1.2 floats, refusing duplicate keys."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (Kubernetes rejects it; keep one)", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


    def compose_document(self) -> yaml.Node:
        node = super().compose_document()
        _check_expansion(node)
        return node


# What one document may expand to (nodes plus scalar characters, an alias counted at every use):
# a SAILRun is a few kilobytes, while a 705-byte "billion laughs" of nested aliases expands to
# gigabytes in json.dumps and pydantic. Checked on the composed node graph, before construction.
MAX_YAML_EXPANSION = 1_000_000


class YamlTooLarge(yaml.YAMLError):
    """A YAML document whose aliases expand beyond MAX_YAML_EXPANSION, or refer to themselves."""


def _check_expansion(root: yaml.Node | None) -> None:
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    reused = False

    def size(node: yaml.Node) -> int:
        nonlocal reused
        key = id(node)
        if key in sizes:
            reused = True
            return sizes[key]
        if key in open_nodes:
            raise YamlTooLarge("a YAML alias refers to the node that contains it (an endless structure); "
                               "write the values out")
        open_nodes.add(key)
        if isinstance(node, yaml.ScalarNode):
            total = 1 + len(node.value)
        elif isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        else:
            total = 1 + sum(size(child) for child in node.value)
        open_nodes.discard(key)
        if total > MAX_YAML_EXPANSION:
            why = "its aliases expand it to" if reused else "it holds"
            raise YamlTooLarge(f"the document is too large: {why} more than {MAX_YAML_EXPANSION} nodes and "
                               "characters (a SAILRun is a few kilobytes); write the values out without "
                               "nested anchors and aliases")
        sizes[key] = total
        return total

    if root is not None:
        size(root)


# PyYAML (YAML 1.1) reads `1e-8` as a string; Kubernetes reads it as a number.
_KubeYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)


def parse_yaml_documents(text: str, source: str = "<text>") -> list[Any]:
    """Every non-empty YAML document in `text`, read like Kubernetes reads manifests."""
    try:
        documents = list(yaml.load_all(text, Loader=_KubeYamlLoader))
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = error.problem or error.context or "invalid YAML"
        raise RunFileError(source, [f"YAML syntax error at {where}: {problem}; fix the YAML there"]) from error
    except YamlTooLarge as error:
        raise RunFileError(source, [str(error)]) from error
    except yaml.YAMLError as error:
        raise RunFileError(source, [f"not valid YAML: {error}"]) from error
    except RecursionError as error:
        raise RunFileError(source, ["YAML nested too deeply to be a SAILRun; fix the file's structure"]) from error
    return [document for document in documents if document is not None]


# ---------------------------------------------------------------- load_run_file


def load_run_file(path: str | Path) -> SAILRun:
    """Read and validate one SAILRun YAML file; raise RunFileError naming every problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RunFileError(source, [f"cannot read the file: {error}"]) from error
    return parse_run(text, source)


def parse_run(text: str, source: str = "<text>") -> SAILRun:
    """Validate the YAML text of one SAILRun; `source` names it in errors."""
    documents = parse_yaml_documents(text, source)
    if not documents:
        raise RunFileError(source, [f"the file is empty; a run file holds one SAILRun ({EXAMPLE_HINT})"])
    if len(documents) > 1:
        raise RunFileError(
            source,
            [f"the file holds {len(documents)} YAML documents; a run file holds exactly one SAILRun: "
             "split it into one file per run"],
        )
    return validate_run_document(documents[0], source)


def validate_run_document(document: Any, source: str = "<object>") -> SAILRun:
    """Validate one already-parsed SAILRun object (e.g. from the API server) with the same messages."""
    if not isinstance(document, dict):
        raise RunFileError(
            source,
            [f"the file must be a mapping with apiVersion, kind, metadata and spec "
             f"(got a {type(document).__name__}: {_shown(document)})"],
        )
    _check_envelope(document, source)
    try:
        body = json.dumps(document, allow_nan=False)
    except (TypeError, ValueError) as error:
        where = _find_unjsonable(document, ())
        at = f"{format_path(where)}: " if where else ""
        raise RunFileError(source, [f"{at}the file holds a value JSON cannot carry: {error}"]) from error
    try:
        return SAILRun.model_validate_json(body, strict=True, by_alias=True, by_name=False)
    except ValidationError as error:
        raise RunFileError(source, [format_error(item) for item in error.errors()]) from error


def _find_unjsonable(value: Any, path: tuple[int | str, ...], seen: set[int] | None = None
                     ) -> tuple[int | str, ...] | None:
    """Where a value JSON cannot carry sits (NaN, infinity, a cycle, a non-JSON type), to name the field."""
    seen = set() if seen is None else seen
    if isinstance(value, dict | list):
        if id(value) in seen:
            return path  # a YAML alias that contains itself
        seen.add(id(value))
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            found = _find_unjsonable(item, (*path, key), seen)
            if found is not None:
                return found
        seen.discard(id(value))
        return None
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return path
    return None if value is None or isinstance(value, str | int | float | bool) else path


def _check_envelope(document: dict[str, Any], source: str) -> None:
    """kind and apiVersion first: a Deployment should not produce forty field errors."""
    kind, api_version = document.get("kind"), document.get("apiVersion")
    if kind != KIND:
        got = "missing" if kind is None else f"got {_shown(kind)}"
        raise RunFileError(source, [f"kind: must be {KIND} ({got}); this file does not describe a SAILRun"])
    if api_version != _EXPECTED_API_VERSION:
        got = "missing" if api_version is None else f"got {_shown(api_version)}"
        raise RunFileError(source, [f"apiVersion: must be {_EXPECTED_API_VERSION} ({got})"])


# ---------------------------------------------------------------- pydantic errors -> field messages


def format_path(loc: tuple[int | str, ...]) -> str:
    """('spec', 'template', 'env', 0, 'name') -> 'spec.template.env[0].name'; odd map keys quoted."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            text += f".{part}" if text else part
        else:
            text += f"[{json.dumps(part)}]"
    return text or "(top level)"


def _shown(value: Any, limit: int = 60) -> str:
    try:
        text = json.dumps(value) if not isinstance(value, str) else repr(value)
    except (TypeError, ValueError, RecursionError):
        # Self-referencing YAML aliases (`kind: &a [*a]`) and other unserialisable values.
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


_BOUNDS = {
    "less_than_equal": ("<=", "le"), "less_than": ("<", "lt"),
    "greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"),
    "multiple_of": ("a multiple of", "multiple_of"),
}
_EXPECTED_TYPE = {
    "string_type": "a string", "int_type": "an integer", "int_parsing": "an integer",
    "int_from_float": "an integer", "float_type": "a number", "float_parsing": "a number",
    "bool_type": "true or false", "bool_parsing": "true or false", "model_type": "a mapping of fields",
    "model_attributes_type": "a mapping of fields", "dict_type": "a mapping of fields", "list_type": "a list",
}


def format_error(error: Any) -> str:
    """One pydantic error -> `dotted.path: what is wrong (got X); how to fix`."""
    return f"{format_path(tuple(error['loc']))}: {_describe(error)}"


def _describe(error: Any) -> str:
    kind, ctx, got = error["type"], error.get("ctx") or {}, error.get("input")
    if kind in _BOUNDS:
        symbol, key = _BOUNDS[kind]
        return f"must be {symbol} {_number(ctx[key])} (got {_shown(got)})"
    if kind in _EXPECTED_TYPE:
        return f"must be {_EXPECTED_TYPE[kind]} (got {_shown(got)}){_type_hint(kind, got)}"
    if kind == "missing":
        return f"required field is missing; add it ({EXAMPLE_HINT})"
    if kind == "extra_forbidden":
        return f"unknown field{_suggestion(tuple(error['loc']))}"
    if kind in ("literal_error", "enum"):
        return f"must be one of {ctx.get('expected', '?')} (got {_shown(got)})"
    if kind in ("string_too_short", "string_too_long"):
        word, key = ("at least", "min_length") if kind == "string_too_short" else ("at most", "max_length")
        return f"must have {word} {ctx[key]} characters (got {_shown(got)})"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return f"{error['msg']} (got {_shown(got)})"


def _type_hint(kind: str, got: Any) -> str:
    """The usual YAML slip behind a type error: a quoted number, or an unquoted one."""
    if kind == "string_type" and isinstance(got, int | float) and not isinstance(got, bool):
        return f"; quote it, e.g. '{got}'"
    if kind != "string_type" and _EXPECTED_TYPE[kind] in ("an integer", "a number") and isinstance(got, str):
        return "; write it without quotes"
    return ""


def _suggestion(loc: tuple[int | str, ...]) -> str:
    """For an unknown field: the closest real field of that object, and the camelCase rule."""
    owner = _model_at(SAILRun, loc[:-1])
    if owner is None:
        return ""
    names = [field.alias or name for name, field in owner.model_fields.items()]
    key = str(loc[-1])
    if to_camel(key) in names and to_camel(key) != key:
        return f"; fields are camelCase: write {to_camel(key)!r}"
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; known fields here: {', '.join(names)}"


def _model_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The pydantic model that validates the object at `loc` (wire names), if there is one."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            if isinstance(part, int) and typing.get_origin(current) is list:
                current = typing.get_args(current)[0]
                continue
            return None
        by_wire = {(field.alias or name): field for name, field in current.model_fields.items()}
        if part not in by_wire:
            return None
        current = by_wire[part].annotation
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """`X | None` -> X."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return options[0] if len(options) == 1 else annotation
    return annotation


# ---------------------------------------------------------------- semantics


_QUANTITY_SUFFIXES = {
    "": 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes quantity ('500m', '16Gi', '1e3') as a Decimal; ValueError if it is not one."""
    match = re.fullmatch(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)([a-zA-Z]*)", text.strip())
    if not match or match.group(2) not in _QUANTITY_SUFFIXES:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    try:
        return Decimal(match.group(1)) * Decimal(_QUANTITY_SUFFIXES[match.group(2)])
    except InvalidOperation as error:
        raise ValueError(f"{text!r} is not a Kubernetes quantity") from error


def check_semantics(run: SAILRun) -> list[str]:
    """Real problems the schema cannot express, each `spec.path: problem; fix`. Empty when fine."""
    spec = run.spec
    problems = _check_batch(run) + _check_gpus(run)
    for phase in ("generate", "annotate", "mixup", "train", "evaluate"):
        problems += _check_pod_resources(f"spec.resources.{phase}", getattr(spec.resources, phase))
    problems += _check_storage(run) + _check_template(run) + _check_execution(run) + _check_validation(run)
    problems += _check_evaluation(run)
    if spec.model.revision is not None and (classify_uri(spec.model.uri) in (UriKind.S3, UriKind.FILE)
                                            or spec.model.uri.startswith(("/", "."))):
        problems.append(
            "spec.model.revision: only applies to hub ids, but spec.model.uri is a path or s3:// URI; "
            "remove revision or point uri at the exact folder"
        )
    return problems


def check_run(run: SAILRun, cluster_rules: Callable[[SAILRun], list[str]] | None = None) -> list[str]:
    """The one verdict on a parsed SAILRun, shared by `sail validate`, `sail run` and the operator.

    `check_semantics` (which includes the API server's own rules for the names and label values
    the run's Jobs carry), plus `cluster_rules` -- the operator's admin policy and s3 storage --
    when the run is judged for a cluster. Empty when the run is fine.
    """
    return check_semantics(run) + (cluster_rules(run) if cluster_rules is not None else [])


def _check_batch(run: SAILRun) -> list[str]:
    """Gradient accumulation needs a whole number of micro-batches per optimizer step."""
    train, parallel = run.spec.sail.train, run.spec.parallelism
    devices = parallel.train_nodes * max(parallel.gpus_per_node, 1)
    per_pass = train.micro_batch * devices
    if train.effective_batch % per_pass == 0:
        return []
    return [
        f"spec.sail.train.effectiveBatch: {train.effective_batch} is not a multiple of microBatch x devices "
        f"= {train.micro_batch} x {devices} = {per_pass} (devices = parallelism.trainNodes x gpusPerNode); "
        "gradient accumulation needs a whole number of micro-batches: change effectiveBatch, microBatch "
        "or the parallelism"
    ]


def _check_gpus(run: SAILRun) -> list[str]:
    """The trainer starts gpusPerNode processes per pod; the pod must get exactly that many GPUs."""
    resources = run.spec.resources.train
    wanted = run.spec.parallelism.gpus_per_node
    problems = []
    for kind, table in (("limits", resources.limits), ("requests", resources.requests)):
        for name, quantity in table.items():
            if not name.endswith("/gpu"):
                continue
            given = _quantity_or_none(quantity)
            if given is not None and given != wanted:
                problems.append(
                    f"spec.resources.train.{kind}[{json.dumps(name)}]: {quantity} GPUs per pod but "
                    f"spec.parallelism.gpusPerNode is {wanted}; the trainer starts one process per GPU "
                    "from gpusPerNode: make them equal"
                )
    return problems


def _quantity_or_none(text: str) -> Decimal | None:
    try:
        return parse_quantity(text)
    except ValueError:
        return None


def _check_pod_resources(path: str, resources: ResourceRequirements) -> list[str]:
    """What the API server would refuse when the Job's pod is created, found before the run starts."""
    problems = []
    for name, request in resources.requests.items():
        limit = resources.limits.get(name)
        extended = "/" in name  # e.g. nvidia.com/gpu: never overcommitted, limits required
        if extended and limit is None:
            problems.append(
                f"{path}.requests[{json.dumps(name)}]: extended resources must be set in limits "
                f"(Kubernetes refuses the pod otherwise); move it to {path}.limits"
            )
        elif extended and _quantity_or_none(limit) != _quantity_or_none(request):
            problems.append(
                f"{path}.requests[{json.dumps(name)}]: {request} differs from the limit {limit}; "
                "extended resources cannot be overcommitted: make them equal or drop the request"
            )
        elif limit is not None and (_quantity_or_none(request) or 0) > (_quantity_or_none(limit) or 0):
            problems.append(
                f"{path}.requests[{json.dumps(name)}]: request {request} exceeds limit {limit}; "
                "Kubernetes refuses the pod: raise the limit or lower the request"
            )
    return problems


def _check_storage(run: SAILRun) -> list[str]:
    storage = run.spec.storage
    uri = storage.uri or ""
    problems = []
    if is_s3_uri(uri):
        bucket = s3_bucket(uri)
        if not _BUCKET.match(bucket):
            problems.append(
                f"spec.storage.uri: {uri!r} has no valid bucket name ({bucket!r}); write s3://BUCKET/PREFIX "
                "with a bucket of 3-63 lower-case letters, digits, '.' or '-'"
            )
    elif storage.endpoint or storage.region or storage.credentials_secret_ref:
        problems.append(
            "spec.storage: endpoint, region and credentialsSecretRef apply to s3:// only, but uri is "
            f"{uri or 'unset'!r} (local); set uri to s3://BUCKET/PREFIX or remove them"
        )
    if storage.endpoint and not storage.endpoint.startswith(("http://", "https://")):
        problems.append(
            f"spec.storage.endpoint: {storage.endpoint!r} needs a scheme, e.g. https://{storage.endpoint}"
        )
    return problems


def _check_template(run: SAILRun) -> list[str]:
    """Pod-template values the API server would refuse at Job creation."""
    problems = []
    seen: set[str] = set()
    for index, env in enumerate(run.spec.template.env):
        if "=" in env.name:
            problems.append(f"spec.template.env[{index}].name: {env.name!r} must not contain '='")
        if env.name in seen:
            problems.append(f"spec.template.env[{index}].name: {env.name!r} is set twice; keep one")
        seen.add(env.name)
    for key, value in run.spec.template.node_selector.items():
        if not _LABEL_VALUE.match(value) or len(value) > 63:
            problems.append(f"spec.template.nodeSelector[{json.dumps(key)}]: {value!r} is not a valid label value "
                            "(Kubernetes refuses the pod): at most 63 letters, digits, '-', '_', '.', "
                            "starting and ending alphanumeric")
    for path, name in (("spec.template.serviceAccountName", run.spec.template.service_account_name),
                       ("spec.template.priorityClassName", run.spec.template.priority_class_name)):
        if name is not None and not _DNS_SUBDOMAIN.match(name):
            problems.append(f"{path}: {name!r} is not a valid object name (Kubernetes refuses the Job): "
                            "lower-case letters, digits, '-' and '.'")
    for index, toleration in enumerate(run.spec.template.tolerations):
        path = f"spec.template.tolerations[{index}]"
        if toleration.operator == "Exists" and toleration.value:
            problems.append(f"{path}.value: must be empty when operator is Exists; remove value or use Equal")
        if not toleration.key and toleration.operator != "Exists":
            problems.append(f"{path}.operator: an empty key needs operator Exists (it matches every taint)")
        if toleration.toleration_seconds is not None and toleration.effect != "NoExecute":
            problems.append(f"{path}.tolerationSeconds: only valid with effect NoExecute; set effect or remove it")
    return problems


def _check_execution(run: SAILRun) -> list[str]:
    spec = run.spec
    problems = []
    if spec.queue_name is not None and not _LABEL_VALUE.match(spec.queue_name):
        problems.append(
            f"spec.queueName: {spec.queue_name!r} is not a valid label value (it becomes "
            "kueue.x-k8s.io/queue-name): letters, digits, '-', '_', '.', starting and ending alphanumeric"
        )
    if spec.start_iteration is not None and spec.start_iteration > spec.sail.rounds:
        problems.append(
            f"spec.startIteration: {spec.start_iteration} is past the last iteration "
            f"(spec.sail.rounds = {spec.sail.rounds}); use 0..{spec.sail.rounds}"
        )
    backoff = spec.failure_policy.backoff
    if backoff.max_seconds < backoff.initial_seconds:
        problems.append(
            f"spec.failurePolicy.backoff.maxSeconds: {_number(backoff.max_seconds)} is below initialSeconds "
            f"{_number(backoff.initial_seconds)}, so every retry waits maxSeconds; raise it or lower initialSeconds"
        )
    return problems


def _check_validation(run: SAILRun) -> list[str]:
    """A held-out slice must leave seed pairs to train on; known here only when seedPairs.limit is set
    (otherwise step 0's mixup checks it against the real count, before any training)."""
    validation, limit = run.spec.sail.validation, run.spec.seed_pairs.limit
    if validation.uri or limit is None or validation.fraction == 0:
        return []
    held = min(validation.max_pairs, round(validation.fraction * limit))
    if held < limit:
        return []
    return [
        f"spec.sail.validation.fraction: {validation.fraction} of seedPairs.limit = {limit} pairs holds out "
        f"{held}, leaving no seed pair to train on; lower the fraction, set it to 0, or give separate held-out "
        "pairs in sail.validation.uri"
    ]


def _check_evaluation(run: SAILRun) -> list[str]:
    """Evaluation prompts default to the held-out pairs' captions: there must be some; a gated scorer must exist."""
    evaluation, gate = run.spec.evaluation, run.spec.round_gate
    known = {s.name for s in evaluation.scorers} if evaluation else set()
    problems = [f"spec.roundGate.scorers[{k}]: {name!r} is not a scorer of spec.evaluation.scorers "
                f"({', '.join(sorted(known)) or 'none: spec.evaluation is unset'}); name one of them"
                for k, name in enumerate(gate.scorers if gate else []) if name not in known]
    return problems + _check_evaluation_prompts(run)


def _check_evaluation_prompts(run: SAILRun) -> list[str]:
    evaluation, validation = run.spec.evaluation, run.spec.sail.validation
    if evaluation is None or evaluation.prompts is not None or validation.uri or validation.fraction > 0:
        return []
    return [
        "spec.evaluation.prompts: unset, so evaluation uses the held-out pairs' captions, but "
        "spec.sail.validation.fraction is 0 and validation.uri is unset (no held-out pairs); give "
        "spec.evaluation.prompts.uri or hold out pairs (sail.validation)"
    ]
