"""Build the Kubernetes objects of one phase attempt: the Job, its spec ConfigMap, its Service.

Pure functions from (parsed SAILRun, CreatePhaseJob, settings) to plain API dicts, exactly as
docs/operating.md ("What it does") describes. No I/O and no kubernetes client here: `act.py` sends what
this module builds, and the tests compare the dicts directly. The builders take the parsed
`SAILRun`: the caller parses the API object once per reconcile (`coerce_run`), instead of
every builder validating the whole object again.

Deliberate choices:
- `backoffLimit: 0`: retries belong to the planner (two budgets, backoff with jitter); the Job
  controller itself only replaces pods that were disrupted (podFailurePolicy Ignore on
  DisruptionTarget), which does not count against the limit.
- Credentials only ever appear as `secretKeyRef`s to the user's Secret in the run's namespace.
- One container, named `trainer`, running `sail-trainer <phase> ...`; the user cannot change
  the command (the SAILRun API has no field for it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sail_api.phases import (
    DEFAULT_TERMINATION_LOG,
    NON_RETRYABLE_EXIT_CODES,
    SPEC_MOUNT_PATH,
    TERMINATION_LOG_ENV,
    Phase,
    build_phase_args,
)
from sail_api.resolved import build_resolved_run
from sail_api.spec import API_GROUP, API_VERSION, KIND, SAILRun
from sail_operator.kube.settings import MANAGED_BY, OperatorSettings
from sail_operator.planner.model import CreatePhaseJob
from sail_operator.policy import build_job_labels

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_RUN = "sail.dev/run"
LABEL_ITERATION = "sail.dev/iteration"
LABEL_PHASE = "sail.dev/phase"
LABEL_ATTEMPT = "sail.dev/attempt"
LABEL_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
ANNOTATION_COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
LABEL_JOB_NAME = "batch.kubernetes.io/job-name"
SPEC_FILE_KEY = "spec.json"
SPEC_MOUNT_DIR = SPEC_MOUNT_PATH.rsplit("/", 1)[0]
GPU_RESOURCE = "nvidia.com/gpu"


def coerce_run(run: Mapping[str, Any] | SAILRun) -> SAILRun:
    """The parsed model of a raw API object (done once by the caller); the status is not needed to build Jobs."""
    if isinstance(run, SAILRun):
        return run
    body = {key: run[key] for key in ("apiVersion", "kind", "metadata", "spec") if key in run}
    return SAILRun.model_validate(body)


def _run_uid(run: SAILRun) -> str:
    uid = (run.metadata.model_extra or {}).get("uid")
    if not uid:
        raise ValueError(
            f"SAILRun {run.metadata.name!r} has no metadata.uid: child objects need a controller "
            "ownerReference, so build them from the object the API server returned"
        )
    return str(uid)


def build_owner_reference(run: SAILRun) -> dict[str, Any]:
    """Controller reference: garbage collection deletes children with the run; we adopt by UID."""
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "name": run.metadata.name,
        "uid": _run_uid(run),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def build_labels(run_name: str, iteration: int, phase: Phase, attempt: int) -> dict[str, str]:
    """The labels every child Job and its pods carry; observe filters on them (client-side too)."""
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_RUN: run_name,
        LABEL_ITERATION: str(iteration),
        LABEL_PHASE: phase.value,
        LABEL_ATTEMPT: str(attempt),
    }


def build_run_labels(run_name: str) -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_RUN: run_name}


def spec_configmap_name(run_name: str) -> str:
    return f"{run_name}-spec"


def service_name(job_name: str) -> str:
    """A Service name must be a DNS-1035 label (start with a letter); job names may start with a digit."""
    return job_name if job_name[:1].isalpha() else f"s{job_name}"[:63]


def resolve_run_uri(run: SAILRun) -> str:
    uri = run.spec.storage.uri
    if not uri:
        raise ValueError(
            f"SAILRun {run.metadata.name!r}: spec.storage.uri is required on a cluster "
            "(an s3:// prefix where the run keeps its artifacts)"
        )
    return uri


def build_spec_configmap(run: SAILRun) -> dict[str, Any]:
    """The resolved run file (`--spec`), owned by the run, mounted read-only into every phase pod."""
    resolved = build_resolved_run(run, resolve_run_uri(run))
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": spec_configmap_name(run.metadata.name),
            "namespace": run.metadata.namespace,
            "labels": build_run_labels(run.metadata.name),
            "ownerReferences": [build_owner_reference(run)],
        },
        "data": {SPEC_FILE_KEY: resolved.to_json()},
    }


def build_headless_service(run: SAILRun, action: CreatePhaseJob, port: int = 29500) -> dict[str, Any] | None:
    """Stable DNS for the pods of a multi-node train (`{job}-{index}.{service}`); None otherwise."""
    if action.nodes <= 1:
        return None
    labels = build_labels(run.metadata.name, action.iteration, action.phase, action.attempt)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(action.name),
            "namespace": run.metadata.namespace,
            "labels": labels,
            "ownerReferences": [build_owner_reference(run)],
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,  # rendezvous happens before readiness
            "selector": {LABEL_JOB_NAME: action.name},
            "ports": [{"name": "rendezvous", "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }


def _storage_env(run: SAILRun, settings: OperatorSettings) -> list[dict[str, Any]]:
    storage = run.spec.storage
    env: list[dict[str, Any]] = []
    if storage.endpoint:
        # S3 only: the global AWS_ENDPOINT_URL also redirects STS, and botocore would post the
        # pod's web-identity token (IRSA) to a user-chosen URL. The trainer passes the endpoint to
        # its S3 client from the run file anyway; this covers tools using the standard chain.
        env.append({"name": "AWS_ENDPOINT_URL_S3", "value": storage.endpoint})
    if not settings.policy.allow_instance_metadata:
        # Without a Secret or IRSA, boto3 would fall back to the node's instance role (shared by
        # every tenant whose pods land on the node).
        env.append({"name": "AWS_EC2_METADATA_DISABLED", "value": "true"})
    if storage.region:
        env.append({"name": "AWS_REGION", "value": storage.region})
        env.append({"name": "AWS_DEFAULT_REGION", "value": storage.region})
    if storage.credentials_secret_ref is not None:
        secret = storage.credentials_secret_ref.name
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
        env.append({
            "name": "AWS_SESSION_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": secret, "key": "AWS_SESSION_TOKEN", "optional": True}},
        })
    return env


def _rendezvous_env(run: SAILRun, action: CreatePhaseJob, settings: OperatorSettings) -> list[dict[str, Any]]:
    """torchrun/accelerate read PET_* variables; the node rank is the pod's completion index."""
    if action.phase is not Phase.TRAIN:
        return []
    nproc = max(1, run.spec.parallelism.gpus_per_node)
    env: list[dict[str, Any]] = [
        {"name": "PET_NNODES", "value": str(action.nodes)},
        {"name": "PET_NPROC_PER_NODE", "value": str(nproc)},
        {"name": "PET_MASTER_PORT", "value": str(settings.master_port)},
    ]
    if action.nodes > 1:
        namespace = run.metadata.namespace or "default"
        master = f"{action.name}-0.{service_name(action.name)}.{namespace}.svc"
        env += [
            {"name": "PET_MASTER_ADDR", "value": master},
            {
                "name": "PET_NODE_RANK",
                "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{ANNOTATION_COMPLETION_INDEX}']"}},
            },
        ]
    else:
        env += [{"name": "PET_MASTER_ADDR", "value": "127.0.0.1"}, {"name": "PET_NODE_RANK", "value": "0"}]
    return env


