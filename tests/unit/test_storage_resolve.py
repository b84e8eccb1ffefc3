"""Logical names resolve through a committed manifest to the winning attempt's physical paths."""

from __future__ import annotations

from sail_api.manifest import FileEntry, PhaseManifest
from sail_api.storage.resolve import (
    is_attempt_dir,
    logical_path,
    new_attempt_dir,
    resolve_file,
    resolve_folder,
)
from sail_trainer.phases.runner import find_stale_attempts

SHA = "0" * 64


def _manifest(*paths: str) -> PhaseManifest:
    return PhaseManifest(files=[FileEntry(path=p, size=1, sha256=SHA) for p in paths])


def test_names_resolve_to_the_attempt_the_manifest_lists() -> None:
    m = _manifest("attempt-0123456789ab/metrics.json", "attempt-0123456789ab/model/unet/w.safetensors",
                  "parts/part-00001/attempt-ba9876543210/latents.safetensors")
    assert resolve_file(m, "metrics.json") == "attempt-0123456789ab/metrics.json"
    assert resolve_folder(m, "model") == "attempt-0123456789ab/model"
    assert resolve_file(m, "model/unet/w.safetensors") == "attempt-0123456789ab/model/unet/w.safetensors"
    assert resolve_file(m, "parts/part-00001/latents.safetensors") == \
        "parts/part-00001/attempt-ba9876543210/latents.safetensors"
    assert resolve_file(m, "samples.png") is None and resolve_folder(m, "steps") is None


def test_manifests_without_attempt_prefixes_resolve_to_themselves() -> None:
    m = _manifest("metrics.json", "model/model_index.json")
    assert resolve_file(m, "metrics.json") == "metrics.json"
    assert resolve_folder(m, "model") == "model"


def test_attempt_ids_are_fresh_and_recognised() -> None:
    a, b = new_attempt_dir(), new_attempt_dir()
    assert a != b and is_attempt_dir(a) and not is_attempt_dir("attempts") and not is_attempt_dir("model")
    assert logical_path(f"{a}/model/x") == "model/x"


def test_cleanup_candidates_are_only_other_attempt_prefixes() -> None:
    keys = ["/r/t/_SUCCESS.json", "/r/t/attempt-0123456789ab/metrics.json", "/r/t/attempt-0123456789ab/model/x",
            "/r/t/attempt-aaaaaaaaaaaa/metrics.json", "/r/t/steps/step-0000002/attempt-bbbbbbbbbbbb/unet.safetensors",
            "/r/t/metrics.json", "/r/other/attempt-cccccccccccc/x"]
    assert find_stale_attempts("/r/t", keys, "attempt-aaaaaaaaaaaa") == ["/r/t/attempt-0123456789ab"]
