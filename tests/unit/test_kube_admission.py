"""One admission verdict: `sail validate` (check_run) and the operator (admit_run) agree on a spec,
and the operator adds the cluster's rules (policy, s3 storage) in one place."""

from __future__ import annotations

import copy

import pytest

from sail_api.validation import check_run, validate_run_document
from sail_operator.kube.observe import admit_run, validate_run
from sail_operator.kube.settings import OperatorSettings
from sail_operator.policy import OperatorPolicy
from tests.builders.sailrun_spec import build_sailrun_dict, build_spec_body

RUN = build_sailrun_dict("r1", build_spec_body(
    model="s3://bkt/m", seed_pairs="s3://bkt/s.jsonl", prompts="s3://bkt/p.txt", storage="s3://bkt/runs/r1",
    template={"image": "ghcr.io/sail-dev/sail-trainer:1.0"}), namespace="ns")

SPEC_EDITS = {
    "queueName": ({"queueName": "team a!"}, "spec.queueName"),
    "requests over limits": ({"resources": {"train": {"requests": {"cpu": "4"}, "limits": {"cpu": "2"}}}},
                             "spec.resources.train.requests"),
    "nodeSelector value": ({"template": {"image": "ghcr.io/sail-dev/sail-trainer:1.0",
                                         "nodeSelector": {"pool": "gpu pool"}}}, "spec.template.nodeSelector"),
    "priorityClassName": ({"template": {"image": "ghcr.io/sail-dev/sail-trainer:1.0",
                                        "priorityClassName": "High_Prio"}}, "spec.template.priorityClassName"),
    "string for an integer": ({"sail": {"rounds": "3"}}, "spec.sail.rounds"),
}


def edited(extra: dict) -> dict:
    body = copy.deepcopy(RUN)
    body["spec"].update(extra)
    return body


@pytest.mark.parametrize("case", sorted(SPEC_EDITS))
def test_sail_validate_and_the_operator_give_the_same_verdict(case):
    extra, field = SPEC_EDITS[case]
    body = edited(extra)
    try:
        local = check_run(validate_run_document(copy.deepcopy(body)))
    except ValueError as error:  # RunFileError: the schema itself
        local = [str(error)]
    spec, message = validate_run(body, OperatorSettings())
    assert any(field in problem for problem in local), local
    assert spec is None and field in message


def test_the_cluster_rules_are_added_only_for_a_cluster():
    body = edited({"storage": {"uri": "/data/runs/r1"}, "template": {"image": "evil.example/x:1"}})
    run, local = admit_run(body, None)
    assert run is not None and local == []  # fine for `sail run` on one machine
    _, cluster = admit_run(body, OperatorPolicy())
    assert any("spec.storage.uri" in p for p in cluster) and any("spec.template.image" in p for p in cluster)
    assert validate_run(edited({}), OperatorSettings())[1] is None


def test_sail_validate_with_the_operators_policy_gives_the_operators_verdict(tmp_path, capsys):
    import json

    import yaml

    from sail_operator.cli import main

    body = edited({"storage": {"uri": "/data/runs/r1"}})
    body["metadata"].pop("namespace")
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(body))
    (tmp_path / "policy.json").write_text(json.dumps({"requireS3Storage": True}))
    assert main(["validate", str(tmp_path / "run.yaml")]) == 0
    assert main(["validate", str(tmp_path / "run.yaml"), "--policy-file", str(tmp_path / "policy.json")]) != 0
    assert "spec.storage.uri" in capsys.readouterr().err
    assert validate_run(body, OperatorSettings())[1] is not None  # the operator says no as well
