"""Every RBAC rule the chart can render, checked against the documented allow-list.

The allow-list below is the table in docs/deploy.md ("RBAC"): a rule outside it, any wildcard,
any access to secrets, pods/exec (or any other pod subresource) fails. The operator's rules must
also be *exactly* the documented ones, so a needed permission cannot silently disappear either.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.contract.test_chart_render import (
    RELEASE_NAMESPACE,
    SCENARIOS,
    objects_of_kind,
    render_objects,
    the_deployment,
)

RULE_KINDS = ("ClusterRole", "Role")

# (apiGroup, resource) -> verbs the operator holds. Namespaced resources are granted cluster-wide
# (ClusterRole) in a cluster-wide install and per watched namespace (Role) in a namespaced one.
OPERATOR_NAMESPACED: dict[tuple[str, str], frozenset[str]] = {
    ("sail.dev", "sailruns"): frozenset({"get", "list", "watch"}),
    ("sail.dev", "sailruns/status"): frozenset({"patch"}),
    ("batch", "jobs"): frozenset({"get", "list", "watch", "create", "delete"}),
    ("", "pods"): frozenset({"list"}),
    ("", "configmaps"): frozenset({"get", "create", "patch"}),
    ("", "services"): frozenset({"get", "create", "delete"}),
    ("", "events"): frozenset({"create"}),
}
OPERATOR_CLUSTER: dict[tuple[str, str], frozenset[str]] = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): frozenset({"list", "watch"}),
}
# Only a namespaced install: kopf lists/watches namespaces unless it watches all of them.
OPERATOR_CLUSTER_NAMESPACED_INSTALL: dict[tuple[str, str], frozenset[str]] = {
    ("", "namespaces"): frozenset({"list", "watch"}),
}
AGGREGATED: dict[str, dict[tuple[str, str], frozenset[str]]] = {
    "sailrun-editor": {
        ("sail.dev", "sailruns"): frozenset(
            {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
        ),
        ("sail.dev", "sailruns/status"): frozenset({"get", "list", "watch"}),
    },
    "sailrun-viewer": {
        ("sail.dev", "sailruns"): frozenset({"get", "list", "watch"}),
        ("sail.dev", "sailruns/status"): frozenset({"get", "list", "watch"}),
    },
}
# Leader election (leaderElection.enabled): a Role in the release namespace only; get/patch only the
# operator's own Lease (a rule limited to resourceNames is keyed "resource[name]").
LEADER_ELECTION_ROLE = "sail-sail-operator-leader-election"
LEADER_ELECTION: dict[tuple[str, str], frozenset[str]] = {
    ("coordination.k8s.io", "leases"): frozenset({"create"}),
    ("coordination.k8s.io", "leases[sail-operator]"): frozenset({"get", "patch"}),
}
FORBIDDEN_RESOURCES = {"secrets", "pods/exec", "pods/attach", "pods/portforward", "pods/proxy",
                       "serviceaccounts/token", "nodes/proxy", "clusterroles", "roles", "rolebindings",
                       "clusterrolebindings"}
FORBIDDEN_VERBS = {"*", "escalate", "bind", "impersonate"}


def _grants(role: dict[str, Any]) -> dict[tuple[str, str], frozenset[str]]:
    """(apiGroup, resource) -> verbs, one entry per pair the role's rules grant."""
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in role.get("rules") or []:
        assert "nonResourceURLs" not in rule, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for key in [f"{resource}[{name}]" for name in rule["resourceNames"]] if "resourceNames" in rule \
                        else [resource]:
                    grants.setdefault((group, key), set()).update(rule["verbs"])
    return {key: frozenset(verbs) for key, verbs in grants.items()}


def build_authorizer(objects: list[dict[str, Any]], account: str, account_namespace: str):
    """Pure RBAC evaluation of rendered objects: `allows(namespace, group, resource, verb)`.

    A ClusterRole bound by a ClusterRoleBinding grants everywhere (namespace None = a cluster-wide
    request); a Role bound by a RoleBinding grants in its own namespace only. Subjects must be the
    given ServiceAccount. Enough for the chart's rules (no resourceNames, no aggregation).
    """
    subject = {"kind": "ServiceAccount", "name": account, "namespace": account_namespace}
    cluster_roles = {r["metadata"]["name"]: _grants(r) for r in objects_of_kind(objects, "ClusterRole")}
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): _grants(r) for r in objects_of_kind(objects, "Role")}
    everywhere = [cluster_roles[b["roleRef"]["name"]] for b in objects_of_kind(objects, "ClusterRoleBinding")
                  if subject in b["subjects"]]
    per_namespace: dict[str, list[dict[tuple[str, str], frozenset[str]]]] = {}
    for binding in objects_of_kind(objects, "RoleBinding"):
        if subject in binding["subjects"] and binding["roleRef"]["kind"] == "Role":
            namespace = binding["metadata"]["namespace"]
            per_namespace.setdefault(namespace, []).append(roles[(namespace, binding["roleRef"]["name"])])

    def allows(namespace: str | None, group: str, resource: str, verb: str, name: str | None = None) -> bool:
        grants = everywhere + (per_namespace.get(namespace, []) if namespace is not None else [])
        keys = [(group, resource)] + ([(group, f"{resource}[{name}]")] if name else [])
        return any(verb in g.get(key, frozenset()) for g in grants for key in keys)

    return allows


