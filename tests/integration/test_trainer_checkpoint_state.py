"""What a step checkpoint carries: the loss scaler's state (fp16 runs), and a final checkpoint
that needs no optimizer state."""

from __future__ import annotations

from pathlib import Path

import torch

from sail_api.phases import Phase
from sail_api.storage import LocalStore
from sail_trainer.phases import train_phase
from sail_trainer.phases.context import PhaseContext
from sail_trainer.phases.runner import read_resolved_spec
from sail_trainer.phases.train_phase import TrainState
from tests.builders.tiny_pipeline import build_tiny_run_spec


def _ctx(tmp_path: Path) -> PhaseContext:
    spec = tmp_path / "spec.json"
    run = tmp_path / "run"
    spec.write_text(build_tiny_run_spec(str(run), "m", "s", "p"))
    return PhaseContext(resolved=read_resolved_spec(str(spec)), run_uri=str(run), iteration=0, phase=Phase.TRAIN,
                        store=LocalStore(str(run)), cache_dir=tmp_path / "cache", work_dir=tmp_path / "work")


def _objects(scale: float):
    torch.manual_seed(0)
    policy = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    # A CPU GradScaler stands in for the CUDA one an fp16 run uses: same state_dict.
    scaler = torch.amp.GradScaler("cpu", init_scale=scale, growth_interval=3)
    return policy, optimizer, scheduler, scaler


def test_step_checkpoint_restores_the_grad_scaler(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    policy, optimizer, scheduler, scaler = _objects(1024.0)
    scaler.scale(policy(torch.ones(1, 3)).sum()).backward()
    scaler.step(optimizer)
    scaler.update(new_scale=256.0)  # a backoff happened during training
    train_phase.save_checkpoint(ctx, 2, TrainState(policy, optimizer, scheduler, scaler), [{"loss": 0.5}])
    fresh = _objects(65536.0)
    step, history = train_phase.restore_checkpoint(ctx, train_phase.find_latest_checkpoint(ctx), TrainState(*fresh),
                                                   torch.device("cpu"))
    assert (step, history) == (2, [{"loss": 0.5}])
    assert fresh[3].get_scale() == 256.0
    assert fresh[1].state_dict()["state"], "optimizer state restored"


def test_final_checkpoint_has_no_optimizer_and_restores_the_weights(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    policy, optimizer, scheduler, scaler = _objects(1.0)
    with torch.no_grad():
        policy.weight.add_(1.0)
    train_phase.save_checkpoint(ctx, 5, TrainState(policy, optimizer, scheduler, scaler), [{"loss": 0.1}] * 5,
                                final=True)
    folder = train_phase.find_latest_checkpoint(ctx)
    assert sorted(e.path.rsplit("/", 1)[-1] for e in ctx.store.read_manifest(folder).files) == \
        sorted([train_phase.CHECKPOINT_UNET, train_phase.CHECKPOINT_STATE])
    fresh = _objects(1.0)
    step, _ = train_phase.restore_checkpoint(ctx, folder, TrainState(*fresh), torch.device("cpu"))
    assert step == 5 and torch.equal(fresh[0].weight, policy.weight)
