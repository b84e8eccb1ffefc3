"""`sail plan FILE` on every example: the table, the JSON, the facts read from local files, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sail_operator.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name", ["quickstart.yaml", "sd15.yaml", "sdxl.yaml"])
def test_plan_prints_every_phase_and_the_total(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(EXAMPLES / name)]) == 0
    text = capsys.readouterr().out
    for label in ("step0 mixup", "step0 train", "round generate", "round annotate", "round mixup", "round train",
                  "run total"):
        assert label in text, label
    assert main(["plan", str(EXAMPLES / name), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["total"]["unetForwards"] == sum(p["unetForwards"] for p in doc["phases"])
    assert doc["total"]["gpuHours"] > 0 and doc["total"]["storageBytes"] > 0


def test_plan_reads_the_toy_model_and_seed_file(capsys: pytest.CaptureFixture[str]) -> None:
    """The quick start has no seedPairs.limit: the 32 lines of its local JSONL are counted, and the
    toy VAE's 4x downsampling (not SD1.5's 8x) sizes the stored latents."""
    assert main(["plan", str(EXAMPLES / "quickstart.yaml"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    step0_mixup = doc["phases"][0]
    assert step0_mixup["vaeEncodes"] == 2 * 32
    generate = next(p for p in doc["phases"] if p["phase"] == "generate")
    assert generate["storageBytes"] >= 16 * 4 * (4 * 8 * 8 * 4)  # 16 prompts x 4 candidates x 4x8x8 fp32
    assert doc["notes"] == []


def test_plan_refuses_an_unknown_card_and_a_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(EXAMPLES / "sd15.yaml"), "--card", "B200"]) == 2
    assert "card 'B200'" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: sail.dev/v1alpha1\nkind: SAILRun\nmetadata: {name: x}\nspec: {sail: {rounds: -1}}\n")
    assert main(["plan", str(bad)]) == 2


def test_plan_checks_a_policy_budget_as_the_operator_will(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"maxRoundGpuHours": 5, "maxRoundStorageBytes": 0}))
    assert main(["plan", str(EXAMPLES / "sd15.yaml"), "--policy-file", str(policy)]) == 2
    assert "spec.sail.promptsPerRound 10000" in capsys.readouterr().err
    policy.write_text(json.dumps({"maxRoundGpuHours": 50}))
    assert main(["plan", str(EXAMPLES / "sd15.yaml"), "--policy-file", str(policy)]) == 0
    policy.write_text("{not json")
    assert main(["plan", str(EXAMPLES / "sd15.yaml"), "--policy-file", str(policy)]) == 2
    assert "--policy-file" in capsys.readouterr().err
