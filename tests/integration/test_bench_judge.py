"""bench/judge.py: the agreement arithmetic, and one tiny run on the shipped toy model (the
benchmark measures; this checks that it runs and that its numbers mean what they say)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import judge

TOY_MODEL = Path(__file__).resolve().parents[2] / "examples" / "toy" / "model"


def test_agreement_counts_best_worst_and_every_pair():
    scores = np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]])
    same = scores * 10
    assert judge.compute_agreement(same, scores) == (1.0, 1.0)
    assert judge.compute_agreement(-same, scores) == (0.0, 0.0)
    # Row 0 right, row 1 reversed: half the winners, half the pairs.
    assert judge.compute_agreement(np.stack([same[0], -same[1]]), scores) == (0.5, 0.5)


def test_bad_range_names_the_flag():
    with pytest.raises(SystemExit, match="--ranges"):
        judge.parse_range("0.7:0.2")


@pytest.mark.slow
def test_a_judge_equal_to_its_reference_has_no_preference(tmp_path, capsys):
    """With the base model as both judge and reference every reward is 0: all ties, so the
    best/worst pick is the first/last index and pairwise agreement is undefined (NaN)."""
    import torch

    out = tmp_path / "judge.json"
    torch.set_num_threads(1)
    code = judge.main(["--judge", f"base={TOY_MODEL}", "--prompts", "3", "--candidates", "3", "--draws", "2",
                       "--ranges", "0.5:1", "--steps", "2", "--out", str(out)])
    assert code == 0
    assert torch.get_num_threads() == 1, "main() must restore torch's thread count (in-process callers)"
    doc = json.loads(out.read_text())
    (row,) = doc["rows"]
    assert row["draws"] == 2 and row["range"] == [0.5, 1.0]
    assert np.isnan(row["pairwise_agreement"])
    assert doc["oracle_spread_within_prompt"] > 0
    assert "best/worst" in capsys.readouterr().out
