"""The Helm chart, rendered offline by the real Helm SDK (helm-python-sdk) and checked object by object.

Three installs are rendered: default values (cluster-wide), a namespaced install, and every option
on. Built-in kinds are validated with `kubernetes-validate --strict` against the oldest supported
Kubernetes (the chart's kubeVersion floor) and the newest schema the library knows; the
prometheus-operator kinds (no schema there) are checked structurally. Helpers at the top are
imported by the other chart, RBAC, alert and dashboard tests.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "charts" / "sail-operator"
CRD_FILE = REPO / "crds" / "sailruns.sail.dev.yaml"
RELEASE = "sail"
RELEASE_NAMESPACE = "sail-system"
OLDEST_KUBE = "1.29.0"  # Chart.yaml kubeVersion floor

NAMESPACED_VALUES: dict[str, Any] = {"watchNamespaces": ["team-a", "team-b"]}
ALL_OPTIONS_VALUES: dict[str, Any] = {
    "image": {"digest": "sha256:" + "a" * 64, "pullPolicy": "Always"},
    "imagePullSecrets": ["regcred"],
    "serviceAccount": {"annotations": {"example.com/owner": "ml-platform"}},
    "workloadServiceAccount": {
        "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/sail"},
        "namespaces": ["research", RELEASE_NAMESPACE],
    },
    "policy": {"allowedServiceAccounts": ["trainer-*"], "maxTrainNodes": 4, "maxRoundGpuHours": 12.5},
    "metrics": {
        "service": {"annotations": {"example.com/scrape": "true"}},
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    },
    "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "grafanaDashboard": {"enabled": True, "namespace": "monitoring", "annotations": {"grafana_folder": "SAIL"}},
    "podAnnotations": {"example.com/team": "ml"},
    "podLabels": {"example.com/tier": "control"},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "control-plane", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]}]}
    ]}}},
    "priorityClassName": "system-cluster-critical",
    "extraArgs": ["--log-level=DEBUG"],
    "extraEnv": [{"name": "TZ", "value": "UTC"}],
}
SCENARIOS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": NAMESPACED_VALUES,
    "all-options": ALL_OPTIONS_VALUES,
    "namespaced-all-options": {**ALL_OPTIONS_VALUES, **NAMESPACED_VALUES},
}
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}  # prometheus-operator CRDs: no kubernetes-validate schema


def load_chart() -> helm.Chart:
    """The chart directory loaded by the Helm SDK (the same loader `helm install` uses)."""
    return helm.Chart.load(CHART_DIR)


def render_chart(values: dict[str, Any] | None = None) -> dict[str, str]:
    """Template path -> rendered text, exactly as an install of release `sail` would render it."""
    return load_chart().render(values or {}, name=RELEASE, namespace=RELEASE_NAMESPACE, is_install=True)


def render_objects(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every Kubernetes object the chart renders for `values` (NOTES.txt excluded); a fresh copy."""
    return copy.deepcopy(_render_objects_cached(json.dumps(values or {}, sort_keys=True)))


