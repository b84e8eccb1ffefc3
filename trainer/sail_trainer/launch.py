"""Multi-process train from the operator's PET_* environment: re-run this command under torchrun.

A train pod gets `PET_NNODES`, `PET_NPROC_PER_NODE`, `PET_NODE_RANK`, `PET_MASTER_ADDR`,
`PET_MASTER_PORT` (torchrun's own environment configuration) and runs plain
`sail-trainer train ...`. When that asks for more than one process and no `RANK` is set yet,
`sail-trainer` starts `python -m torch.distributed.run -m sail_trainer -- train ...`
(torchrun reads the PET_* variables itself), waits, and reports the summary of the worker
that decides the outcome: the first failed rank's, else rank 0's. That keeps the documented
exit codes (torchrun alone would turn every failure into 1) and one termination message.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from sail_api.phases import TERMINATION_LOG_ENV

RANK_PLACEHOLDER = "{rank}"


def requested_world_size(env: dict[str, str]) -> int:
    """Processes the PET_* environment asks for (1 when absent or when already inside torchrun)."""
    if "RANK" in env or "LOCAL_RANK" in env:
        return 1
    try:
        return max(1, int(env.get("PET_NNODES", "1").split(":")[-1])) * max(1, int(env.get("PET_NPROC_PER_NODE", "1")))
    except ValueError:
        return 1


def resolve_termination_log(path: str, env: dict[str, str]) -> str:
    """A per-rank file when the launcher asked for one (`{rank}` in the path)."""
    return path.replace(RANK_PLACEHOLDER, env.get("RANK", "0")) if RANK_PLACEHOLDER in path else path


def launch_workers(argv: list[str], env: dict[str, str]) -> tuple[int, str | None]:
    """Run torchrun with our arguments; return (exit code, summary JSON of the deciding worker)."""
    with tempfile.TemporaryDirectory(prefix="sail-launch-") as folder:
        child_env = {**env, TERMINATION_LOG_ENV: str(Path(folder) / f"summary-{RANK_PLACEHOLDER}.json")}
        cmd = [sys.executable, "-m", "torch.distributed.run", "-m", "sail_trainer", "--", *argv]
        code = subprocess.run(cmd, env=child_env, check=False).returncode
        summaries = {}
        for path in Path(folder).glob("summary-*.json"):
            try:
                summaries[int(path.stem.split("-")[1])] = json.loads(path.read_text())
            except (ValueError, OSError):
                continue
    failed = [s for _, s in sorted(summaries.items()) if s.get("exitCode", 0) != 0]
    chosen = failed[0] if failed else summaries.get(0)
    if chosen is None:
        return (code or 1), None
    if code == 0:
        return 0, json.dumps(chosen, separators=(",", ":"))
    return int(chosen.get("exitCode") or code), json.dumps(chosen, separators=(",", ":"))
