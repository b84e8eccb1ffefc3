"""1 shard and 2 shards of generate/annotate give identical outputs, prompt by prompt.

The 1-shard generate is first interrupted after its first committed part and resumed, so the
comparison also proves that a resumed generate equals uninterrupted ones.

Step 0 runs for real (in process, through `sail_trainer.cli.main`); then generate and annotate
run once as 1/1 and once as 0/2 + 1/2 in the same run root (shard folders differ by count).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sail_api.layout import RunLayout
from sail_api.phases import Phase
from sail_api.storage import LocalStore
from sail_api.storage.resolve import logical_path
from sail_trainer.cli import main
from sail_trainer.phases import annotate_phase, artifacts, generate_phase
from sail_trainer.phases.artifacts import load_tensors
from sail_trainer.storage import resolve_committed
from tests.builders.tiny_run import create_tiny_run, phase_args

_real_annotate_commit = annotate_phase._commit_part


def _ok(args: list[str]) -> None:
    assert main(args) == 0


def _listed(folder: str, name: str) -> list[Path]:
    """Part files called `name` that the shard's committed manifest lists (under attempt prefixes)."""
    manifest = LocalStore(folder).read_manifest(folder)
    return [Path(folder, f.path) for f in manifest.files
            if logical_path(f.path).startswith("parts/") and f.path.endswith("/" + name)]


def _read(folder: str, name: str) -> str:
    return Path(resolve_committed(LocalStore(folder), folder, name)).read_text()


def _generated(layout: RunLayout, shards: int) -> dict[int, object]:
    out = {}
    for k in range(shards):
        folder = layout.shard_dir(1, Phase.GENERATE, k, shards)
        for part in _listed(folder, "latents.safetensors"):
            tensors = load_tensors(part.read_bytes())
            for row, j in enumerate(tensors["prompt_index"].tolist()):
                out[j] = tensors["latents"][row]
    return out


def _annotated(layout: RunLayout, shards: int) -> dict[int, dict]:
    out = {}
    for k in range(shards):
        folder = layout.shard_dir(1, Phase.ANNOTATE, k, shards)
        for pair in json.loads(_read(folder, "annotations.json"))["pairs"]:
            out[pair["prompt_index"]] = {key: pair[key] for key in ("rewards", "winner", "loser", "margin", "prompt")}
    return out


def test_one_and_two_shards_give_identical_generate_and_annotate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setenv("SAIL_TERMINATION_LOG", str(tmp_path / "term"))
    monkeypatch.setattr(artifacts, "GEN_PART", 2)  # several latent part files per shard
    # batchSize 2 with N=2: one prompt per generate batch, so the two shards really split the prompts
    run = create_tiny_run(tmp_path, promptsPerRound=5, sampler={"batchSize": 2, "kind": "euler_ancestral"})
    _ok(phase_args(run, "mixup", 0))
    _ok(phase_args(run, "train", 0))
    layout = RunLayout(run.run_uri)
    _crash_after_first_part(monkeypatch, generate_phase)
    assert main(phase_args(run, "generate", 1, "--shard", "0/1")) == 1
    monkeypatch.undo()
    monkeypatch.setenv("SAIL_TERMINATION_LOG", str(tmp_path / "term"))
    monkeypatch.setattr(artifacts, "GEN_PART", 2)
    _ok(phase_args(run, "generate", 1, "--shard", "0/1"))  # resumes: reuses the part the crashed attempt committed
    one_dir = layout.shard_dir(1, Phase.GENERATE, 0, 1)
    assert LocalStore(run.run_uri).read_manifest(one_dir).metadata["reused_parts"] == 1
    for k in (0, 1):
        _ok(phase_args(run, "generate", 1, "--shard", f"{k}/2"))
    one, two = _generated(layout, 1), _generated(layout, 2)
    assert sorted(one) == sorted(two) and len(one) == 5
    for j in one:
        assert torch.equal(one[j], two[j]), f"prompt {j}: latents differ between 1 and 2 shards"
    assert not torch.equal(one[sorted(one)[0]][0], one[sorted(one)[0]][1]), "candidates of a prompt are identical"

    monkeypatch.setattr(annotate_phase, "ANNOTATE_PART", 2)
    _crash_after_first_part(monkeypatch, annotate_phase)
    assert main(phase_args(run, "annotate", 1, "--shard", "0/1")) == 1
    monkeypatch.setattr(annotate_phase, "_commit_part", _real_annotate_commit)
    _ok(phase_args(run, "annotate", 1, "--shard", "0/1"))  # resumes after its first committed part
    annotate_meta = LocalStore(run.run_uri).read_manifest(layout.shard_dir(1, Phase.ANNOTATE, 0, 1)).metadata
    assert annotate_meta.pop("attempt").startswith("attempt-")
    assert annotate_meta == {"draws": 2, "parts": 3, "reused_parts": 1}
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    _ok(phase_args(run, "annotate", 1, "--shards", "2"))
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "0")
    _ok(phase_args(run, "annotate", 1, "--shards", "2"))
    a1, a2 = _annotated(layout, 1), _annotated(layout, 2)
    assert a1 == a2 and len(a1) == 5
    assert {len(v) for v in _shard_prompts(layout, 2)} == {2, 3}
    assert len(_listed(one_dir, "latents.safetensors")) == 3

    _ok(phase_args(run, "mixup", 1))  # reads the 2-shard annotate set, the most shards committed
    _ok(phase_args(run, "train", 1))  # self pairs resolved through part files and candidate indices


def _crash_after_first_part(monkeypatch: pytest.MonkeyPatch, module) -> None:
    """The attempt dies right after committing its first part (as if preempted)."""
    real = module._commit_part

    def commit_then_die(*args, **kwargs):
        real(*args, **kwargs)
        raise RuntimeError("preempted")

    monkeypatch.setattr(module, "_commit_part", commit_then_die)


def _shard_prompts(layout: RunLayout, shards: int) -> list[list[int]]:
    return [json.loads(_read(layout.shard_dir(1, Phase.ANNOTATE, k, shards), "annotations.json"))["pairs"]
            for k in range(shards)]
