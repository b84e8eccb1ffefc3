"""train: Diffusion-DPO on the round's mixture, from the current model with itself frozen as reference.

Iteration 0 starts from the base model (step 0); round i from iteration i-1's model. The
global batch of step s is mixture positions [s E, (s+1) E) (wrapping around), split evenly
across processes and then into micro batches; gradients are accumulated and averaged
(DDP all-reduce) so the update equals a single process's at the same global batch.
Only rank 0 writes: step checkpoints every `checkpointEvery` steps (each committed; a
preempted train resumes from the last), then the final model folder, metrics.json and the
sample grids, and commits last.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from typing import Any

from sail_api.layout import join
from sail_api.manifest import PhaseManifest
from sail_api.phases import Phase
from sail_api.storage import AlreadyCommitted
from sail_api.storage.resolve import logical_path
from sail_trainer.errors import BadSpecError
from sail_trainer.logs import Progress
from sail_trainer.phases import artifacts as art
from sail_trainer.phases.context import PhaseContext
from sail_trainer.phases.models_of_run import resolve_base_folder, resolve_iteration_folder
from sail_trainer.phases.train_data import TrainingSet, build_batch, load_training_set
from sail_trainer.plan import compute_accumulation, count_train_steps, default_learning_rate

log = logging.getLogger(__name__)
CHECKPOINT_STATE = "state.json"
CHECKPOINT_UNET = "unet.safetensors"
CHECKPOINT_OPTIMIZER = "optimizer.pt"


# ----------------------------------------------------------------------------- distributed


def init_distributed(world_size: int) -> bool:
    """Join the torchrun/env rendezvous when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    import os

    import torch
    import torch.distributed as dist

    if world_size <= 1 or dist.is_initialized():
        return False
    for name in ("MASTER_ADDR", "MASTER_PORT"):  # Kubeflow-style PET_* names when torchrun did not set them
        if name not in os.environ and f"PET_{name}" in os.environ:
            os.environ[name] = os.environ[f"PET_{name}"]
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return True


def _all_reduce_sum(values: list[float]) -> list[float]:
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


# ----------------------------------------------------------------------------- optimizer


def build_optimizer(params: Any, spec: Any, lr: float, device: Any) -> Any:
    """AdamW (fused on CUDA) or Adafactor (no relative step), per sail.train.optimizer."""
    import torch

    if spec.kind == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=lr, relative_step=False, scale_parameter=False, warmup_init=False,
                         weight_decay=spec.weight_decay, clip_threshold=1.0)
    return torch.optim.AdamW(params, lr=lr, betas=(spec.adam_beta1, spec.adam_beta2), eps=spec.adam_epsilon,
                             weight_decay=spec.weight_decay, fused=device.type == "cuda")


# ----------------------------------------------------------------------------- checkpoints


def find_latest_checkpoint(ctx: PhaseContext) -> str | None:
    """The committed step checkpoint folder with the highest step, if any."""
    steps_dir = join(ctx.layout.phase_dir(ctx.iteration, Phase.TRAIN), "steps")
    folders = sorted({k.rsplit("/", 1)[0] for k in ctx.store.list(steps_dir) if k.endswith("/_SUCCESS.json")})
    return ctx.store.uri(folders[-1]) if folders else None


def save_checkpoint(ctx: PhaseContext, step: int, policy: Any, optimizer: Any, scheduler: Any,
                    history: list[dict]) -> None:
    """Commit a resumable checkpoint after `step` optimizer steps (rank 0), then drop older ones."""
    import torch
    from safetensors.torch import save

    folder = ctx.layout.step_checkpoint_dir(ctx.iteration, step)
    if ctx.store.is_committed(folder):
        return
    store = ctx.store
    # Under this attempt's prefix, like the phase's own files: a concurrent writer of the same
    # step never overwrites what the winner's step manifest hashed (readers resolve through it).
    names = [ctx.attempt_path(n) for n in (CHECKPOINT_UNET, CHECKPOINT_OPTIMIZER, CHECKPOINT_STATE)]
    store.write_bytes(join(folder, names[0]), save({k: v.contiguous() for k, v in policy.state_dict().items()}))
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    store.write_bytes(join(folder, names[1]), buffer.getvalue())
    state = {"step": step, "scheduler": scheduler.state_dict(), "history": history,
             "torch_rng": torch.get_rng_state().tolist()}
    store.write_bytes(join(folder, names[2]), json.dumps(state).encode())
    try:
        store.commit(folder, names, metrics={"step": float(step)}, metadata={"attempt": ctx.attempt},
                     run=ctx.resolved.name, iteration=ctx.iteration, phase="train", spec_digest=ctx.resolved.digest())
    except AlreadyCommitted:
        log.info("step checkpoint %s was committed by a concurrent attempt; keeping it", store.uri(folder))
        return
    log.info("committed step checkpoint %s", store.uri(folder))
    for older in _older_checkpoints(ctx, folder):
        store.delete_prefix(older)


