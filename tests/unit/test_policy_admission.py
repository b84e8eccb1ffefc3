"""The operator policy: what a namespace user may not make the operator do."""

import pytest

from sail_api.spec import SAILRunSpec
from sail_operator.policy import OperatorPolicy, compute_policy_violations
from tests.builders.sailrun_spec import build_spec_body, merge_spec


def build_spec(**overrides) -> SAILRunSpec:
    body = build_spec_body(prompts="s3://b/prompts.txt", storage="s3://b/runs/x",
                           template={"image": "ghcr.io/sail-dev/sail-trainer:0.1.0"})
    return SAILRunSpec.model_validate(merge_spec(body, **overrides))


def test_default_spec_passes_the_default_policy():
    assert compute_policy_violations(build_spec(), OperatorPolicy()) == []


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"template": {"image": "evil.example/miner:latest"}}, "spec.template.image"),
        ({"template": {"serviceAccountName": "namespace-admin"}}, "spec.template.serviceAccountName"),
        ({"template": {"priorityClassName": "system-cluster-critical"}}, "spec.template.priorityClassName"),
        ({"template": {"env": [{"name": "AWS_ACCESS_KEY_ID", "value": "x"}]}}, "spec.template.env[0].name"),
        ({"template": {"env": [{"name": "JOB_COMPLETION_INDEX", "value": "3"}]}}, "reserved"),
        ({"storage": {"uri": "/var/lib/host"}}, "spec.storage.uri"),
        ({"parallelism": {"trainNodes": 64}}, "spec.parallelism.trainNodes"),
    ],
    ids=[
        "an image outside the allow-list is refused",
        "another service account is refused unless the admin allows it",
        "a system priority class is refused",
        "credentials in env are refused",
        "spoofing the shard index is refused",
        "a host path as storage is refused on a cluster",
        "more train nodes than the policy maximum are refused",
    ],
)
def test_violations_name_the_field(overrides, fragment):
    problems = compute_policy_violations(build_spec(**overrides), OperatorPolicy())
    assert len(problems) == 1
    assert fragment in problems[0]


def test_admin_can_allow_a_service_account_and_image():
    policy = OperatorPolicy(allowed_images=("registry.corp/*",), allowed_service_accounts=("trainer-*",))
    spec = build_spec(template={"image": "registry.corp/sail:1", "serviceAccountName": "trainer-gpu"})
    assert compute_policy_violations(spec, policy) == []
