"""Security properties that hold by construction, checked on the code and on rendered objects.

- No process is ever started through a shell: an AST scan of api/, trainer/ and operator/ finds
  no `shell=True`, no `os.system`/`os.popen`/`os.exec*`/`pty.spawn`, and no subprocess call whose
  first argument is a string (a literal, an f-string or a concatenation): only argument lists.
- Every phase Job the operator can render (step 0 and round phases, sharded, multi-node train)
  runs hardened (non-root, RuntimeDefault seccomp, no privilege escalation, read-only root,
  all capabilities dropped, not privileged, no API token, no host namespaces or host volumes)
  and carries credentials only as `secretKeyRef`s to the run's own Secret - even when the
  spec's env, node selector and image are unusual.
- The storage endpoint reaches phase pods scoped to S3 (never the global AWS_ENDPOINT_URL), and the
  instance-metadata fallback is off; multi-tenant attacks are in test_security_policy.py.
- The policy refuses what a namespace user must not get (unit tests in test_policy_admission.py
  cover image, service account, priority class, reserved env, host-path storage, train nodes);
  here only the cases they leave out.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest

from sail_api.phases import Phase
from sail_api.spec import SAILRunSpec
from sail_operator.kube.jobs import build_headless_service, build_phase_job, build_spec_configmap, coerce_run
from sail_operator.kube.settings import OperatorSettings
from sail_operator.planner.model import CreatePhaseJob, build_job_name
from sail_operator.policy import OperatorPolicy, compute_policy_violations
from tests.builders.sailrun_spec import build_sailrun_dict, build_spec_body

REPO = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = [REPO / "api", REPO / "trainer", REPO / "operator"]
SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output", "getoutput", "getstatusoutput"}
SHELL_FUNCTIONS = {("os", "system"), ("os", "popen"), ("pty", "spawn"), ("os", "execl"), ("os", "execlp"),
                   ("os", "execle"), ("os", "execlpe"), ("os", "execv"), ("os", "execvp"), ("os", "execvpe"),
                   ("os", "spawnl"), ("os", "spawnlp"), ("os", "posix_spawn"), ("os", "posix_spawnp")}
SECRET_CANARY = "CANARY-secret-value-0f9d"


def _python_files() -> list[Path]:
    files = [path for root in SOURCE_ROOTS for path in root.rglob("*.py")]
    assert len(files) > 50, "the scan found too few files: wrong roots?"
    return files


def _dotted(node: ast.AST) -> tuple[str, ...]:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return tuple(reversed(parts))


def _is_string_expression(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str | bytes)
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
        return _is_string_expression(node.left) or _is_string_expression(node.right)
    return isinstance(node, ast.Call) and _dotted(node.func)[-1:] in (("format",), ("join",))


def find_shell_calls(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, why) for every call that would run a shell or pass a command line as one string."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        for keyword in node.keywords:
            if keyword.arg == "shell" and not (isinstance(keyword.value, ast.Constant) and keyword.value.value is False):
                found.append((node.lineno, f"{'.'.join(name)}(shell=...)"))
        if name[-2:] in SHELL_FUNCTIONS or name[-1:] == ("system",):
            found.append((node.lineno, f"{'.'.join(name)}()"))
        if name[-1:] and name[-1] in SUBPROCESS_CALLS and (len(name) == 1 or name[-2] in ("subprocess", "sp")):
            first = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "args"), None)
            if first is not None and _is_string_expression(first):
                found.append((node.lineno, f"{'.'.join(name)}(<string command>)"))
            if name[-1] in ("getoutput", "getstatusoutput"):
                found.append((node.lineno, f"{'.'.join(name)}() always uses a shell"))
    return found


@pytest.mark.parametrize("snippet", [
    "import subprocess\nsubprocess.run('ls -l', check=True)",
    "import subprocess\nsubprocess.Popen(f'rm {x}')",
    "import subprocess\nsubprocess.call(['ls'], shell=True)",
    "import subprocess as sp\nsp.check_output('a' + b)",
    "import os\nos.system('x')",
    "import os\nos.popen('x')",
    "from subprocess import run\nrun(' '.join(cmd))",
    "import subprocess\nsubprocess.getoutput(x)",
    "import subprocess\nsubprocess.run(args='ls -l')",
])
def test_the_scanner_catches_shell_calls(snippet: str) -> None:
    assert find_shell_calls(ast.parse(snippet)), snippet


def test_the_scanner_lets_argument_lists_pass() -> None:
    snippet = "import subprocess\nsubprocess.run([sys.executable, '-m', 'x'], shell=False)\nsubprocess.Popen(cmd)"
    assert find_shell_calls(ast.parse(snippet)) == []


def test_no_subprocess_call_in_the_code_base_takes_a_shell_string() -> None:
    offenders = []
    for path in _python_files():
        for line, why in find_shell_calls(ast.parse(path.read_text(), str(path))):
            offenders.append(f"{path.relative_to(REPO)}:{line}: {why}")
    assert offenders == []


# ---------------------------------------------------------------- rendered phase Jobs

UID = "0b3a2c1d-0000-4000-8000-00000000abcd"


def build_run(**spec: Any) -> dict[str, Any]:
    body = build_spec_body(
        prompts="s3://b/prompts.txt", sail={"rounds": 1},
        storage={"uri": "s3://b/runs/sec", "endpoint": "http://minio:9000", "region": "eu-west-1",
                 "credentialsSecretRef": {"name": "team-s3"}},
        template={"env": [{"name": "HF_HUB_OFFLINE", "value": "1"}, {"name": "NOTE", "value": SECRET_CANARY}],
                  "nodeSelector": {"gpu": "h100"}, "runAsUser": 1000},
        parallelism={"generateShards": 3, "annotateShards": 2, "trainNodes": 2, "gpusPerNode": 2},
    )
    return build_sailrun_dict("sec", {**body, **spec}, namespace="team-a", uid=UID)


def _all_actions() -> list[CreatePhaseJob]:
    actions = []
    for iteration in (0, 1):
        for phase in Phase:
            if iteration == 0 and phase in (Phase.GENERATE, Phase.ANNOTATE):
                continue
            shards = {Phase.GENERATE: 3, Phase.ANNOTATE: 2}.get(phase)
            nodes = 2 if phase is Phase.TRAIN else 1
            actions.append(CreatePhaseJob(name=build_job_name("sec", iteration, phase, 2), iteration=iteration,
                                          phase=phase, attempt=2, shards=shards, nodes=nodes))
    return actions


ACTIONS = _all_actions()


def _walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    found = [(path, node)]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _walk(value, f"{path}[{index}]")
    return found


@pytest.mark.parametrize("action", ACTIONS, ids=[a.name for a in ACTIONS])
def test_every_phase_job_is_hardened(action: CreatePhaseJob) -> None:
    job = build_phase_job(coerce_run(build_run()), action, OperatorSettings())
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"].get("runAsUser", 1) != 0
    for key in ("hostNetwork", "hostPID", "hostIPC", "shareProcessNamespace"):
        assert not pod.get(key), key
    assert all(set(volume) - {"name"} <= {"configMap", "emptyDir"} for volume in pod["volumes"]), pod["volumes"]
    for container in pod["containers"] + pod.get("initContainers", []):
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context.get("privileged", False) is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert "add" not in context["capabilities"]
        assert all(not mount.get("mountPropagation") for mount in container["volumeMounts"])


@pytest.mark.parametrize("action", ACTIONS, ids=[a.name for a in ACTIONS])
def test_credentials_appear_only_as_secret_key_refs_to_the_runs_secret(action: CreatePhaseJob) -> None:
    job = build_phase_job(coerce_run(build_run()), action, OperatorSettings())
    env = {item["name"]: item for item in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[name] == {"name": name, "valueFrom": {"secretKeyRef": {"name": "team-s3", "key": name}}}
    refs = [value for path, value in _walk(job) if path.endswith(".secretKeyRef")]
    assert refs and all(ref["name"] == "team-s3" and set(ref) <= {"name", "key", "optional"} for ref in refs)
    assert not [path for path, value in _walk(job) if path.endswith((".secretRef", ".secret"))]
    assert "envFrom" not in job["spec"]["template"]["spec"]["containers"][0]
    text = json.dumps(job)
    assert text.count("team-s3") == len(refs), "the secret's name is used outside a secretKeyRef"


@pytest.mark.parametrize("action", ACTIONS, ids=[a.name for a in ACTIONS])
def test_the_endpoint_never_becomes_the_global_aws_override(action: CreatePhaseJob) -> None:
    """AWS_ENDPOINT_URL would redirect STS too (the pod's web-identity token to the user's URL)."""
    job = build_phase_job(coerce_run(build_run()), action, OperatorSettings())
    env = {item["name"]: item.get("value") for item in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert not [name for name in env if name.startswith("AWS_ENDPOINT_URL") and name != "AWS_ENDPOINT_URL_S3"]
    assert env["AWS_ENDPOINT_URL_S3"] == "http://minio:9000"
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"


def test_the_spec_configmap_and_service_hold_no_credentials() -> None:
    run = coerce_run(build_run())
    rendered = json.dumps([build_spec_configmap(run), build_headless_service(run, ACTIONS[-1])])
    assert "team-s3" not in rendered and "secretKeyRef" not in rendered


# ---------------------------------------------------------------- policy gaps not covered elsewhere

def _spec(**overrides: Any) -> SAILRunSpec:
    return SAILRunSpec.model_validate(build_run(**overrides)["spec"])


@pytest.mark.parametrize(("storage_uri", "why"), [
    ("file:///var/lib/kubelet", "a file:// URI is a host path"),
    ("/", "the root folder"),
    ("relative/folder", "a relative folder"),
    (None, "no storage at all (a folder next to the file is for sail run)"),
])
def test_only_s3_storage_is_allowed_on_a_cluster(storage_uri: str | None, why: str) -> None:
    spec = _spec(storage={"uri": storage_uri})
    problems = compute_policy_violations(spec, OperatorPolicy())
    assert any("spec.storage.uri" in p for p in problems), why


@pytest.mark.parametrize("image", ["ghcr.io/sail-dev/sail-trainer", "docker.io/library/python:3.11",
                                   "evil.example/sail-trainer-miner:1", "sail-trainer:1"])
def test_images_other_than_the_trainer_are_refused(image: str) -> None:
    problems = compute_policy_violations(_spec(template={"image": image}), OperatorPolicy())
    assert any("spec.template.image" in p for p in problems), image


@pytest.mark.parametrize("image", ["evil.example/sail-trainer:1", "docker.io/attacker/sail-trainer:latest",
                                   "evil.example/x/y/sail-trainer@sha256:" + "0" * 64])
def test_a_foreign_registry_with_the_trainer_name_is_refused_by_default(image: str) -> None:
    problems = compute_policy_violations(_spec(template={"image": image}), OperatorPolicy())
    assert any("spec.template.image" in p for p in problems), image


@pytest.mark.parametrize("name", ["AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "SAIL_TERMINATION_LOG", "PET_MASTER_ADDR",
                                  "MASTER_ADDR", "WORLD_SIZE", "RANK"])
def test_reserved_environment_names_are_refused(name: str) -> None:
    problems = compute_policy_violations(_spec(template={"env": [{"name": name, "value": "x"}]}), OperatorPolicy())
    assert any("spec.template.env[0].name" in p for p in problems), name


def test_an_admin_can_forbid_more_env_names_and_node_selector_keys() -> None:
    policy = OperatorPolicy(extra_forbidden_env=("LD_",), allowed_node_selector_keys=("gpu",))
    spec = _spec(template={"env": [{"name": "LD_PRELOAD", "value": "/x.so"}],
                           "nodeSelector": {"node-role.kubernetes.io/control-plane": ""}})
    problems = compute_policy_violations(spec, policy)
    assert any("spec.template.env[0].name" in p for p in problems)
    assert any("spec.template.nodeSelector" in p for p in problems)


def test_a_blanket_toleration_is_refused_by_default() -> None:
    spec = _spec(template={"tolerations": [{"operator": "Exists"}]})
    problems = compute_policy_violations(spec, OperatorPolicy())
    assert any("spec.template.tolerations" in p for p in problems)
