"""The chart's RBAC against what the operator really sends: the emulator's request log of a full run.

The operator process drives, on the kmock emulator over HTTP, runs that succeed (one with
multi-node train: its headless Service), retry, fail, are suspended and resumed, are refused
(bad spec), meet a foreign Job or Service holding their child's name (a 409, then a GET to check
the owner), and are deleted. Every request the operator sent (the test's own client and the Job
controller stand-in are told apart by their User-Agent) becomes an RBAC verb on a resource, and:

- the cluster-wide install's rules grant every one of them;
- they grant nothing else, except the verbs NOT_SENT_ON_THE_EMULATOR names with the real-cluster
  path that needs each;
- a namespaced install grants them only in the listed namespaces: the same requests made in a
  namespace that is not listed are refused.

Issue 15 item 7.
"""

from __future__ import annotations

from typing import Any

import kmock
import pytest

from sail_api.phases import Phase
from sail_operator.kube.jobs import service_name
from sail_operator.planner.model import build_job_name
from tests.builders.sailrun_objects import build_sailrun_object as build_run
from tests.contract.test_chart_render import (
    RELEASE_NAMESPACE,
    objects_of_kind,
    render_objects,
    the_deployment,
)
from tests.contract.test_rbac_rules import build_authorizer
from tests.peers.kube import KubeCluster, Scripted, wait_for

pytestmark = pytest.mark.slow

Verb = tuple[str | None, str, str, str]  # (namespace or None for cluster-wide, apiGroup, resource, verb)

# Granted although no request of a full run on the emulator uses them, each with the path that does.
NOT_SENT_ON_THE_EMULATOR: dict[tuple[str, str], frozenset[str]] = {
    # kopf's resource observer lists and watches CRDs; the emulator serves no apiextensions group.
    ("apiextensions.k8s.io", "customresourcedefinitions"): frozenset({"list", "watch"}),
    # An execution edit of a run's spec updates its spec ConfigMap (issue 14 item 3).
    ("", "configmaps"): frozenset({"patch"}),
}
TEST_CLIENT_AGENT = "Python-urllib"  # tests.peers.kube.JsonClient: the test and the Job controller
NAMESPACES = ("team-a", "team-b")


def rbac_verb(request: kmock.Request) -> Verb | None:
    """Pure: one logged request -> the RBAC verb it needs; None for discovery (/api, /apis/...)."""
    if request.resource is None or request.resource.plural is None or request.action is None:
        return None
    resource = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
    action = request.action
    if action is kmock.action.UPDATE:
        verb = "update" if str(request.method.value) == "PUT" else "patch"
    elif action is kmock.action.DELETE:
        verb = "delete" if request.name else "deletecollection"
    else:
        verb = {kmock.action.FETCH: "get", kmock.action.LIST: "list", kmock.action.WATCH: "watch",
                kmock.action.CREATE: "create"}[action]
    return request.namespace or None, request.resource.group or "", resource, verb


def operator_verbs(cluster: KubeCluster) -> set[Verb]:
    verbs = set()
    for request in cluster.requests():
        if request.headers.get("User-Agent", "").startswith(TEST_CLIENT_AGENT):
            continue
        verb = rbac_verb(request)
        if verb is not None:
            verbs.add(verb)
    return verbs


def _script(job: dict[str, Any]) -> Scripted | None:
    labels = job["metadata"].get("labels") or {}
    if job["metadata"]["name"] == build_job_name("flaky", 0, Phase.TRAIN, 1):
        return Scripted(exit_code=75, message="storage unreachable")
    if labels.get("sail.dev/run") == "doomed":
        return Scripted(exit_code=1, message="trainer exploded")
    return None


def _squat(cluster: KubeCluster) -> None:
    """Foreign objects holding the names of two runs' children: the operator must GET them (409)."""
    job = build_job_name("squatjob", 0, Phase.MIXUP, 1)
    cluster.client.create("/apis/batch/v1/namespaces/team-b/jobs",
                          {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": job},
                           "spec": {"suspend": True, "template": {"spec": {"containers": []}}}})
    service = service_name(build_job_name("squatsvc", 0, Phase.TRAIN, 1))
    cluster.client.create("/api/v1/namespaces/team-b/services",
                          {"apiVersion": "v1", "kind": "Service", "metadata": {"name": service},
                           "spec": {"clusterIP": "None"}})


