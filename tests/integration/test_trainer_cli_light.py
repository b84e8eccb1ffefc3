"""The trainer's entry point stays light: `sail-trainer --help` and importing the CLI and the phase
runner load neither torch nor diffusers (the phase modules, which import them at module level, are
loaded only when a phase runs). A fresh interpreter per check: the test process has torch already."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "diffusers", "transformers")


def _heavy_modules_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_importing_the_cli_and_the_runner_loads_no_torch():
    assert _heavy_modules_after("import sail_trainer.cli, sail_trainer.phases.runner") == []


def test_help_loads_no_torch():
    code = ("import contextlib, io\nfrom sail_trainer.cli import main\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "    main(['train', '--help'])")
    assert _heavy_modules_after(code) == []
