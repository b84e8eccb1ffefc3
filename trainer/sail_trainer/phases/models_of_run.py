"""Which model folder a phase uses: the base, or a committed iteration's checkpoint (downloaded once)."""

from __future__ import annotations

import logging
from pathlib import Path

from sail_api.phases import Phase
from sail_trainer.models.source import resolve_model_folder
from sail_trainer.phases.context import PhaseContext
from sail_trainer.storage import require_committed, resolve_committed

log = logging.getLogger(__name__)


def resolve_base_folder(ctx: PhaseContext) -> Path:
    model, storage = ctx.algorithm.model, ctx.resolved.storage
    return resolve_model_folder(model.uri, cache_dir=ctx.cache_dir, connection=storage, revision=model.revision)


def resolve_iteration_folder(ctx: PhaseContext, iteration: int) -> Path:
    """The model trained by `iteration` (its train phase must be committed); base when iteration < 0."""
    if iteration < 0:
        return resolve_base_folder(ctx)
    layout, store = ctx.layout, ctx.store
    train_dir = layout.phase_dir(iteration, Phase.TRAIN)
    require_committed(store, train_dir, f"the train phase of iteration {iteration}")
    manifest = store.read_manifest(train_dir)
    model_dir = resolve_committed(store, train_dir, "model", is_folder=True)  # the winning attempt's folder
    return resolve_model_folder(
        model_dir, field=f"iteration {iteration} model", cache_dir=ctx.cache_dir,
        connection=ctx.resolved.storage, version=f"{manifest.created_at}/{manifest.writer}",
    )


def resolve_judge_folder(ctx: PhaseContext) -> Path:
    """sail.judgeReference: base (choice), previous (the model before the current one), step0."""
    kind, i = ctx.algorithm.sail.judge_reference, ctx.iteration
    if kind == "base":
        return resolve_base_folder(ctx)
    if kind == "previous":
        return resolve_iteration_folder(ctx, i - 2)
    if i == 1:
        log.warning("judgeReference step0 at round 1 equals the current model: every reward is 0")
    return resolve_iteration_folder(ctx, 0)
