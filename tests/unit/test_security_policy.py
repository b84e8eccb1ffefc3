"""Multi-tenant attacks a namespace user with `sailrun-editor` can try through a SAILRun, refused by
the operator policy (or contained by the Job builder) with a message naming the field and the
policy value that would allow it. One test per row of the attack table in docs/security.md.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from sail_api.phases import Phase
from sail_api.spec import SAILRunSpec
from sail_operator.kube.entry import load_policy
from sail_operator.kube.jobs import build_phase_job, coerce_run
from sail_operator.kube.settings import OperatorSettings
from sail_operator.planner.model import CreatePhaseJob, build_job_name
from sail_operator.policy import OperatorPolicy, compute_policy_violations, parse_policy
from tests.builders.sailrun_spec import build_sailrun_dict, build_spec_body, merge_spec

UID = "0b3a2c1d-0000-4000-8000-00000000beef"


def spec(**overrides: Any) -> SAILRunSpec:
    body = build_spec_body(model="s3://models/base", seed_pairs="s3://data/seed.jsonl",
                           prompts="s3://data/prompts.txt", storage="s3://runs/team-a/r1",
                           template={"image": "ghcr.io/sail-dev/sail-trainer:0.1.0"})
    return SAILRunSpec.model_validate(merge_spec(body, **overrides))


def violations(overrides: dict[str, Any], policy: OperatorPolicy | None = None, namespace: str = "team-a") -> list[str]:
    return compute_policy_violations(spec(**overrides), policy or OperatorPolicy(), namespace)


def only(problems: list[str], *fragments: str) -> str:
    assert len(problems) == 1, problems
    for fragment in fragments:
        assert fragment in problems[0], (fragment, problems[0])
    return problems[0]


def test_the_baseline_passes() -> None:
    assert violations({}) == []


# ---------------------------------------------------------------- 2. GPU isolation variables

@pytest.mark.parametrize("name", ["NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "CUDA_VISIBLE_DEVICES",
                                  "NVIDIA_REQUIRE_CUDA", "NVIDIA_MIG_CONFIG_DEVICES", "HIP_VISIBLE_DEVICES",
                                  "ROCR_VISIBLE_DEVICES", "CUDA_MPS_PIPE_DIRECTORY"])
def test_gpu_runtime_variables_are_refused(name: str) -> None:
    only(violations({"template": {"env": [{"name": "HF_HUB_OFFLINE", "value": "1"}, {"name": name, "value": "all"}]}}),
         f"spec.template.env[1].name {name!r}", "spec.resources", "no policy value allows")


# ---------------------------------------------------------------- 3/4. pod-local data

@pytest.mark.parametrize(("field", "uri"), [
    ("model", "/proc/self"), ("seedPairs", "/proc/self/environ"),
    ("prompts", "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"),
    ("prompts", "file:///proc/self/environ"), ("seedPairs", "file:/etc/passwd"), ("model", "proc/self"),
    ("model", "runwayml/stable-diffusion-v1-5"),  # a hub id is also a relative path in the pod
])
def test_local_data_uris_are_refused_on_a_cluster(field: str, uri: str) -> None:
    only(violations({field: {"uri": uri}}), f"spec.{field}.uri {uri!r}", "policy.allowedDataUris: 's3://*'")


def test_an_admin_can_allow_data_baked_into_the_image_and_file_uris_match_as_paths() -> None:
    policy = OperatorPolicy(allowed_data_uris=("s3://*", "/models/*"))
    assert violations({"model": {"uri": "/models/sd15"}}, policy) == []
    assert violations({"model": {"uri": "file:///models/sd15"}}, policy) == []
    only(violations({"model": {"uri": "/models/../proc/self"}}, policy), "spec.model.uri", "'..'")
    only(violations({"prompts": {"uri": "/etc/passwd"}}, policy), "spec.prompts.uri", "'/models/*'")


def test_data_may_be_confined_to_the_namespace() -> None:
    policy = OperatorPolicy(allowed_data_uris=("s3://data/*", "s3://runs/{namespace}/*"))
    assert violations({"model": {"uri": "s3://runs/team-a/r0/iter-002/train/model"}}, policy) == []
    only(violations({"model": {"uri": "s3://runs/team-b/r0/iter-002/train/model"}}, policy),
         "spec.model.uri", "'s3://runs/team-a/*'")


# ---------------------------------------------------------------- 5. storage isolation

@pytest.mark.parametrize("uri", ["s3://runs/team-a/../team-b/run", "s3://runs/./team-a/r1", "s3://runs/team-a/r1/.."])
def test_dot_segments_in_the_run_root_are_refused(uri: str) -> None:
    only(violations({"storage": {"uri": uri}}), f"spec.storage.uri {uri!r}", "'..'")


def test_the_run_root_must_lie_under_the_namespaces_prefix_when_the_admin_sets_one() -> None:
    policy = OperatorPolicy(storage_prefixes=("s3://runs/{namespace}/",))
    assert violations({"storage": {"uri": "s3://runs/team-a/r1"}}, policy) == []
    for uri in ("s3://runs/team-b/r1", "s3://runs/team-ab/r1", "s3://runs/r1", "s3://other/team-a/r1"):
        only(violations({"storage": {"uri": uri}}, policy), f"spec.storage.uri {uri!r}",
             "policy.storagePrefixes: 's3://runs/team-a/'")
    # two tenants choosing the same root: the second is refused, never shares the first's results
    only(violations({"storage": {"uri": "s3://runs/team-a/r1"}}, policy, namespace="team-b"), "s3://runs/team-b/")


def _job(policy: OperatorPolicy, labels: dict[str, str] | None = None, phase: Phase = Phase.TRAIN) -> dict[str, Any]:
    body = spec().model_dump(by_alias=True, exclude_none=True)
    run = build_sailrun_dict("r1", body, namespace="team-a", uid=UID)
    run["metadata"]["labels"] = labels or {}
    action = CreatePhaseJob(name=build_job_name("r1", 1, phase, 1), iteration=1, phase=phase, attempt=1)
    return build_phase_job(coerce_run(run), action, OperatorSettings(policy=policy))


def _env(job: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value") for item in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_phase_pods_cannot_fall_back_to_the_nodes_instance_role() -> None:
    assert _env(_job(OperatorPolicy()))["AWS_EC2_METADATA_DISABLED"] == "true"
    assert "AWS_EC2_METADATA_DISABLED" not in _env(_job(OperatorPolicy(allow_instance_metadata=True)))


# ---------------------------------------------------------------- 6. SSRF through the endpoint

@pytest.mark.parametrize("endpoint", ["http://169.254.169.254/latest/meta-data/", "http://kubernetes.default.svc",
                                      "https://minio.storage.svc:9000"])
def test_custom_endpoints_are_refused_by_default(endpoint: str) -> None:
    only(violations({"storage": {"endpoint": endpoint}}), f"spec.storage.endpoint {endpoint!r}",
         "policy.allowedEndpoints: none")


@pytest.mark.parametrize("endpoint", ["file:///etc/passwd", "gopher://minio:9000", "ftp://minio", "minio:9000",
                                      "http://user:pw@minio.storage.svc:9000", "http://minio.storage.svc:9000/?x=1",
                                      "http://:9000"])
def test_endpoint_schemes_and_shapes_are_checked_even_when_allowed(endpoint: str) -> None:
    policy = OperatorPolicy(allowed_endpoints=("*",))
    only(violations({"storage": {"endpoint": endpoint}}, policy), f"spec.storage.endpoint {endpoint!r}")


def test_an_admin_allows_the_site_store() -> None:
    policy = OperatorPolicy(allowed_endpoints=("https://minio.storage.svc:9000",))
    assert violations({"storage": {"endpoint": "https://minio.storage.svc:9000/"}}, policy) == []
    only(violations({"storage": {"endpoint": "http://169.254.169.254"}}, policy),
         "'https://minio.storage.svc:9000'")


# ---------------------------------------------------------------- 8. placement and size

@pytest.mark.parametrize("key", ["kubernetes.io/hostname", "node-role.kubernetes.io/control-plane",
                                 "node-role.kubernetes.io/master"])
def test_pinning_to_a_node_or_onto_the_control_plane_is_refused(key: str) -> None:
    only(violations({"template": {"nodeSelector": {key: "ip-10-0-0-1"}}}), f"nodeSelector key {key!r}",
         "policy.forbiddenNodeSelectorKeys")
    assert violations({"template": {"nodeSelector": {"nvidia.com/gpu.product": "H100"}}}) == []


@pytest.mark.parametrize(("resources", "cap"), [
    ({"train": {"requests": {"memory": "100Ti"}}}, "policy.maxPodResources.memory"),
    ({"generate": {"limits": {"nvidia.com/gpu": "64"}}}, "policy.maxPodResources.nvidia.com/gpu"),
    ({"mixup": {"requests": {"cpu": "100000"}}}, "policy.maxPodResources.cpu"),
])
def test_per_pod_resources_are_capped(resources: dict[str, Any], cap: str) -> None:
    only(violations({"resources": resources}), cap)
    assert violations({"resources": resources}, OperatorPolicy(max_pod_resources={})) == []


def test_every_empty_dir_has_a_size_limit() -> None:
    pod = _job(OperatorPolicy())["spec"]["template"]["spec"]
    empties = {volume["name"]: volume["emptyDir"] for volume in pod["volumes"] if "emptyDir" in volume}
    assert set(empties) == {"tmp", "cache", "shm"}
    assert all(body.get("sizeLimit") for body in empties.values()), empties
    assert empties["shm"]["sizeLimit"] == OperatorPolicy().shm_size_limit


def test_only_admin_allowed_labels_reach_the_jobs_and_pods() -> None:
    labels = {"kueue.x-k8s.io/priority-class": "high", "cost-center": "ml-42", "team": "a",
              "sail.dev/run": "someone-else", "kueue.x-k8s.io/queue-name": "other-queue"}
    policy = OperatorPolicy(job_label_keys=("kueue.x-k8s.io/*", "cost-center"))
    job = _job(policy, labels)
    for meta in (job["metadata"], job["spec"]["template"]["metadata"]):
        assert meta["labels"]["kueue.x-k8s.io/priority-class"] == "high"
        assert meta["labels"]["cost-center"] == "ml-42"
        assert "team" not in meta["labels"]
        assert meta["labels"]["sail.dev/run"] == "r1"  # the operator's own labels are never overridden
        assert "kueue.x-k8s.io/queue-name" not in meta["labels"]
    assert "cost-center" not in _job(OperatorPolicy(), labels)["metadata"]["labels"]  # default: none


# ---------------------------------------------------------------- 10. the policy file itself

@pytest.mark.parametrize(("data", "key"), [
    ({"allowedImages": "*"}, "allowedImages"),
    ({"allowedServiceAccounts": "default"}, "allowedServiceAccounts"),
    ({"allowedEndpoints": "http://*"}, "allowedEndpoints"),
    ({"maxShards": "8"}, "maxShards"),
    ({"requireS3Storage": "false"}, "requireS3Storage"),
    ({"maxPodResources": {"memory": "lots"}}, "maxPodResources.memory"),
    ({"allowedImages": [1, 2]}, "allowedImages"),
    ({"maxRoundGpuHours": "lots"}, "maxRoundGpuHours"),
    ({"maxRoundGpuHours": -1}, "maxRoundGpuHours"),
    ({"maxRoundStorageBytes": 1.5}, "maxRoundStorageBytes"),
])
def test_a_policy_value_of_the_wrong_type_is_refused_not_iterated(data: dict[str, Any], key: str, tmp_path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f"policy.{key}") as caught:
        load_policy(str(path))
    assert str(path) in str(caught.value)


def test_every_policy_field_round_trips_through_the_chart_keys() -> None:
    from dataclasses import asdict

    defaults = asdict(OperatorPolicy())
    data = {key.split("_")[0] + "".join(p.capitalize() for p in key.split("_")[1:]):
            list(value) if isinstance(value, tuple) else value for key, value in defaults.items()}
    assert parse_policy(data) == OperatorPolicy()


@pytest.mark.parametrize("uri", ["s3://runs/../tenant-b/run", "s3://runs/a/./b", "s3://runs/a/.."])
def test_the_store_itself_refuses_dot_segments_in_an_s3_root(uri: str) -> None:
    """Also outside the operator (`sail run` with s3:// storage): never written literally."""
    from sail_api.storage.uris import split_uri

    with pytest.raises(ValueError, match="'..' segment"):
        split_uri(uri)


# ---------------------------------------------------------------- 10. garbage in kopf's annotation

@pytest.mark.parametrize("garbage", ["{not json", "[" * 100_000, '"a string"'])
def test_garbage_in_the_diff_base_annotation_is_never_parsed(garbage: str) -> None:
    """Anyone who may edit the SAILRun may write this annotation; kopf's json.loads of it would
    throttle the run with a traceback on every event. Nothing reads it, so nothing parses it."""
    import kopf

    from sail_operator.kube.handlers import build_kopf_settings

    storage = build_kopf_settings(OperatorSettings()).persistence.diffbase_storage
    body = kopf.Body({"metadata": {"name": "r1", "namespace": "team-a", "annotations": {
        "sail.dev/last-handled-configuration": garbage, "kopf.zalando.org/last-handled-configuration": garbage}}})
    assert storage.fetch(body=body) is None
