"""Step 0's seed encoding killed after its first part and resumed, against an uninterrupted run.

The tests' tiny SD1.5-layout pipeline (16 px, 8x8 latents) and `bench/scale.py`'s synthetic seed
pairs; the real `sail-trainer mixup --iteration 0` in this process, three times: uninterrupted
(run a), then on run b a fault injected before part 1 (where a SIGKILL would stop the process:
part 0 of 4096 pairs is committed), then run b again. Reports wall and CPU seconds and the pairs
each run passed to the VAE, and whether run b's parts are byte-identical to run a's.

    OMP_NUM_THREADS=1 .venv/bin/python bench/seed_resume.py --pairs 5000 --out /tmp/bench-out/seed-resume.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.scale import build_model, build_prompts, build_seed_pairs, build_spec  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=5000, help="seed pairs (more than one part: > 4096)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sail-bench-seed-resume"), help="scratch folder")
    parser.add_argument("--out", type=Path, help="JSON results")
    args = parser.parse_args(argv)

    from sail_api.layout import RunLayout
    from sail_api.storage import LocalStore
    from sail_trainer.cli import main as trainer_main
    from sail_trainer.phases import artifacts as art
    from sail_trainer.phases import mixup_phase
    from sail_trainer.storage import resolve_committed

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SAIL_TERMINATION_LOG", str(work / "termination-log"))
    spec_args = argparse.Namespace(candidates=8, batch=256, train_steps=2)
    model, seed = build_model(work / "model"), build_seed_pairs(work / "seed", args.pairs)
    prompts = build_prompts(work / "prompts.txt", 8)
    encoded = [0]
    encode_pairs, encode_part = mixup_phase._encode_pairs, mixup_phase._encode_part

    def counting(components, chunk, resolution, generator):
        encoded[0] += len(chunk)
        return encode_pairs(components, chunk, resolution, generator)

    def dying(ctx, components, part, *rest):
        if part == 1:
            raise RuntimeError("killed before part 1 (bench fault)")
        return encode_part(ctx, components, part, *rest)

    def timed(label: str, run_uri: str) -> dict:
        spec = build_spec(work / f"spec-{label}.json", run_uri, model, seed, prompts, 8, spec_args, None)
        encoded[0] = 0
        wall, cpu = time.perf_counter(), time.process_time()
        rc = trainer_main(["mixup", "--run", run_uri, "--iteration", "0", "--spec", str(spec)])
        return {"run": label, "exit_code": rc, "seconds": round(time.perf_counter() - wall, 2),
                "cpu_seconds": round(time.process_time() - cpu, 2), "pairs_encoded": encoded[0]}

    mixup_phase._encode_pairs = counting
    stamp = f"{time.time_ns():x}"
    run_a, run_b = str(work / f"a-{stamp}"), str(work / f"b-{stamp}")
    rows = [timed("uninterrupted", run_a)]
    mixup_phase._encode_part = dying
    rows.append(timed("killed", run_b))
    mixup_phase._encode_part = encode_part
    rows.append(timed("resumed", run_b))

    def part_bytes(run_uri: str, part: int) -> bytes:
        folder = f"{run_uri}/iter-000/mixup"
        return Path(resolve_committed(LocalStore(run_uri), folder, art.seed_part_name(part))).read_bytes()

    parts = art.read_seed_index(LocalStore(run_a), RunLayout(run_a))["parts"]
    result = {"pairs": args.pairs, "parts": parts, "rows": rows,
              "identical": all(part_bytes(run_a, p) == part_bytes(run_b, p) for p in range(parts))}
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
