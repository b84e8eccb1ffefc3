"""`sail report` opened in headless Chromium: one sample grid per iteration, plots, images load.

The run root is built here from committed train artifacts (grids as PNG, metrics.json,
manifests) and a state file, so this test needs no trainer and takes seconds; the real
trainer's report is checked in test_sail_run.py. Skipped (with the reason) when Debian's
chromium is not installed (`apt-get install -y chromium`).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sail_api.layout import COMMIT_MARKER, RunLayout
from sail_api.manifest import FileEntry, PhaseManifest
from sail_api.phases import Phase
from sail_api.status import IterationRecord, PhaseRecord, RunState, SAILRunStatus
from sail_operator.cli import main
from sail_operator.local.state import LocalState, save_state

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed: apt-get install -y chromium")
ROUNDS = 2
MARK_IMAGES = """<script>
window.addEventListener('load', () => {
  for (const img of document.images) {
    img.setAttribute('data-loaded', img.complete && img.naturalWidth > 0 ? 'yes' : 'no');
  }
  document.body.setAttribute('data-checked', String(document.images.length));
});
</script></body>"""


def png(colour: tuple[int, int, int], size=(64, 32)) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, colour)
    ImageDraw.Draw(image).rectangle((4, 4, 20, 20), fill=(255 - colour[0], 255 - colour[1], 255 - colour[2]))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def commit_train(root: Path, iteration: int, files: dict[str, bytes], attempt: str = "") -> None:
    """Commit a train folder like the trainer: files under the attempt's prefix (none: the layout
    before attempt prefixes, which the report still reads), a stale loser's copy beside it."""
    folder = Path(RunLayout(str(root)).phase_dir(iteration, Phase.TRAIN))
    entries = []
    for name, data in files.items():
        path = f"{attempt}/{name}" if attempt else name
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(data)
        entries.append(FileEntry(path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest()))
        if attempt:  # an uncommitted attempt's file of the same name is never shown
            (folder / "attempt-00000000dead" / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / "attempt-00000000dead" / name).write_bytes(png((0, 0, 0)) if name.endswith(".png") else b"[]")
    manifest = PhaseManifest(iteration=iteration, phase="train", files=entries,
                             metadata={"attempt": attempt} if attempt else {})
    (folder / COMMIT_MARKER).write_text(manifest.model_dump_json(by_alias=True))


def build_run_root(root: Path) -> None:
    for iteration in range(ROUNDS + 1):
        history = [{"step": s, "loss": 0.7 - 0.05 * s - 0.1 * iteration, "implicit_accuracy": 0.5 + 0.05 * s,
                    "reward_margin": 0.01 * s} for s in range(6)]
        files = {"samples.png": png((40 * iteration, 120, 200)), "metrics.json": json.dumps(history).encode()}
        if iteration == 0:
            files["samples-base.png"] = png((200, 60, 60))
        commit_train(root, iteration, files, attempt="" if iteration == 0 else f"attempt-{iteration:012x}")
    (root / "iter-003" / "train").mkdir(parents=True)  # uncommitted leftovers are never shown
    (root / "iter-003" / "train" / "samples.png").write_bytes(png((0, 0, 0)))
    status = SAILRunStatus(
        state=RunState.SUCCEEDED, message="complete", current_iteration=ROUNDS,
        iterations=[IterationRecord(iteration=i, phases=[PhaseRecord(phase="train", result="Succeeded",
                                                                     metrics={"loss": 0.5})])
                    for i in range(ROUNDS + 1)],
    )
    spec = {"model": {"uri": "/models/tiny"}, "sail": {"rounds": ROUNDS, "beta": 5000.0}}
    save_state(root / "local" / "state.json",
               LocalState(name="grid-demo", storage_uri=str(root), spec=spec, status=status))


def run_chromium(tmp: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp / 'profile'}",
            "--window-size=1200,2400", "--virtual-time-budget=5000", *extra, url]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=tmp)


def test_report_shows_a_grid_per_iteration_and_plots_in_headless_chromium(tmp_path, capsys):
    root = tmp_path / "run"
    build_run_root(root)
    assert main(["report", str(root), "--out", str(tmp_path / "report.html")]) == 0
    report = Path(capsys.readouterr().out.strip())
    assert report == (tmp_path / "report.html").resolve()
    text = report.read_text()
    assert "http://" not in text and "https://" not in text  # self-contained: nothing to fetch
    assert "beta: 5000.0" in text  # the spec

    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", MARK_IMAGES))
    dom = run_chromium(tmp_path, probe.as_uri(), "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    grids = re.findall(r"<figure class=\"grid (\w+)\" data-iteration=\"(\w+)\">", dom.stdout)
    assert grids == [("base", "base")] + [("iteration", str(i)) for i in range(ROUNDS + 1)]
    plots = re.findall(r'data-metric="(\w+)"', dom.stdout)
    assert plots == ["loss", "implicit_accuracy", "reward_margin"]
    loaded = re.findall(r'data-loaded="(\w+)"', dom.stdout)
    assert loaded and set(loaded) == {"yes"}, loaded
    comparison = dom.stdout.count('<figure id="comparison">')  # base and every iteration side by side
    assert comparison == 1
    assert f'data-checked="{len(grids) + len(plots) + comparison}"' in dom.stdout

    shot = tmp_path / "shot.png"
    done = run_chromium(tmp_path, report.as_uri(), f"--screenshot={shot}")
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 2400)
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # text, grids and plots, not a blank page
    white = max(count for count, colour in colours if colour == (255, 255, 255))
    assert white < 0.97 * image.size[0] * image.size[1]
