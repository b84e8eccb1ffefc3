"""Step 0's seed encoding commits in parts: a run that dies mid-way resumes without re-encoding the
committed parts and ends byte-identical to an uninterrupted run.

The part size is lowered to 4 pairs (monkeypatched: 4096 pairs would need thousands of images)
and the "kill" is a fault injected between parts (the wrapper below raises where a SIGKILL would
stop the process); everything else is the real phase on a tiny real VAE and a local store.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sail_api.layout import RunLayout, join
from sail_api.phases import Phase
from sail_api.storage import LocalStore
from sail_trainer.cli import main
from sail_trainer.phases import artifacts as art
from sail_trainer.phases import mixup_phase
from sail_trainer.storage import resolve_committed
from tests.builders.tiny_run import TinyRun, create_tiny_run, phase_args

PAIRS, PART = 10, 4  # parts of 4, 4 and 2 pairs


def _outputs(run: TinyRun) -> dict[str, bytes]:
    """Logical name -> bytes of every file the committed mixup folder lists (attempt prefixes dropped)."""
    store, folder = LocalStore(run.run_uri), RunLayout(run.run_uri).phase_dir(0, Phase.MIXUP)
    names = [art.seed_part_name(p) for p in range(3)] + [art.SEED_INDEX, art.MIXTURE]
    out = {name: Path(resolve_committed(store, folder, name)).read_bytes() for name in names}
    # The two runs read their own copies of the same seed file: sources differ by the run folder only.
    out[art.SEED_INDEX] = out[art.SEED_INDEX].replace(str(run.folder).encode(), b"RUN")
    return out


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Pairs passed to the VAE per `_encode_pairs` call."""
    monkeypatch.setattr(art, "SEED_CHUNK", PART)
    calls: list[int] = []
    original = mixup_phase._encode_pairs

    def encode(components, chunk, resolution, generator):
        calls.append(len(chunk))
        return original(components, chunk, resolution, generator)

    monkeypatch.setattr(mixup_phase, "_encode_pairs", encode)
    return calls


def _die_at_part(monkeypatch: pytest.MonkeyPatch, dead: int) -> None:
    original = mixup_phase._encode_part

    def encode_part(ctx, components, part, *args):
        if part == dead:
            raise RuntimeError(f"killed before part {part}")
        return original(ctx, components, part, *args)

    monkeypatch.setattr(mixup_phase, "_encode_part", encode_part)


def test_killed_seed_encoding_resumes_without_re_encoding_committed_parts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, counted: list[int]) -> None:
    monkeypatch.setenv("SAIL_TERMINATION_LOG", str(tmp_path / "term"))
    run = create_tiny_run(tmp_path / "a", num_pairs=PAIRS)
    reference = create_tiny_run(tmp_path / "b", model=run.model, num_pairs=PAIRS)
    assert main(phase_args(reference, "mixup", 0)) == 0
    counted.clear()

    with monkeypatch.context() as m:
        _die_at_part(m, 2)
        assert main(phase_args(run, "mixup", 0)) != 0
    layout, store = RunLayout(run.run_uri), LocalStore(run.run_uri)
    folder = layout.phase_dir(0, Phase.MIXUP)
    assert not store.is_committed(folder)
    assert [store.is_committed(join(folder, art.seed_part_folder(p))) for p in range(3)] == [True, True, False]
    assert sum(counted) == 8
    # A dead attempt's torn write of part 2 (never committed): rewritten, never listed.
    torn = Path(folder, art.seed_part_folder(2), "attempt-0123456789ab", art.SEED_PART_FILE)
    torn.parent.mkdir(parents=True)
    torn.write_bytes(b"torn")

    counted.clear()
    assert main(phase_args(run, "mixup", 0)) == 0
    assert sum(counted) == 2, "the resumed run re-encoded committed parts"
    manifest = store.read_manifest(folder, verify=True)
    assert manifest.metadata["parts"] == 3 and manifest.metadata["reused_parts"] == 2
    assert [f.path for f in manifest.files if f.path.startswith("parts/")] == sorted(
        f.path for f in manifest.files if f.path.startswith("parts/"))
    assert sum(f.path.startswith("parts/") for f in manifest.files) == 3
    assert not any("attempt-0123456789ab" in f.path for f in manifest.files)
    assert _outputs(run) == _outputs(reference)

    # Readers see every pair through the parts (rows of the reference, pair by pair).
    index = art.read_seed_index(store, layout)
    assert index["count"] == PAIRS and index["chunk_size"] == PART and index["parts"] == 3
    ref_store, ref_layout = LocalStore(reference.run_uri), RunLayout(reference.run_uri)
    files, ref_files = art.LatentFiles(store, tmp_path / "w1"), art.LatentFiles(ref_store, tmp_path / "w2")
    for i in range(PAIRS):
        for mine, theirs in zip(art.seed_refs(layout, index, i), art.seed_refs(ref_layout, index, i), strict=True):
            assert mine.name == art.seed_part_name(i // PART)
            assert bool((mine.fetch(files) == theirs.fetch(ref_files)).all())

    # Idempotent: a second run of a committed phase changes nothing and encodes nothing.
    counted.clear()
    assert main(phase_args(run, "mixup", 0)) == 0
    assert sum(counted) == 0
    assert _outputs(run) == _outputs(reference)


def test_a_committed_part_whose_file_changed_is_encoded_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, counted: list[int]) -> None:
    monkeypatch.setenv("SAIL_TERMINATION_LOG", str(tmp_path / "term"))
    run = create_tiny_run(tmp_path / "a", num_pairs=PAIRS)
    reference = create_tiny_run(tmp_path / "b", model=run.model, num_pairs=PAIRS)
    assert main(phase_args(reference, "mixup", 0)) == 0
    with monkeypatch.context() as m:
        _die_at_part(m, 2)
        assert main(phase_args(run, "mixup", 0)) != 0
    store, folder = LocalStore(run.run_uri), RunLayout(run.run_uri).phase_dir(0, Phase.MIXUP)
    part0 = join(folder, art.seed_part_folder(0))
    damaged = Path(resolve_committed(store, part0, art.SEED_PART_FILE))
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF  # same size, different sha256
    damaged.write_bytes(bytes(data))

    counted.clear()
    assert main(phase_args(run, "mixup", 0)) == 0
    assert sum(counted) == 6  # part 0 (damaged) and part 2 (never committed); part 1 reused
    assert store.read_manifest(folder, verify=True).metadata["reused_parts"] == 1
    assert _outputs(run) == _outputs(reference)
