"""What a namespace user may make the operator do: the admin's policy, checked per SAILRun.

A user who may create SAILRuns but not Pods must not gain more through the operator than
the trainer image running as the workload ServiceAccount. The API itself cannot express
hostPath volumes, privileged containers, extra capabilities or cross-namespace secrets, so
those are impossible by construction; what remains a choice is the image, the service
account, the node placement, the priority, the storage and data locations, the S3 endpoint,
the pod's size and its environment, and the admin restricts them here (operator config, set
from the chart). Everything a user can set is allow-listed with a safe default: no custom
endpoints, no local paths on a cluster, no GPU-runtime variables, no node pinning by hostname
or to control-plane nodes, bounded pod resources. Pure: no I/O; the reconcile reports
violations as Validated=False like any other spec error, each naming the field and the
policy value (chart: `policy.<name>`) that would allow it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from sail_api.spec import SAILRunSpec
from sail_api.uris import is_s3_uri, strip_file_scheme, uri_path
from sail_api.validation import parse_quantity
from sail_operator.budget import compute_budget_violations

# Variables the trainer's environment reserves: a user-set value would redirect credentials
# or the storage endpoint, or spoof the shard index / rendezvous of a phase.
RESERVED_ENV_PREFIXES = ("AWS_", "SAIL_", "PET_", "JOB_COMPLETION_INDEX", "MASTER_", "RANK", "WORLD_SIZE")
# Variables the GPU container runtime (NVIDIA container toolkit, ROCm, Habana, Neuron) or the
# driver honours to choose devices and driver features: `NVIDIA_VISIBLE_DEVICES=all` shows a
# pod every GPU of its node. GPUs come only from the pod's resource limits; no policy value
# allows these (an admin who really wants one can still set it in the image).
GPU_RUNTIME_ENV_PREFIXES = ("NVIDIA_", "CUDA_VISIBLE_DEVICES", "CUDA_MPS_", "HIP_VISIBLE_DEVICES",
                            "ROCR_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL", "HABANA_VISIBLE_", "NEURON_RT_VISIBLE_")
NAMESPACE_PLACEHOLDER = "{namespace}"
# Labels the operator sets on its Jobs and pods itself: never copied from the SAILRun.
RESERVED_LABEL_PREFIXES = ("sail.dev/", "app.kubernetes.io/managed-by", "batch.kubernetes.io/",
                           "controller-uid", "job-name", "kueue.x-k8s.io/queue-name")


@dataclass(frozen=True)
class OperatorPolicy:
    """Admin-controlled limits; the defaults are the safe ones.

    Chart values use the camelCase of each field name (`allowed_images` -> `policy.allowedImages`).
    """

    # fnmatch's `*` crosses '/', so patterns pin the registry and repository, not just the name.
    allowed_images: tuple[str, ...] = ("ghcr.io/sail-dev/sail-trainer:*", "ghcr.io/sail-dev/sail-trainer@sha256:*")
    allowed_service_accounts: tuple[str, ...] = ()  # empty: only the chart's workload SA (unset field)
    allowed_priority_classes: tuple[str, ...] = ()  # empty: none may be set
    allowed_node_selector_keys: tuple[str, ...] = ("*",)
    # Keys refused even when allowed above: pinning to one node, or onto control-plane nodes.
    forbidden_node_selector_keys: tuple[str, ...] = ("kubernetes.io/hostname", "node-role.kubernetes.io/*")
    # Taint keys a SAILRun may tolerate; a toleration without a key tolerates every taint
    # (dedicated and control-plane nodes too) and is refused unless "*" is allowed.
    allowed_toleration_keys: tuple[str, ...] = ("nvidia.com/gpu",)
    require_s3_storage: bool = True
    # spec.storage.uri must lie under one of these (`{namespace}` is the run's namespace), e.g.
    # "s3://runs/{namespace}/"; empty: anywhere (then one IAM role per namespace is the isolation).
    storage_prefixes: tuple[str, ...] = ()
    # fnmatch patterns (`{namespace}` substituted) for model.uri, seedPairs.uri and prompts.uri;
    # file:// URIs are matched as their path. Default: S3 only (no pod-local files, no hub ids).
    allowed_data_uris: tuple[str, ...] = ("s3://*",)
    # fnmatch patterns for spec.storage.endpoint (http/https only); empty: no custom endpoint,
    # the AWS S3 endpoint of the region. Responses of an endpoint reach pod logs (SSRF).
    allowed_endpoints: tuple[str, ...] = ()
    # Phase pods get AWS_EC2_METADATA_DISABLED=true unless this is set: otherwise, with no Secret
    # and no IRSA, boto3 falls back to the node's instance role, shared by every tenant.
    allow_instance_metadata: bool = False
    max_train_nodes: int = 16
    max_shards: int = 256
    # Per-pod caps on requests and limits of every phase; resources not named are not capped.
    max_pod_resources: dict[str, str] = field(hash=False, default_factory=lambda: {
        "cpu": "256", "memory": "2Ti", "nvidia.com/gpu": "8", "ephemeral-storage": "2Ti"})
    # sizeLimit of the emptyDirs every phase pod gets ("" : none).
    tmp_size_limit: str = "50Gi"
    cache_size_limit: str = "200Gi"
    shm_size_limit: str = "16Gi"
    # SAILRun metadata.labels whose keys match are copied onto its Jobs and pods (Kueue
    # priority class, cost labels); empty: none. The operator's own keys are never copied.
    job_label_keys: tuple[str, ...] = ()
    extra_forbidden_env: tuple[str, ...] = field(default_factory=tuple)
    # Cost budget per iteration (step 0 or one round), from `sail plan`'s estimate; 0: no limit.
    max_round_gpu_hours: float = 0.0
    max_round_storage_bytes: int = 0

    def __post_init__(self) -> None:
        # A string where a list belongs would be iterated character by character by fnmatch
        # (allowedImages: "*" would allow every image): refuse it, whoever builds the policy.
        for item in fields(self):
            value, name = getattr(self, item.name), policy_key(item.name)
            expected = _field_kind(item.name)
            if expected == "list":
                if not isinstance(value, tuple | list) or not all(isinstance(v, str) for v in value):
                    raise ValueError(f"policy.{name} must be a list of strings (got {_shown(value)})")
                object.__setattr__(self, item.name, tuple(value))
            elif expected == "map":
                if not isinstance(value, Mapping) or not all(
                        isinstance(k, str) and isinstance(v, str | int) and not isinstance(v, bool)
                        for k, v in value.items()):
                    raise ValueError(f"policy.{name} must be a mapping of resource name to quantity "
                                     f"(got {_shown(value)})")
                for key, quantity in value.items():
                    try:
                        parse_quantity(str(quantity))
                    except ValueError as error:
                        raise ValueError(f"policy.{name}.{key}: {error}") from error
                object.__setattr__(self, item.name, {k: str(v) for k, v in value.items()})
            elif expected is bool and not isinstance(value, bool):
                raise ValueError(f"policy.{name} must be true or false (got {_shown(value)})")
            elif expected is int and (not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError(f"policy.{name} must be an integer (got {_shown(value)})")
            elif expected is str and not isinstance(value, str):
                raise ValueError(f"policy.{name} must be a string (got {_shown(value)})")
            elif expected is float:
                if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                    raise ValueError(f"policy.{name} must be a number >= 0 (got {_shown(value)})")
                object.__setattr__(self, item.name, float(value))


def _field_kind(name: str) -> Any:
    annotation = str(OperatorPolicy.__dataclass_fields__[name].type)
    if annotation.startswith("tuple"):
        return "list"
    if annotation.startswith("dict"):
        return "map"
    return {"bool": bool, "int": int, "float": float, "str": str}[annotation]


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def policy_key(name: str) -> str:
    """The chart/policy-file key of a field: `allowed_images` -> `allowedImages`."""
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def parse_policy(data: Any, source: str = "policy") -> OperatorPolicy:
    """The policy from the chart's JSON object (camelCase keys); ValueError naming `source` and the key."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: the policy must be a JSON object (got {type(data).__name__})")
    known = {policy_key(item.name): item.name for item in fields(OperatorPolicy)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{source}: unknown policy keys {unknown}; known: {sorted(known)}")
    try:
        return OperatorPolicy(**{known[key]: value for key, value in data.items()})
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from error


def _matches(value: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns)


def _for_namespace(patterns: tuple[str, ...], namespace: str) -> tuple[str, ...]:
    return tuple(pattern.replace(NAMESPACE_PLACEHOLDER, namespace) for pattern in patterns)


def _listed(patterns: tuple[str, ...]) -> str:
    return ", ".join(repr(pattern) for pattern in patterns) if patterns else "none"


def _has_dot_segments(uri: str) -> bool:
    path = uri_path(uri)
    return any(part in ("..", ".") for part in path.split("/"))


def _data_path(uri: str) -> str:
    """What data patterns are matched against: file:// URIs as their path."""
    return strip_file_scheme(uri)


def check_endpoint(endpoint: str, policy: OperatorPolicy) -> list[str]:
    """spec.storage.endpoint: http(s) only, no credentials/query in the URL, and allow-listed."""
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018  (raises ValueError for a malformed port)
    except ValueError as error:
        return [f"spec.storage.endpoint {endpoint!r} is not a URL ({error}); write https://HOST[:PORT]"]
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [f"spec.storage.endpoint {endpoint!r} must be an http:// or https:// URL with a host "
                "(e.g. https://minio.storage.svc:9000)"]
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        return [f"spec.storage.endpoint {endpoint!r} may not carry user info, a query or a fragment; "
                "credentials come from spec.storage.credentialsSecretRef"]
    if not _matches(endpoint.rstrip("/"), tuple(pattern.rstrip("/") for pattern in policy.allowed_endpoints)):
        return [f"spec.storage.endpoint {endpoint!r} is not allowed by the operator policy "
                f"(policy.allowedEndpoints: {_listed(policy.allowed_endpoints)}); omit it to use AWS S3 in "
                "spec.storage.region, or ask the cluster admin to add it to policy.allowedEndpoints"]
    return []


def check_storage(spec: SAILRunSpec, policy: OperatorPolicy, namespace: str) -> list[str]:
    """The run root: s3:// on a cluster, no dot segments, under the namespace's prefix when one is set."""
    problems: list[str] = []
    uri = spec.storage.uri
    if policy.require_s3_storage and not is_s3_uri(uri or ""):
        problems.append(
            f"spec.storage.uri {uri!r} must be an s3:// URI on a cluster (phase pods share nothing else); "
            "local folders are for `sail run` on one machine"
        )
    if uri and _has_dot_segments(uri):
        problems.append(f"spec.storage.uri {uri!r} has a '.' or '..' path segment; write the prefix plainly "
                        "(keys are stored literally, so '..' would not even go up)")
    elif uri and policy.storage_prefixes:
        prefixes = _for_namespace(policy.storage_prefixes, namespace)
        if not any((uri.rstrip("/") + "/").startswith(prefix.rstrip("/") + "/") for prefix in prefixes):
            problems.append(
                f"spec.storage.uri {uri!r} is outside this namespace's storage (policy.storagePrefixes: "
                f"{_listed(prefixes)}); put the run under {prefixes[0].rstrip('/')}/<run>"
            )
    if spec.storage.endpoint:
        problems += check_endpoint(spec.storage.endpoint, policy)
    return problems


def check_data_uris(spec: SAILRunSpec, policy: OperatorPolicy, namespace: str) -> list[str]:
    """model.uri, seedPairs.uri, prompts.uri: allow-listed (default s3:// only), no dot segments."""
    problems: list[str] = []
    patterns = _for_namespace(policy.allowed_data_uris, namespace)
    for path, uri in (("spec.model.uri", spec.model.uri), ("spec.seedPairs.uri", spec.seed_pairs.uri),
                      ("spec.prompts.uri", spec.prompts.uri), *evaluation_uris(spec)):
        if _has_dot_segments(uri):
            problems.append(f"{path} {uri!r} has a '.' or '..' path segment; name the data plainly")
        elif not _matches(_data_path(uri), patterns):
            kind = "a local path (or hub id)" if not is_s3_uri(uri) else "this location"
            problems.append(
                f"{path} {uri!r} is not allowed on a cluster (policy.allowedDataUris: {_listed(patterns)}): "
                f"{kind} would be read by the phase pod and copied into the run's storage; copy the data to "
                "S3, or ask the cluster admin to add a pattern to policy.allowedDataUris"
            )
    return problems


def evaluation_uris(spec: SAILRunSpec) -> list[tuple[str, str]]:
    """(field, uri) of the evaluate phase's inputs: CLIP scorer folders and the evaluation prompts."""
    evaluation = spec.evaluation
    if evaluation is None:
        return []
    found = [(f"spec.evaluation.scorers[{k}].clip.uri", s.clip.uri) for k, s in enumerate(evaluation.scorers) if s.clip]
    if evaluation.prompts is not None:
        found.append(("spec.evaluation.prompts.uri", evaluation.prompts.uri))
    return found


def check_env(spec: SAILRunSpec, policy: OperatorPolicy) -> list[str]:
    problems: list[str] = []
    forbidden = RESERVED_ENV_PREFIXES + policy.extra_forbidden_env
    for index, env in enumerate(spec.template.env):
        if env.name.startswith(GPU_RUNTIME_ENV_PREFIXES):
            problems.append(
                f"spec.template.env[{index}].name {env.name!r} selects GPUs or driver features at the container "
                "runtime and could expose devices outside the pod's allocation; GPUs come only from "
                "spec.resources.<phase>.limits (no policy value allows these names: "
                f"{', '.join(GPU_RUNTIME_ENV_PREFIXES)})"
            )
        elif env.name.startswith(forbidden):
            extra = " or policy.extraForbiddenEnv" if env.name.startswith(policy.extra_forbidden_env) else ""
            problems.append(
                f"spec.template.env[{index}].name {env.name!r} is reserved for the operator{extra} "
                "(credentials come from spec.storage.credentialsSecretRef, endpoints from spec.storage)"
            )
    return problems


def check_placement(spec: SAILRunSpec, policy: OperatorPolicy) -> list[str]:
    problems: list[str] = []
    template = spec.template
    for key in template.node_selector:
        if not _matches(key, policy.allowed_node_selector_keys):
            problems.append(
                f"spec.template.nodeSelector key {key!r} is not allowed (policy.allowedNodeSelectorKeys: "
                f"{_listed(policy.allowed_node_selector_keys)})"
            )
        elif _matches(key, policy.forbidden_node_selector_keys):
            problems.append(
                f"spec.template.nodeSelector key {key!r} is forbidden by policy.forbiddenNodeSelectorKeys "
                f"({_listed(policy.forbidden_node_selector_keys)}): it pins pods to one node or onto "
                "control-plane nodes; select GPU nodes by a pool or GPU label instead"
            )
    for index, toleration in enumerate(template.tolerations):
        key = toleration.key or ""
        allowed = "*" in policy.allowed_toleration_keys if not key else _matches(key, policy.allowed_toleration_keys)
        if not allowed:
            shown = repr(key) if key else "(no key: tolerates every taint)"
            problems.append(
                f"spec.template.tolerations[{index}].key {shown} is not allowed "
                f"(allowed: {', '.join(policy.allowed_toleration_keys) or 'none'}); ask the admin to add it "
                "to policy.allowedTolerationKeys"
            )
    return problems


def check_resources(spec: SAILRunSpec, policy: OperatorPolicy) -> list[str]:
    """Requests and limits of every phase's pod against policy.maxPodResources."""
    problems: list[str] = []
    caps: dict[str, Decimal] = {name: parse_quantity(str(q)) for name, q in policy.max_pod_resources.items()}
    for phase in ("generate", "annotate", "mixup", "train"):
        requirements = getattr(spec.resources, phase)
        for kind, table in (("requests", requirements.requests), ("limits", requirements.limits)):
            for name, quantity in table.items():
                if name not in caps:
                    continue
                try:
                    value = parse_quantity(str(quantity))
                except ValueError:
                    continue  # not a quantity: the schema's message names it
                if value > caps[name]:
                    problems.append(
                        f"spec.resources.{phase}.{kind}[{name!r}] {quantity} exceeds the per-pod maximum "
                        f"{policy.max_pod_resources[name]} (policy.maxPodResources.{name}); lower it or ask the "
                        "cluster admin to raise the cap"
                    )
    return problems


def compute_policy_violations(spec: SAILRunSpec, policy: OperatorPolicy, namespace: str | None = None) -> list[str]:
    """Every way `spec` (of a run in `namespace`) exceeds `policy`, each naming the field and the policy value."""
    namespace = namespace or "default"
    problems: list[str] = []
    template = spec.template
    if not _matches(template.image, policy.allowed_images):
        problems.append(
            f"spec.template.image {template.image!r} is not allowed by the operator policy "
            f"(allowed: {', '.join(policy.allowed_images)}); ask the cluster admin to add it to "
            "policy.allowedImages in the chart values"
        )
    sa = template.service_account_name
    if sa is not None and not _matches(sa, policy.allowed_service_accounts):
        problems.append(
            f"spec.template.serviceAccountName {sa!r} is not allowed; leave it unset to use the "
            "chart's workload ServiceAccount, or ask the admin to allow it (policy.allowedServiceAccounts)"
        )
    pc = template.priority_class_name
    if pc is not None and not _matches(pc, policy.allowed_priority_classes):
        problems.append(
            f"spec.template.priorityClassName {pc!r} is not allowed (policy.allowedPriorityClasses)"
        )
    problems += check_placement(spec, policy)
    problems += check_env(spec, policy)
    problems += check_storage(spec, policy, namespace)
    problems += check_data_uris(spec, policy, namespace)
    problems += check_resources(spec, policy)
    if spec.parallelism.train_nodes > policy.max_train_nodes:
        problems.append(
            f"spec.parallelism.trainNodes {spec.parallelism.train_nodes} exceeds the policy maximum "
            f"{policy.max_train_nodes}"
        )
    for name in ("generate_shards", "annotate_shards"):
        shards = getattr(spec.parallelism, name)
        if shards > policy.max_shards:
            camel = "generateShards" if name.startswith("generate") else "annotateShards"
            problems.append(f"spec.parallelism.{camel} {shards} exceeds the policy maximum {policy.max_shards}")
    if spec.evaluation is not None and spec.evaluation.shards > policy.max_shards:
        problems.append(f"spec.evaluation.shards {spec.evaluation.shards} exceeds the policy maximum {policy.max_shards}")
    problems += compute_budget_violations(spec, max_round_gpu_hours=policy.max_round_gpu_hours,
                                          max_round_storage_bytes=policy.max_round_storage_bytes)
    return problems


def build_job_labels(run_labels: Mapping[str, str], policy: OperatorPolicy) -> dict[str, str]:
    """The SAILRun's labels the admin lets reach its Jobs and pods (policy.jobLabelKeys)."""
    return {key: value for key, value in run_labels.items()
            if _matches(key, policy.job_label_keys) and not key.startswith(RESERVED_LABEL_PREFIXES)}


__all__ = [
    "GPU_RUNTIME_ENV_PREFIXES", "RESERVED_ENV_PREFIXES", "OperatorPolicy", "build_job_labels",
    "compute_policy_violations", "parse_policy", "policy_key",
]
