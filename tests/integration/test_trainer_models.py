"""Loading tiny SD1.5/SDXL pipelines component by component, text caching, sampling, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sail_trainer.errors import BadSpecError
from sail_trainer.models.checkpoint import save_pipeline_folder
from sail_trainer.models.components import detect_layout, load_components
from sail_trainer.models.sampling import build_scheduler, sample_latents
from sail_trainer.models.source import resolve_model_folder
from sail_trainer.models.text import TextEncoder, build_unet_kwargs
from tests.builders.tiny_pipeline import build_tiny_sd15, build_tiny_sdxl


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pipelines")
    return {"sd15": build_tiny_sd15(root / "sd15"), "sdxl": build_tiny_sdxl(root / "sdxl")}


def _load(folder: Path, layout: str = "auto"):
    import torch

    return load_components(folder, layout, torch.device("cpu"), torch.float32)


def test_layouts_are_detected_and_a_wrong_request_is_refused(pipelines: dict[str, Path]) -> None:
    assert detect_layout(pipelines["sd15"]) == "sd15"
    assert detect_layout(pipelines["sdxl"]) == "sdxl"
    with pytest.raises(BadSpecError, match="model.layout"):
        detect_layout(pipelines["sd15"], "sdxl")


def test_a_folder_without_model_index_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(BadSpecError, match="model_index.json"):
        resolve_model_folder(str(tmp_path))


def test_sdxl_embeddings_have_pooled_output_and_time_ids(pipelines: dict[str, Path]) -> None:
    c = _load(pipelines["sdxl"])
    text = TextEncoder(c)
    emb = text.encode(["a cat", "a dog", "a cat"])
    assert emb.embeds.shape[0] == 3 and emb.embeds.shape[-1] == c.unet.config.cross_attention_dim
    assert emb.pooled is not None and emb.pooled.shape[0] == 3
    assert len(text._cache) == 2  # each distinct prompt encoded once
    kwargs = build_unet_kwargs(c, emb, 16)
    assert kwargs["added_cond_kwargs"]["time_ids"].tolist()[0] == [16, 16, 0, 0, 16, 16]
    zeros = text.unconditional(2)
    assert float(zeros.embeds.abs().sum()) == 0.0  # SDXL forces zeros for the CFG negative


def test_a_sample_does_not_depend_on_its_batch_companions(pipelines: dict[str, Path]) -> None:
    import torch

    c = _load(pipelines["sd15"])
    text = TextEncoder(c)

    def sample(seeds: list[int], prompts: list[str]):
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        return sample_latents(c.unet, c, build_scheduler("ddpm", c.scheduler_config), text.encode(prompts),
                              text.unconditional(len(seeds)), gens, steps=3, guidance_scale=5.0, resolution=16)

    pair = sample([1, 2], ["a cat", "a dog"])
    alone = sample([2], ["a dog"])
    assert pair.shape == (2, 4, 8, 8)
    assert torch.allclose(pair[1], alone[0], atol=1e-5)
    assert not torch.allclose(pair[0], pair[1])


def test_checkpoint_folder_replaces_only_the_unet(pipelines: dict[str, Path], tmp_path: Path) -> None:
    import torch
    from diffusers import DiffusionPipeline

    c = _load(pipelines["sd15"])
    with torch.no_grad():
        next(c.unet.parameters()).add_(1.0)
    save_pipeline_folder(pipelines["sd15"], c.unet, tmp_path / "ckpt")
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "ckpt")
    assert torch.equal(next(pipe.unet.parameters()), next(c.unet.parameters()))
    index = json.loads((tmp_path / "ckpt" / "model_index.json").read_text())
    assert index == json.loads((pipelines["sd15"] / "model_index.json").read_text())


@pytest.mark.parametrize("kind", ["ddpm", "ddim", "euler", "euler_ancestral", "dpmsolver"])
def test_every_sampler_kind_runs_and_is_reproducible(pipelines: dict[str, Path], kind: str) -> None:
    import torch

    c = _load(pipelines["sd15"])
    text = TextEncoder(c)

    def sample():
        gens = [torch.Generator().manual_seed(s) for s in (5, 6)]
        return sample_latents(c.unet, c, build_scheduler(kind, c.scheduler_config), text.encode(["a", "b"]),
                              text.unconditional(2), gens, steps=3, guidance_scale=3.0, resolution=16)

    first, second = sample(), sample()
    assert torch.isfinite(first).all()
    assert torch.equal(first, second)


def test_prompt_cache_is_bounded_in_host_memory_and_returns_the_same_embeddings(pipelines: dict[str, Path]) -> None:
    """The cache lives on the host and evicts least recently used prompts (a round of 50K
    distinct captions held on the GPU was ~6 GB for SD1.5); evicted prompts re-encode alike."""
    import torch

    c = _load(pipelines["sdxl"])
    text = TextEncoder(c, max_prompts=3)
    prompts = [f"a cat number {i}" for i in range(5)]
    first = text.encode(prompts)  # a batch larger than the cache still works
    assert text.cached == 3
    assert all(e.embeds.device.type == "cpu" for e in text._cache.values())
    text.encode([prompts[2]])  # touch: prompt 2 becomes the most recent
    text.encode(["a dog"])
    assert list(text._cache) == [prompts[4], prompts[2], "a dog"]
    again = text.encode(prompts)
    assert torch.equal(first.embeds, again.embeds) and torch.equal(first.pooled, again.pooled)


def test_a_v_prediction_model_is_refused_naming_the_field(pipelines: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "v-pred"
    shutil.copytree(pipelines["sd15"], folder)
    config_path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "prediction_type": "v_prediction"}))
    with pytest.raises(BadSpecError, match=r"model.uri: .*scheduler_config.json has prediction_type 'v_prediction'"):
        _load(folder)


def test_fp32_unet_samples_from_half_precision_text_embeddings(pipelines: dict[str, Path]) -> None:
    """The train phase renders its grid with the fp32 policy while the text encoders run in the
    compute dtype: the UNet's inputs must follow the UNet's dtype."""
    import torch

    c = load_components(pipelines["sd15"], "auto", torch.device("cpu"), torch.bfloat16)
    policy = c.unet.float()
    text = TextEncoder(c)
    assert text.encode(["a cat"]).embeds.dtype == torch.bfloat16
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    out = sample_latents(policy, c, build_scheduler("ddim", c.scheduler_config), text.encode(["a cat", "a dog"]),
                         text.unconditional(2), gens, steps=2, guidance_scale=3.0, resolution=16)
    assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())
