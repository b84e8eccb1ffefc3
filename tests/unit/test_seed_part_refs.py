"""Seed pair i lives in part i // chunk_size at row i % chunk_size; old indexes keep their layout."""

from __future__ import annotations

from sail_api.layout import RunLayout
from sail_api.phases import Phase
from sail_trainer.phases import artifacts as art


def test_seed_refs_name_the_part_folder_and_row() -> None:
    layout = RunLayout("s3://bucket/run")
    winner, loser = art.seed_refs(layout, {"chunk_size": 4096, "parts": 13}, 4097)
    assert winner.folder == loser.folder == layout.phase_dir(0, Phase.MIXUP)
    assert winner.name == loser.name == "parts/part-00001/seed-latents.safetensors"
    assert (winner.key, loser.key, winner.row, loser.row) == ("winner", "loser", 1, 1)


def test_an_index_written_before_parts_keeps_its_top_level_chunk_files() -> None:
    winner, _ = art.seed_refs(RunLayout("/runs/r"), {"chunk_size": 4096}, 8192)
    assert (winner.name, winner.row) == ("seed-latents-00002.safetensors", 0)
