"""OpenMP wait policy: wall and CPU time of sampling toy images with 1 and 2 torch threads, per policy.

Usage: .venv/bin/python bench/threads.py [--samples 16] [--repeats 2] [--policies default PASSIVE]
[--out FILE]. Each policy runs in its own child process (libgomp reads OMP_WAIT_POLICY once, when
torch loads); the child loads the toy model of examples/toy, warms up, then samples `--samples`
captions (12 steps, the alignment bench's sampler) with 1, 2, 1, 2 threads. The figures and the
choice they support are in docs/dev/threads.md; report the machine's load with them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import REPO, add_repo_paths, describe_machine, format_table, write_json  # noqa: E402

COLUMNS = [("policy", "OMP_WAIT_POLICY"), ("threads", "threads"), ("wall_s", "wall s"), ("cpu_s", "CPU s"),
           ("load1", "load (1 min)")]


def run_child(samples: int, model: Path) -> None:
    """In the child: print one JSON line per (thread count) measurement."""
    add_repo_paths()
    import torch

    from sail_trainer.toy.pipeline import load_pipeline, sample_images

    pipe = load_pipeline(model)
    pipe.set_progress_bar_config(disable=True)
    sample_images(pipe, ["a red circle"] * 2, [1, 2], steps=2)  # warm-up: first-call allocations
    captions = (["a red circle", "a blue square"] * samples)[:samples]
    for threads in (1, 2, 1, 2):
        torch.set_num_threads(threads)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        sample_images(pipe, captions, list(range(samples)), steps=12, guidance_scale=3.0)
        print(json.dumps({"policy": os.environ.get("OMP_WAIT_POLICY", "default"), "threads": threads,
                          "wall_s": round(time.perf_counter() - wall0, 2),
                          "cpu_s": round(time.process_time() - cpu0, 2),
                          "load1": round(os.getloadavg()[0], 1)}), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2, help="child processes per policy (alternating)")
    p.add_argument("--policies", nargs="+", default=["default", "PASSIVE"], help="'default' leaves it unset")
    p.add_argument("--model", type=Path, default=REPO / "examples" / "toy" / "model")
    p.add_argument("--out", type=Path, default=None, help="JSON output file")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        run_child(args.samples, args.model)
        return 0
    rows = []
    for _ in range(args.repeats):
        for policy in args.policies:
            env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
            if policy != "default":
                env["OMP_WAIT_POLICY"] = policy
            command = [sys.executable, __file__, "--child", "--samples", str(args.samples), "--model", str(args.model)]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)  # noqa: S603
            rows.extend(json.loads(line) for line in done.stdout.splitlines() if line.startswith("{"))
    write_json(args.out, {"benchmark": "threads", "machine": describe_machine(), "samples": args.samples, "rows": rows})
    print(format_table(rows, COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