def _older_checkpoints(ctx: PhaseContext, keep: str) -> list[str]:
    steps_dir = join(ctx.layout.phase_dir(ctx.iteration, Phase.TRAIN), "steps")
    keep_key, base = ctx.store.uri(keep), ctx.store.uri(steps_dir).rstrip("/") + "/"
    # step folders (steps/step-NNNNNNN), whatever lies inside them (attempt prefixes, the marker)
    folders = {base + uri[len(base):].split("/", 1)[0] for uri in map(ctx.store.uri, ctx.store.list(steps_dir))
               if uri.startswith(base)}
    return sorted(folders - {keep_key})


def restore_checkpoint(ctx: PhaseContext, folder: str, policy: Any, optimizer: Any, scheduler: Any,
                       device: Any) -> tuple[int, list[dict]]:
    """Load a committed checkpoint into the objects; return (step, metrics history)."""
    import torch
    from safetensors.torch import load

    from sail_trainer.storage import read_committed_bytes

    policy.load_state_dict(load(read_committed_bytes(ctx.store, folder, CHECKPOINT_UNET)))
    optimizer.load_state_dict(torch.load(io.BytesIO(read_committed_bytes(ctx.store, folder, CHECKPOINT_OPTIMIZER)),
                                         map_location=device, weights_only=True))
    state = json.loads(read_committed_bytes(ctx.store, folder, CHECKPOINT_STATE))
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
    log.info("resumed from %s at step %d", folder, state["step"])
    return int(state["step"]), list(state["history"])


# ----------------------------------------------------------------------------- the step


def dpo_micro_step(policy: Any, reference: Any, components: Any, text: Any, batch: dict[str, Any], beta: float,
                   resolution: int, alphas: Any, autocast: Any) -> Any:
    """Forward of one micro batch: same (t, eps) for winner and loser, policy and frozen reference."""
    import torch

    from sail_trainer.math.denoising import add_noise, denoising_error
    from sail_trainer.math.dpo import diffusion_dpo_loss
    from sail_trainer.models.text import TextEmbeddings, build_unet_kwargs

    device = components.device
    x0 = torch.cat([batch["x_w"], batch["x_l"]]).to(device)
    noise = torch.cat([batch["noise"], batch["noise"]]).to(device)
    t = torch.cat([batch["timesteps"], batch["timesteps"]]).to(device)
    x_t = add_noise(x0, noise, t, alphas)
    emb = text.encode(batch["prompts"])
    kwargs = build_unet_kwargs(components, TextEmbeddings.cat([emb, emb]), resolution)
    with autocast():
        pred = policy(x_t, t, **kwargs, return_dict=False)[0]
        with torch.no_grad():
            ref_pred = reference(x_t.to(reference.dtype), t, **kwargs, return_dict=False)[0]
    err = denoising_error(pred, noise)
    ref_err = denoising_error(ref_pred, noise)
    b = batch["x_w"].shape[0]
    return diffusion_dpo_loss(err[:b], err[b:], ref_err[:b], ref_err[b:], beta)


# ----------------------------------------------------------------------------- the phase


