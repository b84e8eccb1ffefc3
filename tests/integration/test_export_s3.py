"""`sail export` from an s3:// run root on moto (real HTTP): the winning attempt's model/ files only,
`best` by held-out accuracy, checksums enforced, nothing left behind on failure.

The committed train folders are written here through the store (small stand-in files: export
copies bytes and never loads a model; the tiny-pipeline load is tests/integration/test_heldout_tiny.py).
"""

from __future__ import annotations

import pytest

from sail_operator.cli import main as sail
from sail_operator.export import ExportError, export_model

MODEL_FILES = {"model_index.json": b'{"_class_name": "StableDiffusionPipeline"}', "unet/weights.bin": b"w" * 3000,
               "README.md": b"# card"}


def commit_train(store, iteration: int, accuracy: float | None, attempt: str = "attempt-0123456789ab") -> None:
    folder = f"iter-{iteration:03d}/train"
    files = {f"{attempt}/model/{name}": data + bytes([iteration]) for name, data in MODEL_FILES.items()}
    files[f"{attempt}/metrics.json"] = b"[]"
    files["attempt-ffffffffffff/model/stale.bin"] = b"a losing attempt's leftover"  # not in the manifest
    for key, data in files.items():
        store.write_bytes(f"{folder}/{key}", data)
    metrics = {"loss": 0.5} | ({"heldout_accuracy_vs_base": accuracy} if accuracy is not None else {})
    store.commit(folder, [k for k in files if not k.startswith("attempt-ffff")], metrics=metrics)


def test_best_exports_the_iteration_with_the_highest_heldout_accuracy(s3_store, moto_s3, tmp_path, capsys):
    for iteration, accuracy in ((0, 0.70), (1, 0.78), (2, 0.62)):
        commit_train(s3_store, iteration, accuracy)
    s3_store.write_bytes("iter-003/train/attempt-0123456789ab/model/model_index.json", b"{}")  # not committed
    out = tmp_path / "best"
    assert sail(["export", s3_store.root, str(out), "--iteration", "best", "--endpoint", moto_s3.endpoint]) == 0
    assert "exported iteration 1 (3 files" in capsys.readouterr().out
    copied = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert copied == {name: data + bytes([1]) for name, data in MODEL_FILES.items()}
    latest = export_model(s3_store, None, tmp_path / "latest")
    assert latest.iteration == 2, "latest is the last committed train, not the uncommitted iteration 3"


def test_a_file_changed_after_the_commit_is_refused_and_nothing_is_left(s3_store, tmp_path):
    commit_train(s3_store, 0, 0.7)
    s3_store.write_bytes("iter-000/train/attempt-0123456789ab/model/unet/weights.bin", b"tampered")
    with pytest.raises(ExportError, match="sha256 differs from the committed manifest"):
        export_model(s3_store, "0", tmp_path / "out")
    assert sorted(tmp_path.iterdir()) == [], "no output folder and no partial copy"


def test_best_without_heldout_metrics_says_what_is_missing(s3_store, tmp_path):
    commit_train(s3_store, 0, None)
    with pytest.raises(ExportError, match=r"needs held-out metrics .*sail\.validation"):
        export_model(s3_store, "best", tmp_path / "out")
