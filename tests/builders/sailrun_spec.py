"""SAILRun specs for tests: one valid spec body with the few fields a test cares about changed.

Tests used to write the same required inputs (model, seedPairs, prompts, storage) by hand in
each file; this builds them once. The body is the camelCase wire form (what a YAML file or the
API server holds), so a test can validate it, wrap it in a SAILRun object, or dump it to YAML.

Overrides merge one level deep: a dict merges into the section of the same name
(``sail={"rounds": 2}`` keeps the other ``sail`` keys), anything else replaces it, and
``None`` removes the key (``storage=None`` for a run whose storage defaults).
"""

from __future__ import annotations

from typing import Any

from sail_api.spec import SAILRun, SAILRunSpec

API_VERSION = "sail.dev/v1alpha1"


def build_spec_body(*, model: str = "s3://b/base", seed_pairs: str = "s3://b/seed.jsonl",
                    prompts: str = "s3://b/p.txt", storage: str | dict[str, Any] | None = "s3://b/run",
                    **overrides: Any) -> dict[str, Any]:
    """A valid spec body (camelCase); `overrides` are spec keys (camelCase) merged one level deep.

    `storage` is the run root URI, or the whole storage section (endpoint, region, secret), or
    None for none (the local executor's default beside the run file).
    """
    body: dict[str, Any] = {"model": {"uri": model}, "seedPairs": {"uri": seed_pairs}, "prompts": {"uri": prompts}}
    if storage is not None:
        body["storage"] = dict(storage) if isinstance(storage, dict) else {"uri": storage}
    return merge_spec(body, **overrides)


def merge_spec(body: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """A copy of `body` with `overrides` merged one level deep (a test's defaults, then its case)."""
    out = dict(body)
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def build_spec(**kwargs: Any) -> SAILRunSpec:
    """`build_spec_body(**kwargs)` validated: the parsed spec the planner and executors take."""
    return SAILRunSpec.model_validate(build_spec_body(**kwargs))


def build_sailrun_dict(name: str, spec: dict[str, Any], *, namespace: str | None = None, uid: str | None = None,
                       generation: int | None = None, status: Any = None) -> dict[str, Any]:
    """A SAILRun object around a spec body; metadata keys left None are left out (as a client sends)."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": uid, "generation": generation}
    body: dict[str, Any] = {"apiVersion": API_VERSION, "kind": "SAILRun",
                            "metadata": {k: v for k, v in meta.items() if v is not None}, "spec": spec}
    if status is not None:
        body["status"] = status
    return body


def build_sailrun(name: str = "demo", **kwargs: Any) -> SAILRun:
    """A validated SAILRun named `name` whose spec is `build_spec_body(**kwargs)`."""
    return SAILRun.model_validate(build_sailrun_dict(name, build_spec_body(**kwargs)))