def build_container_env(run: SAILRun, action: CreatePhaseJob, settings: OperatorSettings) -> list[dict[str, Any]]:
    """User env first, then ours (the policy forbids user names that collide with ours)."""
    env: list[dict[str, Any]] = [{"name": item.name, "value": item.value} for item in run.spec.template.env]
    env += [
        {"name": TERMINATION_LOG_ENV, "value": DEFAULT_TERMINATION_LOG},
        {"name": "SAIL_RUN", "value": run.metadata.name},
        {"name": "SAIL_ATTEMPT", "value": str(action.attempt)},
        {"name": "HOME", "value": "/tmp"},
        {"name": "SAIL_CACHE_DIR", "value": f"{settings.cache_dir}/sail-trainer"},
        {"name": "XDG_CACHE_HOME", "value": settings.cache_dir},
        {"name": "HF_HOME", "value": f"{settings.cache_dir}/huggingface"},
        {"name": "TORCH_HOME", "value": f"{settings.cache_dir}/torch"},
    ]
    return env + _storage_env(run, settings) + _rendezvous_env(run, action, settings)


def _phase_resources(run: SAILRun, phase: Phase) -> dict[str, Any]:
    requirements = getattr(run.spec.resources, phase.value)
    resources: dict[str, Any] = {}
    if requirements.requests:
        resources["requests"] = dict(requirements.requests)
    if requirements.limits:
        resources["limits"] = dict(requirements.limits)
    return resources


def _security_context_pod(run: SAILRun) -> dict[str, Any]:
    context: dict[str, Any] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    if run.spec.template.run_as_user is not None:
        context["runAsUser"] = run.spec.template.run_as_user
    return context


SECURITY_CONTEXT_CONTAINER: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _empty_dir(size_limit: str | None, medium: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if size_limit:
        body["sizeLimit"] = size_limit
    if medium:
        body["medium"] = medium
    return body


def _volumes(run: SAILRun, action: CreatePhaseJob, settings: OperatorSettings) -> tuple[list, list]:
    volumes = [
        {
            "name": "spec",
            "configMap": {
                "name": spec_configmap_name(run.metadata.name),
                "items": [{"key": SPEC_FILE_KEY, "path": SPEC_MOUNT_PATH.rsplit("/", 1)[1]}],
            },
        },
        {"name": "tmp", "emptyDir": _empty_dir(settings.tmp_size_limit or settings.policy.tmp_size_limit)},
        {"name": "cache", "emptyDir": _empty_dir(settings.cache_size_limit or settings.policy.cache_size_limit)},
    ]
    mounts = [
        {"name": "spec", "mountPath": SPEC_MOUNT_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "cache", "mountPath": settings.cache_dir},
    ]
    if action.phase is Phase.TRAIN:  # torch data loaders and NCCL need a real /dev/shm
        volumes.append({"name": "shm", "emptyDir": _empty_dir(settings.policy.shm_size_limit, medium="Memory")})
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})
    return volumes, mounts


