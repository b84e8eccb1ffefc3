"""Speed levers applied to a loaded UNet (`spec.performance`): channels_last and torch.compile.

One function for every phase, so generate, annotate and train get the same treatment and
the benchmark (bench/phases.py) measures exactly what the phases run. Both levers keep the
module's parameters and state_dict keys unchanged (`nn.Module.compile` compiles in place
instead of wrapping), so checkpoints, DDP and `save_pretrained` see the plain UNet.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from sail_api.spec import PerformanceSpec

log = logging.getLogger(__name__)


def accelerate_unet(unet: Any, performance: PerformanceSpec, *, compile_backend: str = "inductor") -> Any:
    """Apply the levers `performance` asks for to `unet` in place; returns the same module.

    `compile_backend` is torch.compile's backend: inductor (generated kernels) for real runs;
    tests pass "aot_eager" to go through the same tracing without minutes of C++ codegen.
    """
    if performance.channels_last:
        unet.to(memory_format=torch.channels_last)
    if performance.compile:
        # dynamic=False: the phases call the UNet with a few fixed batch shapes; each distinct
        # shape compiles once (the last chunk of a phase may add one more).
        unet.compile(dynamic=False, backend=compile_backend)
        log.info("torch.compile enabled for the UNet (the first calls compile)")
    return unet
