"""bench/gpu_check.py runs on CPU with tiny sizes, so the device check cannot rot between GPU runs."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from bench import gpu_check

pytestmark = pytest.mark.slow


def test_gpu_check_runs_every_check_on_cpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gpu-check.json"
    before = os.environ.get("SAIL_CPU_BF16")
    assert gpu_check.main(["--device", "cpu", "--quick", "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    assert os.environ.get("SAIL_CPU_BF16") == before  # the process environment is left as found
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("check ")]
    names = ["collective", "world", "phases", "annotation_precision"]
    assert [line.split(":")[0] for line in lines] == [f"check {n}" for n in names]
    assert all(": ok " in line for line in lines)
    doc = json.loads(out.read_text())
    checks = doc["checks"]
    assert set(checks) == set(names) and all(c["ok"] for c in checks.values())
    assert checks["collective"]["backend"] == "gloo"
    assert checks["world"]["first_loss"] == [pytest.approx(math.log(2), abs=1e-6)] * 2
    precision = checks["annotation_precision"]
    assert set(precision["bf16_vs_fp32"]) == {"best_agreement", "worst_agreement", "pair_agreement", "mean_spearman"}
    assert 0 < precision["update"]["mean_abs"] < 1e-4  # two steps at the paper's learning rate


def test_agreement_arithmetic() -> None:
    same = [[0.1, 0.3, 0.2], [0.5, 0.4, 0.6]]
    assert gpu_check.compare_rewards(same, same) == {"best_agreement": 1.0, "worst_agreement": 1.0,
                                                      "pair_agreement": 1.0, "mean_spearman": pytest.approx(1.0)}
    reversed_ = [[-v for v in row] for row in same]
    r = gpu_check.compare_rewards(same, reversed_)
    assert r["best_agreement"] == 0.0 and r["mean_spearman"] == pytest.approx(-1.0)
