"""train: Diffusion-DPO on the round's mixture, from the current model with itself frozen as reference.

Iteration 0 starts from the base model (step 0); round i from iteration i-1's model. The
global batch of step s is mixture positions [s E, (s+1) E) (wrapping around), split evenly
across processes and then into micro batches; gradients are accumulated and averaged
(DDP all-reduce) so the update equals a single process's at the same global batch.
Only rank 0 writes: step checkpoints every `checkpointEvery` steps (each committed; a
preempted train resumes from the last), the final step's checkpoint (so the trained weights
are safe before anything optional runs), then the model folder and metrics.json, then the
optional outputs (sample grids; one that fails is recorded, not fatal), and commits last.
Policy and frozen reference both hold fp32 weights and run under the same autocast, so the
first loss of every train phase is exactly log 2 (see `load_train_models`).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

# torch and the model code at module level: the phase runner imports this module only when a train
# phase runs, so `sail-trainer --help` stays light (tests/integration/test_trainer_cli_light.py).
import torch
import torch.distributed as dist
from safetensors.torch import load, save
from transformers.optimization import Adafactor

from sail_api.layout import join
from sail_api.manifest import PhaseManifest
from sail_api.phases import Phase
from sail_api.storage import AlreadyCommitted
from sail_api.storage.resolve import logical_path
from sail_trainer.errors import BadSpecError
from sail_trainer.logs import Progress
from sail_trainer.math.denoising import add_noise, denoising_error
from sail_trainer.math.dpo import diffusion_dpo_loss
from sail_trainer.math.schedule import lr_lambda
from sail_trainer.models.acceleration import accelerate_unet
from sail_trainer.models.checkpoint import save_pipeline_folder
from sail_trainer.models.components import load_components, load_unet, pick_device, resolve_dtype
from sail_trainer.models.sampling import build_scheduler
from sail_trainer.models.text import TextEmbeddings, TextEncoder, build_unet_kwargs
from sail_trainer.phases import artifacts as art
from sail_trainer.phases import samples
from sail_trainer.phases.card import add_model_card
from sail_trainer.phases.context import PhaseContext
from sail_trainer.phases.generate_phase import read_prompt_pool
from sail_trainer.phases.heldout import measure_heldout
from sail_trainer.phases.models_of_run import resolve_base_folder, resolve_iteration_folder
from sail_trainer.phases.train_data import DrawSettings, TrainingSet, build_batch, load_training_set
from sail_trainer.plan import compute_accumulation, count_train_steps, default_learning_rate
from sail_trainer.storage import read_committed_bytes

log = logging.getLogger(__name__)
CHECKPOINT_STATE = "state.json"
CHECKPOINT_UNET = "unet.safetensors"
CHECKPOINT_OPTIMIZER = "optimizer.pt"


# ----------------------------------------------------------------------------- distributed


DIST_TIMEOUT_ENV = "SAIL_DIST_TIMEOUT_S"
DIST_TIMEOUT_S = 3600  # choice: the other ranks wait at a barrier while rank 0 alone uploads the
# step checkpoints, the model folder and the grids (NCCL's default of 10 minutes is too short for SDXL)


def process_group_backend(device_type: str) -> str:
    """The backend of the process group for a run computing on `device_type`.

    On CUDA, NCCL for CUDA tensors *and* gloo for CPU ones ("cpu:gloo,cuda:nccl"): an NCCL-only
    group refuses any CPU tensor ("No backend type associated with device type cpu").
    """
    return "cpu:gloo,cuda:nccl" if device_type == "cuda" else "gloo"


def read_local_rank(env: Any) -> int:
    """LOCAL_RANK, which torchrun sets for every worker; a clear error when it is missing."""
    value = env.get("LOCAL_RANK")
    if value is None or not str(value).strip().isdigit():
        raise BadSpecError(
            f"LOCAL_RANK is {'not set' if value is None else repr(value)} but WORLD_SIZE={env.get('WORLD_SIZE')}: "
            "multi-process train must run under torchrun (plain `sail-trainer train` with the PET_* "
            "environment starts it), which sets RANK, LOCAL_RANK and WORLD_SIZE for each worker"
        )
    return int(value)


def dist_timeout_seconds(env: Any) -> float:
    try:
        return float(env.get(DIST_TIMEOUT_ENV, DIST_TIMEOUT_S))
    except ValueError as exc:
        raise BadSpecError(f"{DIST_TIMEOUT_ENV}={env.get(DIST_TIMEOUT_ENV)!r}: expected seconds") from exc


def init_distributed(world_size: int) -> bool:
    """Join the torchrun/env rendezvous when WORLD_SIZE > 1: gloo on CPU; nccl + gloo on CUDA,
    with this process bound to cuda:LOCAL_RANK first (so NCCL never guesses the device)."""
    if world_size <= 1 or dist.is_initialized():
        return False
    for name in ("MASTER_ADDR", "MASTER_PORT"):  # Kubeflow-style PET_* names when torchrun did not set them
        if name not in os.environ and f"PET_{name}" in os.environ:
            os.environ[name] = os.environ[f"PET_{name}"]
    local_rank = read_local_rank(os.environ)
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(process_group_backend(device_type), timeout=timedelta(seconds=dist_timeout_seconds(os.environ)))
    return True


def _all_reduce_sum(values: Any) -> Any:
    """Sum a tensor over the processes, in place, on its own device (a no-op outside a group)."""
    if dist.is_initialized():
        dist.all_reduce(values)
    return values


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


# ----------------------------------------------------------------------------- optimizer


def build_optimizer(params: Any, spec: Any, lr: float, device: Any) -> Any:
    """AdamW (fused on CUDA) or Adafactor (no relative step), per sail.train.optimizer."""
    if spec.kind == "adafactor":
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


@dataclass(frozen=True)
class TrainState:
    """What a step checkpoint saves and restores: the policy's weights, the optimizer, the LR
    schedule and the grad scaler (None: no loss scaling)."""

    policy: Any
    optimizer: Any
    scheduler: Any
    scaler: Any = None


def save_checkpoint(ctx: PhaseContext, step: int, train: TrainState, history: list[dict], *,
                    final: bool = False) -> None:
    """Commit a resumable checkpoint after `step` optimizer steps (rank 0), then drop older ones.

    The GradScaler's state (fp16) is saved with it, or a resumed fp16 run restarts loss scaling.
    `final`: the checkpoint after the last step, written before anything optional (grids) runs,
    so a phase that fails afterwards resumes with nothing left to train. It has no optimizer
    state (nothing will step again; for SDXL that is ~20 GB not uploaded).
    """
    folder = ctx.layout.step_checkpoint_dir(ctx.iteration, step)
    if ctx.store.is_committed(folder):
        return
    store = ctx.store
    # Under this attempt's prefix, like the phase's own files: a concurrent writer of the same
    # step never overwrites what the winner's step manifest hashed (readers resolve through it).
    names = [ctx.attempt_path(n) for n in (CHECKPOINT_UNET, CHECKPOINT_OPTIMIZER, CHECKPOINT_STATE)]
    store.write_bytes(join(folder, names[0]), save({k: v.contiguous() for k, v in train.policy.state_dict().items()}))
    if final:
        names.pop(1)
    else:
        buffer = io.BytesIO()
        torch.save(train.optimizer.state_dict(), buffer)
        store.write_bytes(join(folder, names[1]), buffer.getvalue())
    state = {"step": step, "scheduler": train.scheduler.state_dict(), "history": history,
             "torch_rng": torch.get_rng_state().tolist(), "final": final,
             "grad_scaler": train.scaler.state_dict() if train.scaler is not None else {}}
    store.write_bytes(join(folder, names[-1]), json.dumps(state).encode())
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


def restore_checkpoint(ctx: PhaseContext, folder: str, train: TrainState, device: Any) -> tuple[int, list[dict]]:
    """Load a committed checkpoint into the objects; return (step, metrics history)."""
    train.policy.load_state_dict(load(read_committed_bytes(ctx.store, folder, CHECKPOINT_UNET)))
    state = json.loads(read_committed_bytes(ctx.store, folder, CHECKPOINT_STATE))
    if not state.get("final"):  # the final checkpoint has no optimizer state: nothing steps again
        train.optimizer.load_state_dict(torch.load(io.BytesIO(read_committed_bytes(ctx.store, folder, CHECKPOINT_OPTIMIZER)),
                                             map_location=device, weights_only=True))
    train.scheduler.load_state_dict(state["scheduler"])
    if train.scaler is not None and state.get("grad_scaler"):
        train.scaler.load_state_dict(state["grad_scaler"])
    torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
    log.info("resumed from %s at step %d", folder, state["step"])
    return int(state["step"]), list(state["history"])


# ----------------------------------------------------------------------------- the step


@dataclass(frozen=True)
class DpoStepModels:
    """What every micro step of one train phase uses; only the batch changes between steps.

    `policy` is what runs the forward (the DDP wrapper in a multi-process train), `reference` the
    frozen copy; `autocast` returns the context the forwards run under (nullcontext in fp32).
    """

    policy: Any
    reference: Any
    components: Any
    text: Any
    alphas: Any
    beta: float
    resolution: int
    autocast: Callable[[], Any]


def dpo_micro_step(models: DpoStepModels, batch: dict[str, Any]) -> Any:
    """Forward of one micro batch: same (t, eps) for winner and loser, policy and frozen reference.

    Rows `[0, B)` of the doubled batch are the winners, `[B, 2B)` the losers; each half sees the
    same prompts, timesteps and noise, so the pair differs only in its latent.
    """
    components, reference = models.components, models.reference
    device = components.device
    x0 = torch.cat([batch["x_w"], batch["x_l"]]).to(device, non_blocking=True)
    noise = torch.cat([batch["noise"], batch["noise"]]).to(device, non_blocking=True)
    t = torch.cat([batch["timesteps"], batch["timesteps"]]).to(device, non_blocking=True)
    x_t = add_noise(x0, noise, t, models.alphas)
    emb = models.text.encode(batch["prompts"])
    kwargs = build_unet_kwargs(components, TextEmbeddings.cat([emb, emb]), models.resolution)
    with models.autocast():
        pred = models.policy(x_t, t, **kwargs, return_dict=False)[0]
        with torch.no_grad():
            ref_pred = reference(x_t.to(reference.dtype), t, **kwargs, return_dict=False)[0]
    err = denoising_error(pred, noise)
    ref_err = denoising_error(ref_pred, noise)
    b = batch["x_w"].shape[0]
    return diffusion_dpo_loss(err[:b], err[b:], ref_err[:b], ref_err[b:], models.beta)


# ----------------------------------------------------------------------------- the phase


@dataclass(frozen=True)
class _Trainables:
    """The policy, its frozen reference and what updates the policy, built once per phase."""

    policy: Any
    reference: Any
    optimizer: Any
    scheduler: Any
    scaler: Any
    lr: float

    @property
    def state(self) -> TrainState:
        return TrainState(self.policy, self.optimizer, self.scheduler, self.scaler)


def _compute_accumulation(ctx: PhaseContext) -> int:
    tr = ctx.algorithm.sail.train
    try:
        return compute_accumulation(tr.effective_batch, tr.micro_batch, ctx.world_size)
    except ValueError as exc:
        raise BadSpecError(str(exc)) from exc


def _build_trainables(ctx: PhaseContext, init_folder: Any, device: Any, dtype: Any, steps: int) -> _Trainables:
    """Policy and reference from `init_folder`, the optimizer, the LR schedule over `steps`, the grad scaler."""
    tr = ctx.algorithm.sail.train
    policy, reference = load_train_models(init_folder, device, dtype)
    policy.train().requires_grad_(True)
    if tr.gradient_checkpointing:
        policy.enable_gradient_checkpointing()
    for unet in (policy, reference):
        accelerate_unet(unet, ctx.resolved.performance)
    lr = tr.optimizer.learning_rate or default_learning_rate(tr.effective_batch)
    optimizer = build_optimizer([p for p in policy.parameters() if p.requires_grad], tr.optimizer, lr, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(tr.optimizer.schedule, tr.optimizer.warmup_steps, steps))
    # fp16 needs loss scaling (bf16 does not); master weights stay fp32 either way
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and dtype == torch.float16)
    return _Trainables(policy, reference, optimizer, scheduler, scaler, lr)


def _run_steps(ctx: PhaseContext, loop: _Loop, t: _Trainables, history: list[dict], start: int, steps: int) -> None:
    """Steps `[start, steps)`, appending each step's metrics to `history`; a committed step
    checkpoint every `checkpointEvery` steps (rank 0), the other ranks waiting at a barrier."""
    progress = Progress("train", steps - start, enabled=ctx.rank == 0)
    try:
        for step in range(start, steps):
            history.append(loop.step(step))
            if ctx.rank == 0:
                _log_step(history[-1], steps)
            progress.update()
            if (step + 1) % ctx.algorithm.sail.train.checkpoint_every == 0 and step + 1 < steps:
                if ctx.rank == 0:
                    save_checkpoint(ctx, step + 1, t.state, history)
                _barrier()
    finally:
        loop.close()
    progress.close()


def _train(ctx: PhaseContext, distributed: bool) -> PhaseManifest:
    tr = ctx.algorithm.sail.train
    accumulation = _compute_accumulation(ctx)
    data = load_training_set(ctx)
    steps = count_train_steps(len(data), tr.effective_batch, tr.step0_steps if ctx.iteration == 0 else tr.steps)
    device = pick_device()
    dtype = resolve_dtype(ctx.precision, device)
    init_folder = resolve_iteration_folder(ctx, ctx.iteration - 1)
    components = load_components(init_folder, ctx.algorithm.model.layout, device, dtype, with_unet=False)
    t = _build_trainables(ctx, init_folder, device, dtype, steps)
    start, history = 0, []
    latest = find_latest_checkpoint(ctx)
    if latest is not None:
        start, history = restore_checkpoint(ctx, latest, t.state, device)
    model = t.policy
    if distributed and start < steps:
        model = torch.nn.parallel.DistributedDataParallel(t.policy, device_ids=[device.index] if device.type == "cuda" else None)
    log.info("train: %d pairs, %d steps from step %d, lr %.3g, accumulation %d x micro %d x %d process(es)",
             len(data), steps, start, t.lr, accumulation, tr.micro_batch, ctx.world_size)
    loop = _Loop(ctx, data, t, model, components, _StepRange(start, steps, accumulation))
    _run_steps(ctx, loop, t, history, start, steps)
    if ctx.rank == 0 and start < steps:
        # Commit before decorating: the trained weights are safe before the grids run.
        save_checkpoint(ctx, steps, t.state, history, final=True)
    manifest = _finish(ctx, t.policy, components, init_folder, history) if ctx.rank == 0 else None
    _barrier()
    if manifest is None:
        manifest = ctx.store.read_manifest(ctx.output_dir)
    return manifest


def run(ctx: PhaseContext) -> PhaseManifest:
    distributed = init_distributed(ctx.world_size)
    try:
        return _train(ctx, distributed)
    finally:
        if distributed:
            dist.destroy_process_group()


def load_train_models(init_folder: Any, device: Any, dtype: Any) -> tuple[Any, Any]:
    """(policy, reference): both from the model the round starts from (theta_{i-1}, the base at
    step 0), both with fp32 weights, run under the same autocast.

    Choice: the frozen reference is *not* stored in the compute dtype. Autocast keeps the norm
    layers in fp32 with their fp32 weights; a reference cast to bf16 rounds those weights
    (trained ones are not bf16-representable), so at step 1 of round i >= 1 policy and
    reference differed and the first loss was 0.94 instead of log 2 on the tiny run. Same
    weights, same autocast: the DPO logit starts at exactly 0. Cost: the reference takes fp32
    memory (+1.7 GB SD1.5, +5 GB SDXL).
    """
    del dtype  # both fp32; the compute dtype is the autocast's
    return load_unet(init_folder, device, torch.float32), load_unet(init_folder, device, torch.float32)


class _BatchPrefetcher:
    """Builds the next micro batches on a background thread while the device computes.

    A micro batch is a pure function of its positions (seeded draws, memory-mapped latents),
    so building it ahead of time changes no number. One worker thread: the latent files'
    handles are used from that thread only. On CUDA the tensors are pinned, so the copy to
    the device (`non_blocking`) overlaps with compute.
    """

    def __init__(self, build: Any, positions: Any, depth: int = 2, pin: bool = False) -> None:
        self._build, self._positions, self._depth, self._pin = build, iter(positions), depth, pin
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sail-batches")
        self._queue: list[Any] = []
        self._fill()

    def _make(self, positions: list[int]) -> dict[str, Any]:
        batch = self._build(positions)
        if self._pin:
            batch = {k: v.pin_memory() if hasattr(v, "pin_memory") else v for k, v in batch.items()}
        return batch

    def _fill(self) -> None:
        while len(self._queue) < self._depth:
            nxt = next(self._positions, None)
            if nxt is None:
                return
            self._queue.append((nxt, self._pool.submit(self._make, nxt)))

    def next(self, positions: list[int]) -> dict[str, Any]:
        """The batch of `positions`, which must be the next ones of the planned sequence."""
        if not self._queue or self._queue[0][0] != positions:
            raise RuntimeError(f"batch prefetch out of order: asked for {positions[:4]}...")
        _, future = self._queue.pop(0)
        self._fill()
        return future.result()

    def close(self) -> None:
        for _, future in self._queue:
            future.cancel()
        self._pool.shutdown(wait=True)


@dataclass(frozen=True)
class _StepRange:
    """The optimizer steps `[start, steps)` this process runs, each of `accumulation` micro batches."""

    start: int
    steps: int
    accumulation: int


class _Loop:
    """One optimizer step: micro batches of this rank's share of the global batch, accumulated.

    `model` is what runs the forward (the DDP wrapper of `t.policy` in a multi-process train)."""

    def __init__(self, ctx: PhaseContext, data: TrainingSet, t: _Trainables, model: Any, components: Any,
                 plan: _StepRange) -> None:
        self.ctx, self.data, self.model, self.components = ctx, data, model, components
        self.policy, self.optimizer, self.scheduler, self.scaler = t.policy, t.optimizer, t.scheduler, t.scaler
        self.accumulation, self.dtype = plan.accumulation, components.dtype
        self.tr = ctx.algorithm.sail.train
        s = ctx.algorithm.sail
        alphas = build_scheduler("ddpm", components.scheduler_config).alphas_cumprod
        self.models = DpoStepModels(model, t.reference, components, TextEncoder(components), alphas, s.beta,
                                    s.sampler.resolution, self._autocast)
        planned = (self.micro_positions(step, a) for step in range(plan.start, plan.steps)
                   for a in range(plan.accumulation))
        draws = DrawSettings(s.seed, ctx.iteration, components.num_train_timesteps, self.tr.empty_prompt_probability,
                             self.tr.random_flip)
        self.batches = _BatchPrefetcher(lambda positions: build_batch(data, positions, draws), planned,
                                        pin=components.device.type == "cuda")

    def micro_positions(self, step: int, a: int) -> list[int]:
        """Global mixture positions of micro batch `a` of this rank at `step`."""
        tr, ctx = self.tr, self.ctx
        per_rank = tr.effective_batch // ctx.world_size
        first = step * tr.effective_batch + ctx.rank * per_rank + a * tr.micro_batch
        return list(range(first, first + tr.micro_batch))

    def close(self) -> None:
        self.batches.close()

    def _autocast(self) -> Any:
        if self.dtype != torch.float32:
            return torch.autocast(self.components.device.type, dtype=self.dtype)
        return contextlib.nullcontext()

    def step(self, step: int) -> dict[str, float]:
        t0 = time.monotonic()
        # loss, accuracy, margin (sums over pairs), pairs: kept on the device, read once per step
        sums = torch.zeros(4, dtype=torch.float64, device=self.components.device)
        for a in range(self.accumulation):
            positions = self.micro_positions(step, a)
            batch = self.batches.next(positions)
            sync = a == self.accumulation - 1 or not hasattr(self.model, "no_sync")
            with contextlib.nullcontext() if sync else self.model.no_sync():
                out = dpo_micro_step(self.models, batch)
                self.scaler.scale(out.loss / self.accumulation).backward()
            n = len(positions)
            sums += torch.stack([out.loss.detach().double(), out.implicit_accuracy.double(),
                                 out.reward_margin.double(), torch.ones((), dtype=torch.float64, device=sums.device)]) * n
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.tr.optimizer.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        reduced = _all_reduce_sum(sums)
        loss, acc, margin, pairs, norm = torch.cat([reduced, grad_norm.detach().double().view(1).to(sums.device)]).tolist()
        return {"step": float(step + 1), "loss": loss / pairs, "implicit_accuracy": acc / pairs,
                "reward_margin": margin / pairs, "lr": lr, "grad_norm": norm,
                "pairs_per_second": pairs / max(time.monotonic() - t0, 1e-9)}


def _log_step(m: dict[str, float], steps: int) -> None:
    log.info("step %d/%d loss=%.6f implicit_accuracy=%.3f reward_margin=%.4g lr=%.3g pairs_per_second=%.3g",
             int(m["step"]), steps, m["loss"], m["implicit_accuracy"], m["reward_margin"], m["lr"],
             m["pairs_per_second"])


def _finish(ctx: PhaseContext, policy: Any, components: Any, init_folder: Any, history: list[dict]) -> PhaseManifest:
    """Rank 0: model folder and metrics.json (the result), then the optional decorations (sample
    grids), each of which may fail without losing the result, then the commit."""
    policy.eval()
    local = ctx.work_dir / "model"
    files = []
    heldout = measure_heldout(ctx, policy, components, init_folder)  # never-trained human pairs
    for path in add_model_card(ctx, local, save_pipeline_folder(init_folder, policy, local), heldout, len(history)):
        files.append(ctx.put_file("model/" + path.relative_to(local).as_posix(), path))
    files.append(ctx.put_bytes("metrics.json", art.dump_json(history)))
    s = ctx.algorithm.sail
    failed: dict[str, str] = {}
    grid_prompts: list[str] = []  # filled by the policy grid: its columns, for the report's labels
    for name, decorate in _decorations(ctx, policy, components, grid_prompts):
        try:
            files.extend(decorate())
        except Exception as exc:  # noqa: BLE001 - optional output: log it, keep the trained model
            log.warning("train: optional output %s failed (%s: %s); committing the model without it",
                        name, type(exc).__name__, exc)
            failed[name] = f"{type(exc).__name__}: {exc}"[:300]
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
        **heldout,
    }
    model_uri = ctx.output_key("model")  # the physical folder (this attempt's prefix) the manifest lists
    metadata: dict[str, Any] = {"model_uri": model_uri, "steps": len(history),
                                "samples": [logical_path(f) for f in files if f.endswith(".png")]}
    if grid_prompts:
        metadata["sample_prompts"] = grid_prompts
    if failed:
        metadata["failed_outputs"] = failed
    return ctx.commit(files, metrics, metadata)


def _decorations(ctx: PhaseContext, policy: Any, components: Any, grid_prompts: list[str]) -> list[tuple[str, Any]]:
    """The optional outputs of the phase, in order: (name, callable returning the files it wrote).

    Each runs after the model and metrics are written; a failure is logged and recorded in the
    manifest's metadata, never fatal. A new optional output (an evaluation) is one more entry.
    """
    s = ctx.algorithm.sail

    def policy_grid() -> list[str]:
        prompts = read_prompt_pool(ctx)
        grid_prompts[:] = prompts[:samples.GRID_PROMPTS]
        return [ctx.put_bytes("samples.png", samples.render_sample_grid(components, policy, prompts, s.seed, s.sampler))]

    def base_grid() -> list[str]:
        prompts = read_prompt_pool(ctx)
        base = load_unet(resolve_base_folder(ctx), components.device, components.dtype)
        return [ctx.put_bytes("samples-base.png", samples.render_sample_grid(components, base, prompts, s.seed, s.sampler))]

    out: list[tuple[str, Any]] = [("samples.png", policy_grid)]
    if ctx.iteration == 0:
        out.append(("samples-base.png", base_grid))
    return out