@functools.lru_cache(maxsize=32)
def _render_objects_cached(values_json: str) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for path, text in sorted(render_chart(json.loads(values_json)).items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def objects_of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def the_deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployments = objects_of_kind(objects, "Deployment")
    assert len(deployments) == 1, [d["metadata"]["name"] for d in deployments]
    return deployments[0]


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def scenario(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render_objects(SCENARIOS[request.param])


# --- lint and validation -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_chart_lints_clean_in_strict_mode(name: str) -> None:
    report = helm.lint(CHART_DIR, SCENARIOS[name], strict=True, kube_version="v" + OLDEST_KUBE)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert problems == [], problems
    assert report["total_charts_linted"] == 1


def test_every_builtin_object_passes_kubernetes_validate_strict(scenario: tuple[str, list[dict[str, Any]]]) -> None:
    name, objects = scenario
    newest = kubernetes_validate.latest_version()
    validated = 0
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        for version in (OLDEST_KUBE, newest):
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"[{name}] {obj['kind']}/{obj['metadata']['name']} invalid for Kubernetes {version}: {error}")
        validated += 1
    assert validated >= 8


def test_object_names_are_unique_per_kind_and_namespace(scenario: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = scenario
    keys = [(o["apiVersion"], o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys)), [k for k in keys if keys.count(k) > 1]


def test_prometheus_operator_objects_are_structurally_valid() -> None:
    objects = render_objects(ALL_OPTIONS_VALUES)
    (monitor,) = objects_of_kind(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor["spec"]) <= {"jobLabel", "selector", "namespaceSelector", "endpoints"}
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s",
                        "honorLabels": True}
    (service,) = objects_of_kind(objects, "Service")
    assert [p["name"] for p in service["spec"]["ports"]] == ["metrics"]
    selected = monitor["spec"]["selector"]["matchLabels"]
    assert selected.items() <= service["metadata"]["labels"].items(), "the ServiceMonitor must select the metrics Service"
    # The alert rules match job="sail-operator": the job label comes from this Service label.
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "sail-operator"
    (rule,) = objects_of_kind(objects, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert list(rule["spec"]) == ["groups"]
    for group in rule["spec"]["groups"]:
        assert set(group) == {"name", "rules"} and group["rules"]
        for item in group["rules"]:
            assert {"alert", "expr", "labels", "annotations"} <= set(item), item


def test_optional_objects_are_off_by_default() -> None:
    kinds = {o["kind"] for o in render_objects({})}
    assert not kinds & CUSTOM_KINDS
    names = [o["metadata"]["name"] for o in render_objects({}) if o["kind"] == "ConfigMap"]
    assert names == ["sail-sail-operator-config"], "no dashboard ConfigMap unless grafanaDashboard.enabled"


# --- the operator Deployment ---------------------------------------------------------------------


def test_deployment_is_one_replica_recreate_with_liveness_and_metrics(scenario: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = scenario
    deployment = the_deployment(objects)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "healthz": 8081}
    probe = container["livenessProbe"]["httpGet"]
    assert (probe["path"], probe["port"]) == ("/healthz", "healthz")
    assert "--liveness=http://0.0.0.0:8081/healthz" in container["args"]
    assert "--metrics-port=8080" in container["args"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


def test_pod_and_container_security_context_are_hardened(scenario: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = scenario
    pod = the_deployment(objects)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["privileged"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/tmp"}, "with a read-only root, /tmp is the only writable path"


def test_cluster_wide_install_watches_all_namespaces() -> None:
    (container,) = the_deployment(render_objects({}))["spec"]["template"]["spec"]["containers"]
    assert container["args"][:2] == ["operator", "--all-namespaces"]
    assert not any(a.startswith("--namespace") for a in container["args"])


def test_namespaced_install_watches_only_listed_namespaces() -> None:
    objects = render_objects(NAMESPACED_VALUES)
    (container,) = the_deployment(objects)["spec"]["template"]["spec"]["containers"]
    assert container["args"][:3] == ["operator", "--namespace=team-a", "--namespace=team-b"]
    assert "--all-namespaces" not in container["args"]
    operator_roles = [r for r in objects_of_kind(objects, "Role") if not r["metadata"]["name"].endswith("-leader-election")]
    operator_bindings = [b for b in objects_of_kind(objects, "RoleBinding")
                         if not b["metadata"]["name"].endswith("-leader-election")]
    assert {(r["metadata"]["namespace"]) for r in operator_roles} == {"team-a", "team-b"}
    assert {(r["metadata"]["namespace"]) for r in operator_bindings} == {"team-a", "team-b"}


def test_image_is_pinned_by_digest_when_given_else_by_app_version() -> None:
    chart_version = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["appVersion"]
    (default,) = the_deployment(render_objects({}))["spec"]["template"]["spec"]["containers"]
    assert default["image"] == f"ghcr.io/sail-dev/sail-operator:{chart_version}"
    (pinned,) = the_deployment(render_objects(ALL_OPTIONS_VALUES))["spec"]["template"]["spec"]["containers"]
    assert pinned["image"] == "ghcr.io/sail-dev/sail-operator@sha256:" + "a" * 64


def test_all_options_reach_the_pod() -> None:
    objects = render_objects(ALL_OPTIONS_VALUES)
    template = the_deployment(objects)["spec"]["template"]
    pod = template["spec"]
    assert pod["nodeSelector"] == ALL_OPTIONS_VALUES["nodeSelector"]
    assert pod["tolerations"] == ALL_OPTIONS_VALUES["tolerations"]
    assert pod["affinity"] == ALL_OPTIONS_VALUES["affinity"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert template["metadata"]["labels"]["example.com/tier"] == "control"
    assert template["metadata"]["annotations"]["example.com/team"] == "ml"
    (container,) = pod["containers"]
    assert container["args"][-1] == "--log-level=DEBUG"
    assert container["env"][1:] == [{"name": "TZ", "value": "UTC"}]


# --- the operator's configuration ----------------------------------------------------------------


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def test_policy_config_matches_the_operator_policy_fields() -> None:
    """The chart's policy values are exactly the fields of sail_operator.policy.OperatorPolicy."""
    policy_module = pytest.importorskip("sail_operator.policy")
    expected = {_camel(f.name) for f in fields(policy_module.OperatorPolicy)}
    objects = render_objects({})
    (config,) = [o for o in objects_of_kind(objects, "ConfigMap") if o["metadata"]["name"].endswith("-config")]
    policy = json.loads(config["data"]["policy.json"])
    assert set(policy) == expected
    defaults = policy_module.OperatorPolicy()
    for field in fields(defaults):
        default = getattr(defaults, field.name)
        value = policy[_camel(field.name)]
        assert (list(default) if isinstance(default, tuple) else default) == value, field.name
    (container,) = the_deployment(objects)["spec"]["template"]["spec"]["containers"]
    assert "--policy-file=/etc/sail-operator/policy.json" in container["args"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["config"] == "/etc/sail-operator"


def test_policy_change_restarts_the_operator() -> None:
    def checksum(values: dict[str, Any]) -> str:
        return the_deployment(render_objects(values))["spec"]["template"]["metadata"]["annotations"]["checksum/policy"]

    assert checksum({}) != checksum({"policy": {"maxShards": 8}})


def _operator_entry() -> Any:
    entry = pytest.importorskip("sail_operator.kube.entry", reason="sail_operator.kube.entry (issue 5) has not landed yet")
    if not hasattr(entry, "build_parser") or not hasattr(entry, "build_settings"):
        pytest.skip("sail_operator.kube.entry exposes no build_parser()/build_settings() to check the chart against")
    return entry


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_operator_command_line_and_policy_are_accepted_by_the_operator(name: str, tmp_path: Path) -> None:
    """`sail operator ARGS` hands ARGS to sail_operator.kube.entry: its parser and settings accept the
    chart's arguments and the rendered policy.json, and end up with the values the chart was given."""
    entry = _operator_entry()
    values = SCENARIOS[name]
    objects = render_objects(values)
    (container,) = the_deployment(objects)["spec"]["template"]["spec"]["containers"]
    assert container["args"][0] == "operator"
    (config,) = [o for o in objects_of_kind(objects, "ConfigMap") if o["metadata"]["name"].endswith("-config")]
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(config["data"]["policy.json"])
    args = [a.replace("/etc/sail-operator/policy.json", str(policy_file)) for a in container["args"][1:]]
    parser = entry.build_parser()
    leader_election = "--no-standalone" in parser.format_help()
    if not leader_election:  # an operator without leader election yet (issue 14 item 5 lands separately)
        args = [a for a in args if a != "--no-standalone" and not a.startswith("--lease-namespace=")]
    settings = entry.build_settings(parser.parse_args(args))  # exit 2 names an unknown flag
    assert settings.namespaces == tuple(values.get("watchNamespaces", ()))
    assert settings.metrics_port == 8080
    assert settings.liveness_endpoint == "http://0.0.0.0:8081/healthz"
    assert settings.workload_service_account == "sail-workload"
    if leader_election:
        assert settings.standalone is False, "the chart runs leader election (leaderElection.enabled)"
        assert settings.lease_namespace == RELEASE_NAMESPACE
    for key, value in values.get("policy", {}).items():
        got = getattr(settings.policy, re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), key))
        assert (list(got) if isinstance(got, tuple) else got) == value, key


# --- service accounts -----------------------------------------------------------------------------


def test_workload_service_account_mounts_no_token_in_every_run_namespace(
    scenario: tuple[str, list[dict[str, Any]]],
) -> None:
    name, objects = scenario
    values = SCENARIOS[name]
    workload = [sa for sa in objects_of_kind(objects, "ServiceAccount") if sa["metadata"]["name"] == "sail-workload"]
    expected = {RELEASE_NAMESPACE, *values.get("watchNamespaces", []),
                *values.get("workloadServiceAccount", {}).get("namespaces", [])}
    assert {sa["metadata"]["namespace"] for sa in workload} == expected
    assert all(sa["automountServiceAccountToken"] is False for sa in workload)
    (container,) = the_deployment(objects)["spec"]["template"]["spec"]["containers"]
    assert "--workload-service-account=sail-workload" in container["args"]


def test_operator_runs_as_its_own_service_account() -> None:
    objects = render_objects({})
    pod = the_deployment(objects)["spec"]["template"]["spec"]
    operator_sa = [sa["metadata"]["name"] for sa in objects_of_kind(objects, "ServiceAccount")
                   if sa["metadata"]["name"] != "sail-workload"]
    assert operator_sa == [pod["serviceAccountName"]]
    (binding,) = objects_of_kind(objects, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": pod["serviceAccountName"],
                                    "namespace": RELEASE_NAMESPACE}]


# --- CRD ------------------------------------------------------------------------------------------


def test_chart_crd_equals_the_generated_crd() -> None:
    if not CRD_FILE.exists():
        pytest.skip(f"{CRD_FILE.relative_to(REPO)} not generated yet (python -m sail_api.crd --write)")
    expected = [d for d in yaml.safe_load_all(CRD_FILE.read_text()) if d]
    rendered = objects_of_kind(render_objects({}), "CustomResourceDefinition")
    assert len(rendered) == 1
    # The chart copy differs only by Helm's keep policy: uninstalling must never delete every SAILRun.
    annotations = rendered[0]["metadata"].pop("annotations")
    assert annotations == {"helm.sh/resource-policy": "keep"}
    assert rendered == expected, "chart CRD drifted from crds/: run `python -m sail_api.crd --write`"


def test_crd_install_can_be_turned_off() -> None:
    assert objects_of_kind(render_objects({"crds": {"install": False}}), "CustomResourceDefinition") == []


# --- values and their schema ----------------------------------------------------------------------


BAD_VALUES = [
    pytest.param({"metrics": {"port": 80}}, "/metrics/port", id="privileged metrics port"),
    pytest.param({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy", id="unknown pull policy"),
    pytest.param({"replicas": 2}, "additional properties 'replicas' not allowed", id="replicas is not a value"),
    pytest.param({"securityContext": {"runAsUser": 0}}, "/securityContext/runAsUser", id="root user"),
    pytest.param({"securityContext": {"privileged": True}}, "'privileged' not allowed", id="no privileged escape"),
    pytest.param({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0", id="namespace is not a DNS label"),
    pytest.param({"watchNamespaces": "team-a"}, "/watchNamespaces", id="namespaces must be a list"),
    pytest.param({"crds": {"install": "yes"}}, "/crds/install", id="crds.install is a boolean"),
    pytest.param({"image": {"digest": "latest"}}, "/image/digest", id="digest must be sha256"),
    pytest.param({"policy": {"maxTrainNodes": 0}}, "/policy/maxTrainNodes", id="train nodes at least one"),
    pytest.param({"policy": {"allowedImages": []}}, "/policy/allowedImages", id="some image must be allowed"),
    pytest.param({"metrics": {"serviceMonitor": {"interval": "often"}}}, "/metrics/serviceMonitor/interval",
                 id="interval is a duration"),
    pytest.param({"metrics": {"service": {"type": "ExternalName"}}}, "/metrics/service/type", id="service type"),
    pytest.param({"liveness": {"periodSeconds": 0}}, "/liveness/periodSeconds", id="probe period positive"),
    pytest.param({"resources": {"limits": {"gpu": 1}}}, "'gpu' not allowed", id="unknown resource"),
    pytest.param({"extraEnv": [{"value": "x"}]}, "/extraEnv/0", id="env var needs a name"),
]


@pytest.mark.parametrize(("values", "message"), BAD_VALUES)
def test_bad_values_are_rejected_by_the_schema_naming_the_field(values: dict[str, Any], message: str) -> None:
    chart = load_chart()
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.render(values, name=RELEASE, namespace=RELEASE_NAMESPACE)
    assert message in str(caught.value), str(caught.value)
    assert "sail-operator" in str(caught.value)


def test_default_values_pass_the_schema() -> None:
    chart = load_chart()
    chart.validate_schema(chart.merge_values({}))
    for values in SCENARIOS.values():
        chart.validate_schema(chart.merge_values(values))


def _walk_schema(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, schema)]
    for key, sub in schema.get("properties", {}).items():
        found += _walk_schema(sub, f"{path}.{key}" if path else key)
    return found


def test_schema_is_strict_and_describes_every_value() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    free_maps = {"global", "affinity"}  # passed through verbatim to Kubernetes / parent charts
    for path, node in _walk_schema(schema):
        if node.get("type") == "object" and path not in free_maps and "properties" in node:
            assert node.get("additionalProperties") is False, f"{path or '<root>'} must reject unknown keys"
        if path:
            assert node.get("description"), f"{path} has no description"
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    schema_paths = {path for path, _ in _walk_schema(schema)}
    missing = [path for path in _leaf_paths(values) if path not in schema_paths]
    assert missing == [], f"values.yaml keys missing from values.schema.json: {missing}"


# Maps whose keys are data (resource names), documented as one value.
FREE_MAPS = ("policy.maxPodResources",)


def _leaf_paths(values: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of every value in values.yaml (a non-empty mapping is descended into)."""
    paths: list[str] = []
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value and path not in FREE_MAPS:
            paths += _leaf_paths(value, path)
        else:
            paths.append(path)
    return paths


def test_every_value_has_a_comment_in_values_yaml() -> None:
    lines = (CHART_DIR / "values.yaml").read_text().splitlines()
    key_line = re.compile(r"^(\s*)([A-Za-z][A-Za-z0-9]*):(.*)$")
    stack: list[tuple[int, str]] = []
    missing = []
    for number, line in enumerate(lines):
        match = key_line.match(line)
        if not match:
            continue
        indent, key, rest = len(match.group(1)), match.group(2), match.group(3).strip()
        stack = [(i, k) for i, k in stack if i < indent]
        path = ".".join([k for _, k in stack] + [key])
        stack.append((indent, key))
        is_group = rest == ""
        if is_group or path.startswith(("resources.", *(f"{m}." for m in FREE_MAPS))):
            continue  # groups are documented by their leaves; resources by the comment on `resources`
        previous = lines[number - 1].strip() if number else ""
        if not previous.startswith("#"):
            missing.append(path)
    assert missing == []


def test_chart_readme_documents_every_value() -> None:
    readme = (CHART_DIR / "README.md").read_text()
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    undocumented = [p for p in _leaf_paths(values) if f"`{p}`" not in readme and not p.startswith("resources.")]
    assert "`resources`" in readme
    assert undocumented == []


def test_notes_render_for_every_scenario() -> None:
    for name, values in SCENARIOS.items():
        notes = render_chart(values)["sail-operator/templates/NOTES.txt"]
        assert "sail-sail-operator" in notes, name
        if "watchNamespaces" in values:
            assert "team-a, team-b" in notes
        else:
            assert "all namespaces" in notes


# --- values in the shapes users bring (issue 14 item 12) -------------------------------------------


def test_image_pull_secrets_take_the_usual_kubernetes_shape_and_plain_names() -> None:
    values = {"imagePullSecrets": [{"name": "regcred"}, "legacy-name"]}
    pod = the_deployment(render_objects(values))["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "legacy-name"}]
    with pytest.raises(helm.HelmValuesError, match="imagePullSecrets"):
        load_chart().render({"imagePullSecrets": [{"secret": "regcred"}]}, name=RELEASE, namespace=RELEASE_NAMESPACE)


def test_run_as_user_and_group_can_be_left_to_the_platform() -> None:
    """OpenShift's restricted SCC assigns the UID per namespace and refuses one outside its range."""
    objects = render_objects({"securityContext": {"runAsUser": None, "runAsGroup": None}})
    context = the_deployment(objects)["spec"]["template"]["spec"]["securityContext"]
    assert "runAsUser" not in context and "runAsGroup" not in context
    assert context["runAsNonRoot"] is True, "the kubelet still refuses a root UID from the image"
    for version in (OLDEST_KUBE, kubernetes_validate.latest_version()):
        kubernetes_validate.validate(the_deployment(objects), version, strict=True)
    default = the_deployment(render_objects({}))["spec"]["template"]["spec"]["securityContext"]
    assert (default["runAsUser"], default["runAsGroup"]) == (65532, 65532)


def test_notes_suggest_only_examples_the_default_policy_admits(tmp_path: Path) -> None:
    """Every `kubectl apply -f examples/...` in NOTES.txt names a file the operator, configured with
    the chart's own default policy.json, admits (no policy violation, valid spec)."""
    entry = _operator_entry()
    from sail_api.validation import parse_run
    from sail_operator.policy import compute_policy_violations

    notes = render_chart({})["sail-operator/templates/NOTES.txt"]
    suggested = re.findall(r"kubectl apply .*-f (examples/\S+\.yaml)", notes)
    assert suggested, notes
    (config,) = [o for o in objects_of_kind(render_objects({}), "ConfigMap") if o["metadata"]["name"].endswith("-config")]
    (tmp_path / "policy.json").write_text(config["data"]["policy.json"])
    policy = entry.load_policy(str(tmp_path / "policy.json"))
    for relative in suggested:
        run = parse_run((REPO / relative).read_text(), relative)
        assert compute_policy_violations(run.spec, policy) == [], relative


# --- metrics exposure and NetworkPolicies (issue 14 item 8, issue 15 items 8 and 9) ----------------


def test_service_monitor_keeps_the_runs_namespace_label_and_the_schema_allows_honor_labels() -> None:
    """Without honorLabels the run's `namespace` label becomes exported_namespace (issue 14 item 8)."""
    values = {"metrics": {"serviceMonitor": {"enabled": True}}}
    (monitor,) = objects_of_kind(render_objects(values), "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    off = {"metrics": {"serviceMonitor": {"enabled": True, "honorLabels": False}}}
    (monitor,) = objects_of_kind(render_objects(off), "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is False


@pytest.mark.parametrize(("listen", "address"), [("podIP", "$(POD_IP)"), ("loopback", "127.0.0.1"),
                                                 ("all", "0.0.0.0")])
def test_metrics_bind_to_the_pod_ip_by_default_never_to_all_addresses_unasked(listen: str, address: str) -> None:
    values = {} if listen == "podIP" else {"metrics": {"listen": listen}}
    (container,) = the_deployment(render_objects(values))["spec"]["template"]["spec"]["containers"]
    assert f"--metrics-address={address}" in container["args"]
    pod_ip = {e["name"]: e for e in container["env"]}["POD_IP"]
    assert pod_ip["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}


def _policies(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in objects_of_kind(objects, "NetworkPolicy")}


def test_operator_network_policy_admits_only_the_metrics_and_health_ports() -> None:
    objects = render_objects({})
    policy = _policies(objects)[(RELEASE_NAMESPACE, "sail-sail-operator")]
    pod_labels = the_deployment(objects)["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    metrics, health = policy["spec"]["ingress"]
    assert metrics == {"ports": [{"port": "metrics", "protocol": "TCP"}], "from": [{"namespaceSelector": {}}]}
    assert health == {"ports": [{"port": "healthz", "protocol": "TCP"}]}
    narrowed = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    objects = render_objects({"networkPolicy": {"operator": {"enabled": True, "metricsFrom": narrowed},
                                                "phasePods": {"enabled": True}}})
    assert _policies(objects)[(RELEASE_NAMESPACE, "sail-sail-operator")]["spec"]["ingress"][0]["from"] == narrowed


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_phase_pods_may_not_reach_the_metadata_service_nor_be_reached_from_other_namespaces(name: str) -> None:
    values = SCENARIOS[name]
    objects = render_objects(values)
    workload = {sa["metadata"]["namespace"] for sa in objects_of_kind(objects, "ServiceAccount")
                if sa["metadata"]["name"] == "sail-workload"}
    policies = {ns: p for (ns, policy_name), p in _policies(objects).items() if policy_name.endswith("-phase-pods")}
    assert set(policies) == workload, "one policy in every namespace where phase pods run"
    # what a phase Job's pod carries (sail_operator.kube.jobs.build_labels)
    jobs = pytest.importorskip("sail_operator.kube.jobs")
    from sail_api.phases import Phase
    pod_labels = jobs.build_labels("r1", 1, Phase.TRAIN, 1)
    for policy in policies.values():
        spec = policy["spec"]
        assert _selects(spec["podSelector"], pod_labels)
        assert not _selects(spec["podSelector"], {"app": "other"})
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        (ingress,) = spec["ingress"]
        (peer,) = ingress["from"]
        assert set(peer) == {"podSelector"}, "no namespaceSelector: peers of this namespace only"
        assert _selects(peer["podSelector"], pod_labels) and not _selects(peer["podSelector"], {"app": "x"})
        blocks = [peer["ipBlock"] for rule in spec["egress"] for peer in rule["to"] if "ipBlock" in peer]
        assert {b["cidr"]: b.get("except") for b in blocks} == {"0.0.0.0/0": ["169.254.169.254/32"],
                                                                "::/0": ["fd00:ec2::254/128"]}
        assert {"namespaceSelector": {}} in spec["egress"][0]["to"], "DNS and in-cluster S3 stay reachable"


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector's verdict on a label set (matchLabels and Exists/In expressions)."""
    if not selector["matchLabels"].items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        if expression["operator"] == "Exists" and expression["key"] not in labels:
            return False
        if expression["operator"] == "In" and labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def test_network_policies_can_be_turned_off() -> None:
    off = {"networkPolicy": {"operator": {"enabled": False}, "phasePods": {"enabled": False}}}
    assert objects_of_kind(render_objects(off), "NetworkPolicy") == []


def test_allowing_instance_metadata_in_the_policy_lifts_the_network_block_too() -> None:
    """policy.allowInstanceMetadata lets boto3 use the node's role: the NetworkPolicy must not contradict it."""
    objects = render_objects({"policy": {"allowInstanceMetadata": True}})
    for (_, name), policy in _policies(objects).items():
        if name.endswith("-phase-pods"):
            blocks = [peer["ipBlock"] for rule in policy["spec"]["egress"] for peer in rule["to"] if "ipBlock" in peer]
            assert all("except" not in block for block in blocks), blocks
