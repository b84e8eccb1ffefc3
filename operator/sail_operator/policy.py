"""What a namespace user may make the operator do: the admin's policy, checked per SAILRun.

A user who may create SAILRuns but not Pods must not gain more through the operator than
the trainer image running as the workload ServiceAccount. The API itself cannot express
hostPath volumes, privileged containers, extra capabilities or cross-namespace secrets, so
those are impossible by construction; what remains a choice is the image, the service
account, the node placement and the priority, and the admin restricts them here (operator
config, set from the chart). Pure: no I/O; the reconcile reports violations as
Validated=False like any other spec error.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from sail_api.spec import SAILRunSpec
from sail_operator.budget import compute_budget_violations

# Variables the trainer's environment reserves: a user-set value would redirect credentials
# or the storage endpoint, or spoof the shard index / rendezvous of a phase.
RESERVED_ENV_PREFIXES = ("AWS_", "SAIL_", "PET_", "JOB_COMPLETION_INDEX", "MASTER_", "RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class OperatorPolicy:
    """Admin-controlled limits; the defaults are the safe ones."""

    # fnmatch's `*` crosses '/', so patterns pin the registry and repository, not just the name.
    allowed_images: tuple[str, ...] = ("ghcr.io/sail-dev/sail-trainer:*", "ghcr.io/sail-dev/sail-trainer@sha256:*")
    allowed_service_accounts: tuple[str, ...] = ()  # empty: only the chart's workload SA (unset field)
    allowed_priority_classes: tuple[str, ...] = ()  # empty: none may be set
    allowed_node_selector_keys: tuple[str, ...] = ("*",)
    # Taint keys a SAILRun may tolerate; a toleration without a key tolerates every taint
    # (dedicated and control-plane nodes too) and is refused unless "*" is allowed.
    allowed_toleration_keys: tuple[str, ...] = ("nvidia.com/gpu",)
    require_s3_storage: bool = True
    max_train_nodes: int = 16
    max_shards: int = 256
    extra_forbidden_env: tuple[str, ...] = field(default_factory=tuple)
    # Cost budget per iteration (step 0 or one round), from `sail plan`'s estimate; 0: no limit.
    max_round_gpu_hours: float = 0.0
    max_round_storage_bytes: int = 0


def _matches(value: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns)


def compute_policy_violations(spec: SAILRunSpec, policy: OperatorPolicy) -> list[str]:
    """Every way `spec` exceeds `policy`, each naming the field and how to fix it."""
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
    for key in template.node_selector:
        if not _matches(key, policy.allowed_node_selector_keys):
            problems.append(f"spec.template.nodeSelector key {key!r} is not allowed (policy.allowedNodeSelectorKeys)")
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
    forbidden = RESERVED_ENV_PREFIXES + policy.extra_forbidden_env
    for index, env in enumerate(template.env):
        if env.name.startswith(forbidden):
            problems.append(
                f"spec.template.env[{index}].name {env.name!r} is reserved for the operator "
                "(credentials come from spec.storage.credentialsSecretRef, endpoints from spec.storage)"
            )
    uri = spec.storage.uri
    if policy.require_s3_storage and not (uri or "").startswith("s3://"):
        problems.append(
            f"spec.storage.uri {uri!r} must be an s3:// URI on a cluster (phase pods share nothing else); "
            "local folders are for `sail run` on one machine"
        )
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
    problems += compute_budget_violations(spec, max_round_gpu_hours=policy.max_round_gpu_hours,
                                          max_round_storage_bytes=policy.max_round_storage_bytes)
    return problems
