"""Multi-tenant attacks against the real operator process on the kmock emulator, under an admin policy
(storage under `s3://runs/{namespace}/`, cost labels allowed on Jobs).

Each attack is one SAILRun a namespace user could create; each is refused with Validated=False and a
Warning event naming the field and the policy value that would allow it, and no Job is ever created
for it. Beside them a good run (with garbage in kopf's annotation) completes, and its Jobs carry only
what the policy allows: the endpoint scoped to S3, instance metadata off, the admin-allowed label.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kmock

from tests.builders.sailrun_objects import build_sailrun_object, planned_jobs
from tests.peers.kube import wait_for

NS = "default"
POLICY = {"storagePrefixes": ["s3://runs/{namespace}/"], "jobLabelKeys": ["cost-center"],
          "allowedEndpoints": ["http://minio.storage.svc:9000"]}


def run(name: str, **spec: Any) -> dict[str, Any]:
    body = build_sailrun_object(name, rounds=1, storage={"uri": f"s3://runs/{NS}/{name}"})
    for key, value in spec.items():
        body["spec"][key] = {**body["spec"].get(key, {}), **value}
    return body


ATTACKS: list[tuple[dict[str, Any], list[str]]] = [
    (run("sts-steal", storage={"endpoint": "http://attacker.example:8080"}),
     ["spec.storage.endpoint", "policy.allowedEndpoints"]),
    (run("imds", storage={"endpoint": "http://169.254.169.254"}), ["spec.storage.endpoint", "policy.allowedEndpoints"]),
    (run("gpus", template={"env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]}),
     ["spec.template.env[0].name", "NVIDIA_"]),
    (run("environ", seedPairs={"uri": "/proc/self/environ"}), ["spec.seedPairs.uri", "policy.allowedDataUris"]),
    (run("fileuri", prompts={"uri": "file:///var/run/secrets/kubernetes.io/serviceaccount/token"}),
     ["spec.prompts.uri", "policy.allowedDataUris"]),
    (run("other-tenant", storage={"uri": "s3://runs/team-b/r1"}), ["spec.storage.uri", "policy.storagePrefixes"]),
    (run("dotdot", storage={"uri": f"s3://runs/{NS}/../team-b/r1"}), ["spec.storage.uri", "'..'"]),
    (run("pinned", template={"nodeSelector": {"kubernetes.io/hostname": "gpu-node-7"}}),
     ["spec.template.nodeSelector", "policy.forbiddenNodeSelectorKeys"]),
    (run("huge", resources={"train": {"requests": {"memory": "100Ti"}}}),
     ["spec.resources.train.requests", "policy.maxPodResources.memory"]),
]


def _validated(cluster: Any, name: str) -> dict[str, Any] | None:
    for condition in (cluster.get_run(NS, name).get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Validated":
            return condition
    return None


def test_attacks_are_refused_by_field_and_policy_and_a_good_run_gets_only_what_the_policy_allows(
        kube_cluster, job_controller, operator_process, tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))
    job_controller(mode="instant")
    op = operator_process("--policy-file", str(policy)).start()
    good = run("good", storage={"endpoint": "http://minio.storage.svc:9000"})
    good["metadata"]["labels"] = {"cost-center": "ml-42", "team": "a"}
    good["metadata"]["annotations"] = {"sail.dev/last-handled-configuration": "{garbage"}
    kube_cluster.create_run(good)
    for body, _ in ATTACKS:
        kube_cluster.create_run(body)
    try:
        wait_for(lambda: kube_cluster.run_state(NS, "good") == "Succeeded", 120, "the good run to succeed")
        for body, fragments in ATTACKS:
            name = body["metadata"]["name"]
            condition = wait_for(lambda n=name: _validated(kube_cluster, n), 60, f"{name} to get Validated")
            assert condition["status"] == "False", (name, condition)
            for fragment in fragments:
                assert fragment in condition["message"], (name, fragment, condition["message"])
            warnings = [e for e in kube_cluster.events(NS, name) if e.get("type") == "Warning"]
            assert warnings and fragments[0] in warnings[0]["message"], (name, warnings)
    except AssertionError:
        print(op.logs()[-6000:])  # noqa: T201
        raise
    assert kube_cluster.job_creations() == planned_jobs("good", 1)  # none for any attack
    for request in kube_cluster.requests_of("jobs", kmock.action.CREATE):
        job = request.data
        env = {item["name"]: item.get("value") for item in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert "AWS_ENDPOINT_URL" not in env and env["AWS_ENDPOINT_URL_S3"] == "http://minio.storage.svc:9000"
        assert env["AWS_EC2_METADATA_DISABLED"] == "true"
        assert job["metadata"]["labels"]["cost-center"] == "ml-42" and "team" not in job["metadata"]["labels"]
        pod = job["spec"]["template"]["spec"]
        assert all(v["emptyDir"].get("sizeLimit") for v in pod["volumes"] if "emptyDir" in v)
    assert "Traceback" not in op.logs()
