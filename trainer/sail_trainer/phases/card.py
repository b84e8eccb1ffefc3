"""Train hook: write the model card (README.md) into the local model folder before it is uploaded."""

from __future__ import annotations

from pathlib import Path

from sail_api.model_card import CARD_FILE, ModelCardFacts, build_model_card
from sail_trainer.phases.context import PhaseContext


def add_model_card(ctx: PhaseContext, folder: Path, files: list[Path], metrics: dict[str, float],
                   steps: int) -> list[Path]:
    """Write `folder/README.md` (replacing the card copied from the model the train started from) and
    return `files` with it, each once."""
    card = folder / CARD_FILE
    facts = ModelCardFacts(
        base_model=ctx.algorithm.model.uri, run=ctx.resolved.name, iteration=ctx.iteration,
        spec_digest=ctx.resolved.digest(), folder_uri=ctx.store.uri(ctx.output_key("model")),
        metrics=metrics, steps=steps,
    )
    card.write_text(build_model_card(facts), encoding="utf-8")
    return sorted(set(files) | {card})