def test_the_authorizer_grants_roles_only_in_their_namespace() -> None:
    objects = render_objects({"watchNamespaces": ["team-a"]})
    account = the_deployment(objects)["spec"]["template"]["spec"]["serviceAccountName"]
    allows = build_authorizer(objects, account, RELEASE_NAMESPACE)
    assert allows("team-a", "batch", "jobs", "create")
    assert not allows("team-b", "batch", "jobs", "create")
    assert not allows("kube-system", "", "configmaps", "create")
    assert not allows(None, "batch", "jobs", "list"), "no cluster-wide Job access in a namespaced install"
    assert allows(None, "apiextensions.k8s.io", "customresourcedefinitions", "watch")
    assert not build_authorizer(objects, "someone-else", RELEASE_NAMESPACE)("team-a", "batch", "jobs", "create")


def _all_roles() -> list[tuple[str, dict[str, Any]]]:
    return [(name, role) for name, values in SCENARIOS.items()
            for kind in RULE_KINDS for role in objects_of_kind(render_objects(values), kind)]


def test_no_rule_has_a_wildcard_secrets_exec_or_dangerous_verb() -> None:
    roles = _all_roles()
    assert len(roles) >= 10
    for scenario, role in roles:
        where = f"[{scenario}] {role['kind']}/{role['metadata']['name']}"
        assert role.get("aggregationRule") is None, f"{where}: aggregationRule would hide its real rules"
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert not any("*" in item for item in rule[field]), f"{where}: wildcard in {field}: {rule}"
            assert not set(rule["resources"]) & FORBIDDEN_RESOURCES, f"{where}: forbidden resource in {rule}"
            assert not set(rule["verbs"]) & FORBIDDEN_VERBS, f"{where}: forbidden verb in {rule}"


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_operator_rules_are_exactly_the_documented_allow_list(name: str) -> None:
    values = SCENARIOS[name]
    objects = render_objects(values)
    namespaced_install = bool(values.get("watchNamespaces"))
    operator_roles = [r for r in objects_of_kind(objects, "ClusterRole") if r["metadata"]["name"] not in AGGREGATED]
    (cluster_role,) = operator_roles
    expected_cluster = dict(OPERATOR_CLUSTER)
    if namespaced_install:
        expected_cluster |= OPERATOR_CLUSTER_NAMESPACED_INSTALL
    else:
        expected_cluster |= OPERATOR_NAMESPACED
    assert _grants(cluster_role) == expected_cluster
    roles = [r for r in objects_of_kind(objects, "Role") if r["metadata"]["name"] != LEADER_ELECTION_ROLE]
    if namespaced_install:
        assert {r["metadata"]["namespace"] for r in roles} == set(values["watchNamespaces"])
        for role in roles:
            assert _grants(role) == OPERATOR_NAMESPACED, role["metadata"]["namespace"]
    else:
        assert roles == []


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_bindings_give_the_roles_to_the_operator_service_account_only(name: str) -> None:
    objects = render_objects(SCENARIOS[name])
    (deployment,) = objects_of_kind(objects, "Deployment")
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    roles = {(r["kind"], r["metadata"].get("namespace"), r["metadata"]["name"])
             for kind in RULE_KINDS for r in objects_of_kind(objects, kind)}
    bindings = objects_of_kind(objects, "ClusterRoleBinding") + objects_of_kind(objects, "RoleBinding")
    assert bindings
    for binding in bindings:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": RELEASE_NAMESPACE}]
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        assert (ref["kind"], namespace, ref["name"]) in roles, f"binding to a role the chart does not render: {ref}"


def test_aggregated_roles_extend_the_builtin_roles() -> None:
    objects = render_objects({})
    roles = {r["metadata"]["name"]: r for r in objects_of_kind(objects, "ClusterRole") if r["metadata"]["name"] in AGGREGATED}
    assert set(roles) == set(AGGREGATED)
    for name, expected in AGGREGATED.items():
        assert _grants(roles[name]) == expected, name
    assert roles["sailrun-editor"]["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert roles["sailrun-editor"]["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert roles["sailrun-viewer"]["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert "rbac.authorization.k8s.io/aggregate-to-view" not in roles["sailrun-editor"]["metadata"]["labels"]
    without = render_objects({"aggregatedRoles": {"create": False}})
    assert not [r for r in objects_of_kind(without, "ClusterRole") if r["metadata"]["name"] in AGGREGATED]


def test_rbac_create_false_renders_no_operator_rbac() -> None:
    objects = render_objects({"rbac": {"create": False}, "aggregatedRoles": {"create": False}})
    for kind in (*RULE_KINDS, "ClusterRoleBinding", "RoleBinding"):
        assert objects_of_kind(objects, kind) == [], kind


def test_leader_election_may_touch_only_its_own_lease_in_the_release_namespace() -> None:
    objects = render_objects({})
    (role,) = [r for r in objects_of_kind(objects, "Role") if r["metadata"]["name"] == LEADER_ELECTION_ROLE]
    assert role["metadata"]["namespace"] == RELEASE_NAMESPACE
    assert _grants(role) == LEADER_ELECTION
    account = the_deployment(objects)["spec"]["template"]["spec"]["serviceAccountName"]
    allows = build_authorizer(objects, account, RELEASE_NAMESPACE)
    assert allows(RELEASE_NAMESPACE, "coordination.k8s.io", "leases", "patch", name="sail-operator")
    assert not allows(RELEASE_NAMESPACE, "coordination.k8s.io", "leases", "patch", name="kube-scheduler")
    assert not allows("kube-system", "coordination.k8s.io", "leases", "create")
    (container,) = the_deployment(objects)["spec"]["template"]["spec"]["containers"]
    assert "--no-standalone" in container["args"] and f"--lease-namespace={RELEASE_NAMESPACE}" in container["args"]
    off = render_objects({"leaderElection": {"enabled": False}})
    assert not [r for r in objects_of_kind(off, "Role") if r["metadata"]["name"] == LEADER_ELECTION_ROLE]
    (container,) = the_deployment(off)["spec"]["template"]["spec"]["containers"]
    assert "--no-standalone" not in container["args"]