def run(ctx: PhaseContext) -> PhaseManifest:
    import torch

    from sail_trainer.math.schedule import lr_lambda
    from sail_trainer.models.acceleration import accelerate_unet
    from sail_trainer.models.components import load_components, load_unet, pick_device, resolve_dtype
    from sail_trainer.models.sampling import build_scheduler
    from sail_trainer.models.text import TextEncoder

    distributed = init_distributed(ctx.world_size)
    try:
        s = ctx.algorithm.sail
        tr = s.train
        try:
            accumulation = compute_accumulation(tr.effective_batch, tr.micro_batch, ctx.world_size)
        except ValueError as exc:
            raise BadSpecError(str(exc)) from exc
        data = load_training_set(ctx)
        steps = count_train_steps(len(data), tr.effective_batch, tr.step0_steps if ctx.iteration == 0 else tr.steps)
        device = pick_device()
        dtype = resolve_dtype(ctx.precision, device)
        init_folder = resolve_iteration_folder(ctx, ctx.iteration - 1)
        components = load_components(init_folder, ctx.algorithm.model.layout, device, dtype, with_unet=False)
        policy = load_unet(init_folder, device, torch.float32)
        policy.train().requires_grad_(True)
        if tr.gradient_checkpointing:
            policy.enable_gradient_checkpointing()
        reference = load_unet(init_folder, device, dtype)
        for unet in (policy, reference):
            accelerate_unet(unet, ctx.resolved.performance)
        lr = tr.optimizer.learning_rate or default_learning_rate(tr.effective_batch)
        optimizer = build_optimizer([p for p in policy.parameters() if p.requires_grad], tr.optimizer, lr, device)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(tr.optimizer.schedule, tr.optimizer.warmup_steps, steps))
        start, history = 0, []
        latest = find_latest_checkpoint(ctx)
        if latest is not None:
            start, history = restore_checkpoint(ctx, latest, policy, optimizer, scheduler, device)
        model = policy
        if distributed:
            model = torch.nn.parallel.DistributedDataParallel(policy, device_ids=[device.index] if device.type == "cuda" else None)
        log.info("train: %d pairs, %d steps from step %d, lr %.3g, accumulation %d x micro %d x %d process(es)",
                 len(data), steps, start, lr, accumulation, tr.micro_batch, ctx.world_size)
        loop = _Loop(ctx, data, model, policy, reference, components, TextEncoder(components), optimizer, scheduler,
                     build_scheduler("ddpm", components.scheduler_config).alphas_cumprod, accumulation, dtype)
        progress = Progress("train", steps - start, enabled=ctx.rank == 0)
        for step in range(start, steps):
            history.append(loop.step(step))
            if ctx.rank == 0:
                _log_step(history[-1], steps)
            progress.update()
            if (step + 1) % tr.checkpoint_every == 0 and step + 1 < steps:
                if ctx.rank == 0:
                    save_checkpoint(ctx, step + 1, policy, optimizer, scheduler, history)
                _barrier()
        progress.close()
        manifest = _finish(ctx, policy, components, init_folder, history) if ctx.rank == 0 else None
        _barrier()
        if manifest is None:
            manifest = ctx.store.read_manifest(ctx.output_dir)
        return manifest
    finally:
        if distributed:
            import torch.distributed as dist

            dist.destroy_process_group()


