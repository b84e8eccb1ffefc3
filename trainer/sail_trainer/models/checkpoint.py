"""Write a full diffusers pipeline folder: the source pipeline's files with a new UNet.

Every component but the UNet is copied byte for byte from the folder the run started the
iteration from, so `DiffusionPipeline.from_pretrained(<model dir>)` loads the checkpoint
without any other folder (choice: copies, not references, so a checkpoint is self-contained).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any


def save_pipeline_folder(source: Path, unet: Any, out: Path) -> list[Path]:
    """Copy `source` to `out` with `unet` saved in place of `source/unet`; return the written files."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("unet", "_SUCCESS.json", ".sail-tmp-*"))
    unet.save_pretrained(out / "unet", safe_serialization=True)
    return sorted(p for p in out.rglob("*") if p.is_file())
