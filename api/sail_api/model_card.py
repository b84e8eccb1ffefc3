"""The model card (README.md) of a committed model folder: what it is, where it came from, how to load it.

Every train phase writes one into its `model/` folder, so a folder copied out of a run (by
hand or by `sail export`) still says which base, run, iteration and spec produced it and how
it scored on the held-out human pairs. Pure text; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CARD_FILE = "README.md"
HELDOUT_LABELS = (
    ("heldout_accuracy", "held-out accuracy vs its training reference"),
    ("heldout_accuracy_vs_base", "held-out accuracy vs the base model"),
    ("heldout_margin", "held-out reward margin vs its training reference"),
    ("heldout_margin_vs_base", "held-out reward margin vs the base model"),
    ("heldout_pairs", "held-out human pairs"),
)


@dataclass(frozen=True)
class ModelCardFacts:
    base_model: str
    run: str
    iteration: int
    spec_digest: str
    folder_uri: str
    metrics: dict[str, float] = field(default_factory=dict)
    steps: int | None = None


def _stage(iteration: int) -> str:
    return "step 0 (Diffusion-DPO on the human seed pairs)" if iteration == 0 else f"SAIL round {iteration}"


def _metric(name: str, value: float) -> str:
    return str(int(value)) if name.endswith("_pairs") else f"{value:.4g}"


def is_hub_id(uri: str) -> bool:
    """`org/name` (what `from_pretrained` fetches from a hub), not a URI or a filesystem path."""
    return "://" not in uri and not uri.startswith(("/", ".", "~")) and uri.count("/") == 1


def build_model_card(facts: ModelCardFacts) -> str:
    """Markdown with a YAML front matter the Hugging Face hub reads (library, base model, tags)."""
    rows = [f"| {label} | {_metric(name, facts.metrics[name])} |" for name, label in HELDOUT_LABELS
            if name in facts.metrics]
    held = ("| metric | value |\n|---|---|\n" + "\n".join(rows) + "\n\nAccuracy is the share of held-out human "
            "pairs whose preferred image gets the higher implicit reward (0.5 is chance); the pairs were never "
            "trained on (`sail.validation`).") if rows else "No held-out pairs in this run (`sail.validation`)."
    steps = f" after {facts.steps} optimizer steps" if facts.steps is not None else ""
    # The hub reads base_model as a hub id: an s3:// URI or a local path would be a broken link there.
    base = f"base_model: {facts.base_model}\n" if is_hub_id(facts.base_model) else ""
    return f"""---
library_name: diffusers
{base}tags:
- text-to-image
- diffusion-dpo
- sail
---

# {facts.run}, iteration {facts.iteration}

A text-to-image diffusion pipeline aligned with SAIL (self-amplified iterative learning on
Diffusion-DPO): {_stage(facts.iteration)}{steps}. Only the UNet differs from the model the
iteration started from; every other component is copied unchanged.

| fact | value |
|---|---|
| base model | `{facts.base_model}` |
| run | `{facts.run}` |
| iteration | {facts.iteration} |
| spec digest | `{facts.spec_digest}` |
| committed at | `{facts.folder_uri}` |

## Held-out evaluation

{held}

## Load it

```python
import torch
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained("path/to/this/folder", torch_dtype=torch.float16).to("cuda")
image = pipe("a photo of a cat").images[0]
```

A folder on S3 is loaded after copying it out, e.g. `sail export <run> --iteration {facts.iteration} ./model`.
The base model's license and card apply to this derivative: see `{facts.base_model}`.
"""