def _pod_failure_policy(settings: OperatorSettings) -> dict[str, Any]:
    return {
        "rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": settings.container_name,
                    "operator": "In",
                    "values": sorted(int(code) for code in NON_RETRYABLE_EXIT_CODES),
                },
            },
        ]
    }


def compute_completions(action: CreatePhaseJob) -> int | None:
    """Pods of an Indexed Job: shards for generate/annotate, nodes for a multi-node train."""
    if action.shards is not None:
        return action.shards
    if action.nodes > 1:
        return action.nodes
    return None


def _phase_container(parsed: SAILRun, action: CreatePhaseJob, settings: OperatorSettings,
                     mounts: list) -> dict[str, Any]:
    """The trainer container: the phase's command line, env, resources and mounts."""
    spec = parsed.spec
    args = build_phase_args(
        action.phase, resolve_run_uri(parsed), action.iteration, spec_path=SPEC_MOUNT_PATH, shards=action.shards
    )
    return {
        "name": settings.container_name,
        "image": spec.template.image,
        "imagePullPolicy": spec.template.image_pull_policy,
        "command": [*settings.trainer_command, *args],
        "env": build_container_env(parsed, action, settings),
        "resources": _phase_resources(parsed, action.phase),
        "volumeMounts": mounts,
        "securityContext": dict(SECURITY_CONTEXT_CONTAINER),
        "terminationMessagePath": DEFAULT_TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _pod_spec(parsed: SAILRun, action: CreatePhaseJob, settings: OperatorSettings) -> dict[str, Any]:
    """The pod template's spec: one container, the run's scheduling fields, no API token."""
    spec = parsed.spec
    volumes, mounts = _volumes(parsed, action, settings)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": spec.template.service_account_name or settings.workload_service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": _security_context_pod(parsed),
        "containers": [_phase_container(parsed, action, settings, mounts)],
        "volumes": volumes,
    }
    if spec.template.node_selector:
        pod_spec["nodeSelector"] = dict(spec.template.node_selector)
    if spec.template.tolerations:
        pod_spec["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True) for t in spec.template.tolerations
        ]
    if spec.template.priority_class_name:
        pod_spec["priorityClassName"] = spec.template.priority_class_name
    if action.nodes > 1:
        pod_spec["subdomain"] = service_name(action.name)
    return pod_spec


def _job_spec(parsed: SAILRun, action: CreatePhaseJob, settings: OperatorSettings,
              labels: dict[str, str]) -> dict[str, Any]:
    """The Job's spec: no Job-level retries (the planner retries), indexed pods when sharded."""
    spec = parsed.spec
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,
        "podFailurePolicy": _pod_failure_policy(settings),
        "template": {
            "metadata": {"labels": labels, "annotations": {"kubectl.kubernetes.io/default-container": "trainer"}},
            "spec": _pod_spec(parsed, action, settings),
        },
    }
    completions = compute_completions(action)
    if completions is not None:
        job_spec.update(completionMode="Indexed", completions=completions, parallelism=completions)
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if spec.queue_name:
        job_spec["suspend"] = True  # Kueue admits (unsuspends) the Job when quota is free
    return job_spec


def build_phase_job(parsed: SAILRun, action: CreatePhaseJob, settings: OperatorSettings) -> dict[str, Any]:
    """The batch/v1 Job of one phase attempt (docs/operating.md, "What it does")."""
    # Admin-allowed SAILRun labels (Kueue priority class, cost labels) first: ours win on a clash.
    labels = {**build_job_labels(parsed.metadata.labels, settings.policy),
              **build_labels(parsed.metadata.name, action.iteration, action.phase, action.attempt)}
    job_labels = dict(labels)
    if parsed.spec.queue_name:
        job_labels[LABEL_KUEUE_QUEUE] = parsed.spec.queue_name
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": action.name,
            "namespace": parsed.metadata.namespace,
            "labels": job_labels,
            "ownerReferences": [build_owner_reference(parsed)],
        },
        "spec": _job_spec(parsed, action, settings, labels),
    }


def compute_gpus_per_pod(job: dict[str, Any]) -> float:
    """GPUs a pod of this Job asks for (limit of nvidia.com/gpu), for the GPU-seconds metric."""
    try:
        containers = job["spec"]["template"]["spec"]["containers"]
    except (KeyError, TypeError):
        return 0.0
    total = 0.0
    for container in containers:
        limits = (container.get("resources") or {}).get("limits") or {}
        try:
            total += float(limits.get(GPU_RESOURCE, 0))
        except (TypeError, ValueError):
            continue
    return total
