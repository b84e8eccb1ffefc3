"""planner/progress.py: status.progress from the cursor alone. Pure."""

from __future__ import annotations

import pytest

from sail_api.phases import Phase
from sail_operator.planner.progress import compute_progress
from sail_operator.planner.steps import Step


@pytest.mark.parametrize(("rounds", "cursor", "done", "percent"), [
    (1, Step(0, Phase.MIXUP), 0, 0),          # nothing done yet
    (1, Step(0, Phase.TRAIN), 1, 16),         # 1 of 6, rounded down
    (1, Step(1, Phase.TRAIN), 5, 83),
    (2, Step(1, Phase.GENERATE), 2, 20),      # 2 of 10
    (1, None, 6, 100),                        # finished: no cursor
    (1, Step(2, Phase.GENERATE), 6, 100),     # past the last round (rounds lowered)
    (0, Step(0, Phase.TRAIN), 1, 50),
], ids=["start", "step0-train", "last-train", "round1-of-2", "no-cursor", "past-the-end", "step0-only"])
def test_progress_counts_the_phases_before_the_cursor(rounds, cursor, done, percent):
    progress = compute_progress(rounds, cursor)
    assert (progress.completed_phases, progress.percent, progress.total_phases) == (done, percent, 2 + 4 * rounds)
