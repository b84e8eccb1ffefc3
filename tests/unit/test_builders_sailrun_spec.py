"""tests/builders/sailrun_spec.py: the shared spec builder merges the way the tests that use it rely on."""

from __future__ import annotations

from tests.builders.sailrun_spec import (
    build_sailrun,
    build_sailrun_dict,
    build_spec,
    build_spec_body,
    merge_spec,
)


def test_the_default_body_is_a_valid_spec_with_the_three_inputs_and_a_run_root():
    body = build_spec_body()
    assert set(body) == {"model", "seedPairs", "prompts", "storage"}
    assert build_spec().storage.uri == "s3://b/run"


def test_overrides_merge_one_level_deep_replace_non_dicts_and_none_removes():
    body = build_spec_body(sail={"rounds": 2}, storage={"uri": "s3://x/r", "region": "eu-west-1"})
    merged = merge_spec(body, sail={"beta": 10.0}, suspend=True, storage=None)
    assert merged["sail"] == {"rounds": 2, "beta": 10.0} and merged["suspend"] is True
    assert "storage" not in merged and body["storage"] == {"uri": "s3://x/r", "region": "eu-west-1"}  # a copy


def test_the_object_leaves_out_metadata_it_was_not_given():
    run = build_sailrun_dict("r1", {"x": 1}, uid="u")
    assert run == {"apiVersion": "sail.dev/v1alpha1", "kind": "SAILRun", "metadata": {"name": "r1", "uid": "u"},
                   "spec": {"x": 1}}
    assert "status" in build_sailrun_dict("r1", {}, status={"state": "Running"})
    assert build_sailrun("demo", storage=None).spec.storage.uri is None
