"""Scorers of the evaluate phase: `load_scorer(spec)` turns a `spec.evaluation.scorers[k]` entry into a
function `(images: list[PIL.Image], captions: list[str]) -> float array [n]`, higher is better.

- `callable: "module:function"`: imported from the trainer's environment (the image, or the venv of
  `sail run`); it is called exactly as above.
- `clip: {uri}`: a transformers CLIPModel + CLIPProcessor folder (PickScore's layout), local or s3://
  (downloaded once into the model cache, like pipelines). Score = logit_scale.exp() x cosine(image
  embedding, caption embedding), PickScore's definition.

`score_images` runs a scorer and checks what it returned: anything but one finite number per image
is a BadDataError naming the scorer.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sail_api.inputs import find_clip_layout_problem
from sail_api.storage import DEFAULT_CONNECTION, Connection
from sail_api.uris import is_s3_uri, strip_file_scheme
from sail_trainer.errors import BadDataError, BadSpecError

Scorer = Callable[[list[Any], list[str]], Any]


def scorer_field(index: int, name: str) -> str:
    return f"spec.evaluation.scorers[{index}] ({name})"


def import_callable(path: str, field: str) -> Scorer:
    """The function `module:function` names; BadSpecError naming `field` when it cannot be had."""
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 -- any import failure of user code is the spec's problem
        raise BadSpecError(f"{field}.callable: cannot import module {module_name!r} ({type(exc).__name__}: {exc}); "
                           "install it in the trainer image (or the venv of `sail run`) or fix the name") from exc
    function = getattr(module, attribute, None)
    if not callable(function):
        raise BadSpecError(f"{field}.callable: module {module_name!r} has no callable {attribute!r}; "
                           "name a function taking (images, captions)")
    return function


class ClipScorer:
    """PickScore-style scoring with a CLIPModel and its processor loaded from one folder."""

    def __init__(self, folder: Path, field: str, device: Any = "cpu") -> None:
        from transformers import CLIPModel, CLIPProcessor

        problem = find_clip_layout_problem(folder, f"{field}.clip.uri")
        if problem:
            raise BadSpecError(problem)
        try:
            self.processor = CLIPProcessor.from_pretrained(folder)
            self.model = CLIPModel.from_pretrained(folder).eval().to(device)
        except Exception as exc:  # noqa: BLE001 -- transformers raises many kinds for a bad folder
            raise BadSpecError(f"{field}.clip.uri: {folder} does not load as CLIPModel + CLIPProcessor "
                               f"({type(exc).__name__}: {exc})") from exc
        self.device = device

    def __call__(self, images: list[Any], captions: list[str]) -> Any:
        import torch

        inputs = self.processor(text=list(captions), images=list(images), return_tensors="pt", padding=True,
                                truncation=True)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.no_grad():
            image = self.model.get_image_features(pixel_values=inputs["pixel_values"])
            text = self.model.get_text_features(input_ids=inputs["input_ids"],
                                                attention_mask=inputs.get("attention_mask"))
            image = image / image.norm(dim=-1, keepdim=True)
            text = text / text.norm(dim=-1, keepdim=True)
            scores = self.model.logit_scale.exp() * (image * text).sum(dim=-1)
        return scores.float().cpu().numpy()


def resolve_clip_folder(uri: str, field: str, cache_dir: Path | None, connection: Connection) -> Path:
    """A local folder for a CLIP scorer: s3:// folders are downloaded once into the model cache."""
    if is_s3_uri(uri):
        from sail_trainer.models.source import fetch_s3_folder

        return fetch_s3_folder(uri, field=f"{field}.clip.uri", marker="config.json",
                               kind="a transformers CLIP folder", cache_dir=cache_dir, connection=connection)
    return Path(strip_file_scheme(uri)).expanduser()


def load_scorer(spec: Any, index: int = 0, *, cache_dir: Path | None = None,
                connection: Connection = DEFAULT_CONNECTION) -> Scorer:
    """The scoring function of one `ScorerSpec` (see the module docstring)."""
    field = scorer_field(index, spec.name)
    if spec.callable is not None:
        return import_callable(spec.callable, field)
    from sail_trainer.models.components import pick_device

    folder = resolve_clip_folder(spec.clip.uri, field, cache_dir, connection)
    return ClipScorer(folder, field, pick_device())


def score_images(scorer: Scorer, field: str, images: list[Any], captions: Sequence[str]) -> np.ndarray:
    """One finite float per image from `scorer`; BadDataError naming `field` otherwise."""
    try:
        raw = scorer(list(images), list(captions))
    except Exception as exc:  # noqa: BLE001 -- a scorer's failure is reported as the scorer's
        raise BadDataError(f"{field}: the scorer raised {type(exc).__name__}: {exc}") from exc
    try:
        scores = np.asarray(_to_numpy(raw), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise BadDataError(f"{field}: the scorer returned {type(raw).__name__}, not numbers: {exc}") from exc
    if scores.shape != (len(images),):
        raise BadDataError(f"{field}: the scorer returned shape {tuple(scores.shape)} for {len(images)} images; "
                           f"it must return one number per image (shape ({len(images)},))")
    if not np.all(np.isfinite(scores)):
        raise BadDataError(f"{field}: the scorer returned a non-finite score (NaN or inf)")
    return scores


def _to_numpy(raw: Any) -> Any:
    detach = getattr(raw, "detach", None)  # a torch tensor
    return detach().float().cpu().numpy() if detach is not None else raw
