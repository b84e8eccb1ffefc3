"""With as many annotate as generate shards, annotate shard k reads only generate shard k's latents.

Found by bench/scale.py: annotate shards took prompts one by one (k, k+S, ...) while generate
shards take groups of `batchSize // N` prompts, so every annotate shard read a row from every
generate part and downloaded the whole round's latents (4 shards, 1000 prompts on S3: 32 MiB
down instead of 8). Each annotate record names the generate shard its latents come from.
"""

from __future__ import annotations

import json
from pathlib import Path

from sail_api.layout import RunLayout
from sail_api.phases import Phase
from sail_api.storage import LocalStore
from sail_trainer.cli import main
from sail_trainer.storage import read_committed_bytes
from tests.builders.tiny_run import create_tiny_run, phase_args

SHARDS = 2


def test_annotate_shard_k_reads_only_generate_shard_k(tmp_path: Path) -> None:
    # batchSize 4 with N = 2: generate batches (and shards) hold groups of 2 prompts
    run = create_tiny_run(tmp_path, num_pairs=4, num_prompts=12, promptsPerRound=8, candidatesPerPrompt=2,
                          sampler={"batchSize": 4}, train={"steps": 1, "step0Steps": 1})
    for phase, iteration in (("mixup", 0), ("train", 0)):
        assert main(phase_args(run, phase, iteration)) == 0
    for phase in ("generate", "annotate"):
        for k in range(SHARDS):
            assert main(phase_args(run, phase, 1, "--shard", f"{k}/{SHARDS}")) == 0
    layout, store = RunLayout(run.run_uri), LocalStore(run.run_uri)
    seen = set()
    for k in range(SHARDS):
        folder = layout.shard_dir(1, Phase.ANNOTATE, k, SHARDS)
        pairs = json.loads(read_committed_bytes(store, folder, "annotations.json"))["pairs"]
        sources = {p["generate"] for p in pairs}
        assert sources == {f"iter-001/generate/shard-{k:05d}-of-{SHARDS:05d}"}, (k, sources)
        seen |= {p["prompt_index"] for p in pairs}
    assert len(seen) == 8  # every prompt of the round annotated once
