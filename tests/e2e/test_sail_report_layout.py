"""`sail report` and `sail status` details of issue 19 item 9, checked where the user meets them.

- grid columns carry their prompts (the train manifest's `sample_prompts`);
- the phase table names each iteration's committed model folder (attempt-<id>/model) and the
  phase's own numbers; `sail status` the final model;
- nothing overflows a narrow window (headless Chromium at 360 px, skipped without Chromium).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sail_api.layout import COMMIT_MARKER
from sail_api.status import CheckpointStatus
from sail_operator.cli import main
from sail_operator.local.state import load_state, save_state
from tests.e2e.test_report_chromium import CHROMIUM, ROUNDS, build_run_root, run_chromium

PROMPTS = ["a red circle", "one blue square that is rather long for a column label", "two green triangles"]
MEASURE = """<script>
window.addEventListener('load', () => {
  const doc = document.documentElement;
  document.body.setAttribute('data-overflow', String(doc.scrollWidth - doc.clientWidth));
});
</script></body>"""


def build_labelled_run(root: Path) -> None:
    build_run_root(root)
    for iteration in range(ROUNDS + 1):
        marker = root / f"iter-{iteration:03d}" / "train" / COMMIT_MARKER
        body = json.loads(marker.read_text())
        body["metadata"] = {**body.get("metadata", {}), "sample_prompts": PROMPTS,
                            "model_uri": str(marker.parent / f"attempt-{iteration:012x}" / "model")}
        marker.write_text(json.dumps(body))
    state = load_state(root / "local" / "state.json")
    state.status.checkpoint = CheckpointStatus(uri=body["metadata"]["model_uri"], iteration=ROUNDS)
    save_state(root / "local" / "state.json", state)


def test_the_report_labels_grid_columns_and_names_committed_models(tmp_path, capsys):
    root = tmp_path / "run"
    build_labelled_run(root)
    assert main(["report", str(root), "--out", str(tmp_path / "r.html")]) == 0
    text = Path(capsys.readouterr().out.strip()).read_text()
    figures = re.findall(r"<figure class='grid \w+'.*?</figure>", text, flags=re.S)
    assert len(figures) == ROUNDS + 2
    for figure in figures:
        assert re.findall(r"<span title='([^']*)'>", figure) == PROMPTS
    assert str(root / "iter-001" / "train" / f"attempt-{1:012x}" / "model") in text
    assert "Final model:" in text

    assert main(["status", str(root)]) == 0
    out = capsys.readouterr().out
    assert str(root / "iter-000" / "train" / f"attempt-{0:012x}" / "model") in out  # not iter-000/train/model
    assert "final model" in out


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed: apt-get install -y chromium")
def test_nothing_overflows_a_narrow_window(tmp_path, capsys):
    root = tmp_path / "run"
    build_labelled_run(root)
    assert main(["report", str(root), "--out", str(tmp_path / "r.html")]) == 0
    report = Path(capsys.readouterr().out.strip())
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", MEASURE))
    for width in (360, 1200):
        dom = run_chromium(tmp_path, probe.as_uri(), "--dump-dom", f"--window-size={width},900")
        assert dom.returncode == 0, dom.stderr[-2000:]
        assert 'data-overflow="0"' in dom.stdout, (width, re.findall(r'data-overflow="(-?\d+)"', dom.stdout))
