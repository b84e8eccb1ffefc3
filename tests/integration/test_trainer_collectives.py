"""The train phase's process group on CPU, with collectives that refuse tensors on the wrong device.

NCCL serves CUDA tensors only: an NCCL-only group fails on the first CPU tensor ("No backend
type associated with device type cpu"), which a CPU-only test suite with gloo never sees. Here
`init_distributed` runs as on a CUDA machine (CUDA reported available, `set_device` recorded)
and its process group is built with gloo standing in for NCCL *for CUDA tensors only*, so a
collective on a tensor the real group would refuse fails here the same way.
"""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist

from sail_trainer.errors import BadSpecError
from sail_trainer.phases import train_phase


def standin_backend(backend: str) -> str:
    """`backend` with gloo in NCCL's place, keeping the device types each backend serves."""
    parts = []
    for item in backend.split(","):
        device, sep, name = item.rpartition(":")
        if not sep:  # a bare name serves what that backend serves: NCCL CUDA only, gloo both
            parts.append("cuda:gloo" if name == "nccl" else f"cpu:{name},cuda:{name}")
        else:
            parts.append(f"{device}:{'gloo' if name == 'nccl' else name}")
    return ",".join(parts)


@pytest.fixture
def cuda_like_group(monkeypatch: pytest.MonkeyPatch):
    """init_distributed as on a CUDA node; yields what it passed to set_device / init_process_group."""
    calls: dict = {}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    real_init = dist.init_process_group

    def init(backend, timeout=None, **kwargs):
        calls["backend"], calls["timeout"] = backend, timeout
        real_init(standin_backend(backend), init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1,
                  timeout=timedelta(seconds=60))

    # Mocked: CUDA itself (no GPU here). The process group and its collectives are real (gloo).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: calls.setdefault("set_device", index))
    monkeypatch.setattr(dist, "init_process_group", init)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    yield calls
    if dist.is_initialized():
        dist.destroy_process_group()


def test_standin_refuses_cpu_tensors_like_nccl() -> None:
    assert standin_backend("nccl") == "cuda:gloo"
    assert standin_backend("cpu:gloo,cuda:nccl") == "cpu:gloo,cuda:gloo"


def test_the_train_group_serves_the_cpu_tensors_the_step_reduces(cuda_like_group) -> None:
    assert train_phase.init_distributed(2) is True
    assert cuda_like_group["set_device"] == 1, "each rank must bind cuda:LOCAL_RANK before NCCL starts"
    assert cuda_like_group["timeout"] >= timedelta(minutes=30), "rank 0 uploads alone while the others wait"
    metrics = torch.tensor([1.0, 0.5, 0.25, 2.0], dtype=torch.float64)  # loss, accuracy, margin, pairs (CPU)
    assert train_phase._all_reduce_sum(metrics).tolist() == [1.0, 0.5, 0.25, 2.0]
    train_phase._barrier()


def test_missing_local_rank_under_a_multi_process_world_names_the_variable(monkeypatch) -> None:
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(BadSpecError, match="LOCAL_RANK is not set.*torchrun"):
        train_phase.init_distributed(2)
    assert not dist.is_initialized()


def test_backend_covers_cpu_and_cuda_on_a_gpu_node() -> None:
    assert set(train_phase.process_group_backend("cuda").split(",")) == {"cpu:gloo", "cuda:nccl"}
    assert train_phase.process_group_backend("cpu") == "gloo"