class _Loop:
    """One optimizer step: micro batches of this rank's share of the global batch, accumulated."""

    def __init__(self, ctx: PhaseContext, data: TrainingSet, model: Any, policy: Any, reference: Any,
                 components: Any, text: Any, optimizer: Any, scheduler: Any, alphas: Any, accumulation: int,
                 dtype: Any) -> None:
        self.ctx, self.data, self.model, self.policy, self.reference = ctx, data, model, policy, reference
        self.components, self.text, self.optimizer, self.scheduler = components, text, optimizer, scheduler
        self.alphas, self.accumulation, self.dtype = alphas, accumulation, dtype
        self.tr = ctx.algorithm.sail.train
        self.started = time.monotonic()
        import torch

        # fp16 autocast needs loss scaling (bf16 does not); master weights stay fp32 either way
        self.scaler = torch.amp.GradScaler("cuda", enabled=components.device.type == "cuda" and dtype == torch.float16)

    def _autocast(self) -> Any:
        import torch

        if self.components.device.type == "cuda" and self.dtype != torch.float32:
            return torch.autocast("cuda", dtype=self.dtype)
        return contextlib.nullcontext()

    def step(self, step: int) -> dict[str, float]:
        import torch

        ctx, tr, s = self.ctx, self.tr, self.ctx.algorithm.sail
        t0 = time.monotonic()
        per_rank = tr.effective_batch // ctx.world_size
        first = step * tr.effective_batch + ctx.rank * per_rank
        mine = list(range(first, first + per_rank))
        sums = [0.0, 0.0, 0.0, 0.0]  # loss, accuracy, margin (sums over pairs), pairs
        for a in range(self.accumulation):
            positions = mine[a * tr.micro_batch : (a + 1) * tr.micro_batch]
            batch = build_batch(self.data, positions, s.seed, ctx.iteration, self.components.num_train_timesteps,
                                tr.empty_prompt_probability, tr.random_flip)
            sync = a == self.accumulation - 1 or not hasattr(self.model, "no_sync")
            with contextlib.nullcontext() if sync else self.model.no_sync():
                out = dpo_micro_step(self.model, self.reference, self.components, self.text, batch, s.beta,
                                     s.sampler.resolution, self.alphas, self._autocast)
                self.scaler.scale(out.loss / self.accumulation).backward()
            n = len(positions)
            sums = [sums[0] + float(out.loss.detach()) * n, sums[1] + float(out.implicit_accuracy) * n,
                    sums[2] + float(out.reward_margin) * n, sums[3] + n]
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), tr.optimizer.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss, acc, margin, pairs = _all_reduce_sum(sums)
        return {"step": float(step + 1), "loss": loss / pairs, "implicit_accuracy": acc / pairs,
                "reward_margin": margin / pairs, "lr": lr, "grad_norm": float(grad_norm),
                "pairs_per_second": pairs / max(time.monotonic() - t0, 1e-9)}


def _log_step(m: dict[str, float], steps: int) -> None:
    log.info("step %d/%d loss=%.6f implicit_accuracy=%.3f reward_margin=%.4g lr=%.3g pairs_per_second=%.3g",
             int(m["step"]), steps, m["loss"], m["implicit_accuracy"], m["reward_margin"], m["lr"],
             m["pairs_per_second"])


def _finish(ctx: PhaseContext, policy: Any, components: Any, init_folder: Any, history: list[dict]) -> PhaseManifest:
    """Rank 0: model folder, metrics.json, sample grids, then the commit."""
    from sail_trainer.models.checkpoint import save_pipeline_folder
    from sail_trainer.phases.generate_phase import read_prompt_pool
    from sail_trainer.phases.samples import GRID_PROMPTS, render_sample_grid

    policy.eval()
    local = ctx.work_dir / "model"
    files = []
    for path in save_pipeline_folder(init_folder, policy, local):
        files.append(ctx.put_file("model/" + path.relative_to(local).as_posix(), path))
    files.append(ctx.put_bytes("metrics.json", art.dump_json(history)))
    prompts = read_prompt_pool(ctx)
    s = ctx.algorithm.sail
    files.append(ctx.put_bytes("samples.png", render_sample_grid(components, policy, prompts, s.seed, s.sampler)))
    if ctx.iteration == 0:
        from sail_trainer.models.components import load_unet

        base = load_unet(resolve_base_folder(ctx), components.device, components.dtype)
        files.append(ctx.put_bytes("samples-base.png", render_sample_grid(components, base, prompts, s.seed, s.sampler)))
    last = history[-1] if history else {}
    n = max(1, len(history))
    metrics = {
        "steps": float(len(history)), "pairs": float(len(history) * s.train.effective_batch),
        "loss": last.get("loss", 0.0), "implicit_accuracy": last.get("implicit_accuracy", 0.0),
        "reward_margin": last.get("reward_margin", 0.0),
        "mean_loss": sum(h["loss"] for h in history) / n,
        "mean_implicit_accuracy": sum(h["implicit_accuracy"] for h in history) / n,
        "mean_reward_margin": sum(h["reward_margin"] for h in history) / n,
        "pairs_per_second": sum(h["pairs_per_second"] for h in history) / n,
    }
    model_uri = ctx.output_key("model")  # the physical folder (this attempt's prefix) the manifest lists
    return ctx.commit(files, metrics, {"model_uri": model_uri, "steps": len(history),
                                       "samples": [logical_path(f) for f in files if f.endswith(".png")],
                                       "sample_prompts": prompts[:GRID_PROMPTS]})  # the grids' columns
