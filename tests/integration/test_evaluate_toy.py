"""The quick start's evaluate phase on the toy world: its scorers (the hidden preference and caption
fidelity) measure step 0 against the base on the same held-out captions and seeds.

The quick start itself (examples/quickstart.yaml: shipped toy pipeline, 32 seed pairs labelled by
the noisy size labeller, 64 held-out pairs, 32 evaluation samples) runs mixup, train and evaluate of
step 0. Measured (2-core CPU, 2026-12-05, `sail run examples/quickstart.yaml`): step 0 beats the base
on the hidden preference in 94% of the 32 samples (mean size 0.265 vs 0.239) at fidelity 0.59 (base
0.63). The test asks for a preference win rate more than two standard errors above even
(0.5 + 2 x 0.088 = 0.68).
"""

from __future__ import annotations

import numpy as np
import pytest

from sail_api.layout import RunLayout
from sail_api.phases import Phase
from sail_api.resolved import build_resolved_run
from sail_api.storage import LocalStore
from sail_trainer.cli import main
from tests.builders.quickstart_run import load_quickstart_run

pytestmark = pytest.mark.slow


def test_the_quick_start_scores_step0_above_the_base_on_the_hidden_preference(tmp_path):
    run = load_quickstart_run()
    spec = run.spec
    assert spec.evaluation is not None
    root = str(tmp_path / "run")
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(build_resolved_run(run, root).to_json())
    for phase in ("mixup", "train", "evaluate"):
        assert main([phase, "--run", root, "--iteration", "0", "--spec", str(spec_file)]) == 0, phase
    metrics = LocalStore(root).read_manifest(RunLayout(root).output_dir(0, Phase.EVALUATE, 0, 1)).metrics
    count = spec.evaluation.count
    assert metrics["eval_samples"] == count
    assert metrics["eval_preference_win_vs_base"] > 0.5 + 2 * np.sqrt(0.25 / count), metrics
    assert metrics["eval_preference_mean_current"] > metrics["eval_preference_mean_base"]
    for role in ("base", "previous", "current"):
        assert 0.0 <= metrics[f"eval_fidelity_mean_{role}"] <= 1.0
    assert metrics["eval_fidelity_mean_base"] > 0.3, "the fidelity scorer reads the toy base's samples"