def _drive_a_full_workload(cluster: KubeCluster) -> None:
    multi = {"trainNodes": 2, "gpusPerNode": 0}
    cluster.create_run(build_run("multi", rounds=1, namespace="team-a", parallelism=multi))
    cluster.create_run(build_run("flaky", rounds=0, namespace="team-a"))
    cluster.create_run(build_run("doomed", rounds=0, namespace="team-b"))
    cluster.create_run(build_run("susp", rounds=0, namespace="team-b", suspend=True))
    cluster.create_run(build_run("bad", rounds=0, namespace="team-b", sail={"rounds": -3}))
    cluster.create_run(build_run("squatjob", rounds=0, namespace="team-b"))
    cluster.create_run(build_run("squatsvc", rounds=0, namespace="team-b", parallelism=multi))
    for namespace, name, state in (("team-a", "multi", "Succeeded"), ("team-a", "flaky", "Succeeded"),
                                   ("team-b", "doomed", "Failed"), ("team-b", "susp", "Suspended")):
        wait_for(lambda n=namespace, r=name, s=state: cluster.run_state(n, r) == s, 120, f"{name} {state}")
    cluster.patch_run("team-b", "susp", {"spec": {"suspend": False}})
    wait_for(lambda: cluster.run_state("team-b", "susp") == "Succeeded", 60, "susp resumed and done")
    wait_for(lambda: [e for e in cluster.events("team-b", "bad") if e["type"] == "Warning"], 30, "bad refused")
    wait_for(lambda: [e for e in cluster.events("team-b", "squatsvc") if e["type"] == "Warning"], 60,
             "the foreign Service noticed")
    wait_for(lambda: [e for e in cluster.events("team-b", "squatjob") if e["type"] == "Warning"], 60,
             "the foreign Job noticed")
    cluster.delete_run("team-a", "flaky")


def _grants(objects: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    grants: dict[tuple[str, str], set[str]] = {}
    (role,) = [r for r in objects_of_kind(objects, "ClusterRole") if r["metadata"]["name"] == "sail-sail-operator"]
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.setdefault((group, resource), set()).update(rule["verbs"])
    return grants


def test_rendered_rbac_grants_exactly_the_verbs_the_operator_sends(kube_cluster, job_controller, operator_process):
    job_controller(mode="instant", script=_script)
    _squat(kube_cluster)
    op = operator_process().start()
    try:
        _drive_a_full_workload(kube_cluster)
    except AssertionError:
        print(op.logs()[-4000:])
        raise
    op.stop()
    used = operator_verbs(kube_cluster)
    assert {verb for _, _, _, verb in used} >= {"get", "list", "watch", "create", "delete", "patch"}

    # Cluster-wide install: every request allowed, and no verb granted that none needs.
    objects = render_objects({})
    account = the_deployment(objects)["spec"]["template"]["spec"]["serviceAccountName"]
    allows = build_authorizer(objects, account, RELEASE_NAMESPACE)
    refused = sorted((v for v in used if not allows(*v)), key=str)
    assert refused == [], f"the operator sent requests its RBAC refuses: {refused}"
    sent = {(group, resource): set() for _, group, resource, _ in used}
    for _, group, resource, verb in used:
        sent[(group, resource)].add(verb)
    unused = {key: verbs - sent.get(key, set()) - NOT_SENT_ON_THE_EMULATOR.get(key, frozenset())
              for key, verbs in _grants(objects).items()}
    assert {key: v for key, v in unused.items() if v} == {}, "granted but never sent: remove them from rbac.yaml"

    # Namespaced install: the same requests, made per watched namespace (kopf lists and watches each
    # one instead of all namespaces at once), are allowed; in a namespace not listed, refused.
    per_namespace = {(ns, g, r, v) for (ns, g, r, v) in used if ns is not None}
    per_namespace |= {(ns, g, r, v) for (scope, g, r, v) in used if scope is None and (g, r) != ("", "namespaces")
                      for ns in NAMESPACES}
    objects = render_objects({"watchNamespaces": list(NAMESPACES)})
    allows = build_authorizer(objects, account, RELEASE_NAMESPACE)
    assert sorted((v for v in per_namespace if not allows(*v)), key=str) == []
    team_a_only = build_authorizer(render_objects({"watchNamespaces": ["team-a"]}), account, RELEASE_NAMESPACE)
    in_team_b = [v for v in per_namespace if v[0] == "team-b"]
    assert in_team_b and not [v for v in in_team_b if team_a_only(*v)], "team-b is not watched: nothing granted there"
    assert not [v for v in per_namespace if team_a_only("kube-system", *v[1:])]
