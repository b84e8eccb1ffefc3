"""docs/paper-settings.md holds the SD1.5 paper run; it must stay valid and match examples/sd15.yaml."""

from __future__ import annotations

import re
from pathlib import Path

from sail_api.validation import check_semantics, load_run_file, parse_run

ROOT = Path(__file__).resolve().parents[2]


def documented_run_text() -> str:
    text = (ROOT / "docs" / "paper-settings.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 1, "docs/paper-settings.md should hold exactly one yaml block: the run"
    return blocks[0]


def test_documented_run_is_valid_and_clean():
    run = parse_run(documented_run_text(), "docs/paper-settings.md")
    assert check_semantics(run) == []


def test_documented_algorithm_equals_the_sd15_example():
    documented = parse_run(documented_run_text(), "docs/paper-settings.md").spec.algorithm()
    example = load_run_file(ROOT / "examples" / "sd15.yaml").spec.algorithm()
    assert documented == example, "keep docs/paper-settings.md and examples/sd15.yaml in step"


def test_paper_values_are_the_ones_the_method_document_gives():
    sail = load_run_file(ROOT / "examples" / "sd15.yaml").spec.sail
    assert (sail.rounds, sail.candidates_per_prompt, sail.reward_draws, sail.alpha) == (3, 8, 10, 0.25)
    assert (sail.sampler.kind, sail.sampler.steps, sail.sampler.guidance_scale, sail.sampler.resolution) == (
        "ddpm", 50, 7.5, 512)
    assert sail.train.effective_batch == 128 and sail.train.optimizer.kind == "adamw"
    assert sail.train.optimizer.learning_rate == 1e-8 * sail.train.effective_batch
    sdxl = load_run_file(ROOT / "examples" / "sdxl.yaml").spec
    assert (sdxl.model.layout, sdxl.sail.rounds, sdxl.sail.sampler.kind, sdxl.sail.sampler.steps) == (
        "sdxl", 2, "ddim", 20)
    assert (sdxl.sail.sampler.guidance_scale, sdxl.sail.sampler.resolution) == (5.0, 1024)
    assert sdxl.sail.train.optimizer.kind == "adafactor" and sdxl.sail.train.gradient_checkpointing


def test_example_comments_name_a_source_for_every_algorithm_value():
    """Every value line under spec.model/seedPairs/prompts/sail carries a comment."""
    lines = (ROOT / "examples" / "sd15.yaml").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line == "spec:")
    end = next(i for i, line in enumerate(lines) if line == "  storage:")
    values = [line for line in lines[start + 1:end] if re.match(r"^\s+\w+: \S", line)]
    assert len(values) > 30
    missing = [line for line in values if "#" not in line]
    assert missing == [], "values without a source comment"
