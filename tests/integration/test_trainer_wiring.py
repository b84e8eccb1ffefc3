"""The phases' wiring: which model, tensor, sign and index each phase uses, checked against an
independent computation (diffusers' own pipeline, direct UNet calls), not only the pure maths.

One tiny run goes through step 0 and round 1 (fp32, in process). Then:
- generate: the committed latents equal `StableDiffusionPipeline` (loaded from theta_0's folder)
  run on the same initial noise, several prompts per batch, CFG on;
- annotate: the stored model/judge errors equal direct UNet calls of theta_0 and of the base
  (judgeReference: base) on the same M draws for every candidate; the reward is
  -(beta/2) mean(model - judge) (positive where the model beats the judge); winner/loser are
  argmax/argmin;
- train: `dpo_micro_step` equals the loss built from direct UNet calls (winner rows first, one
  (t, eps) per pair, the given reference); round 1 starts from theta_0 (its policy init) and
  its reference equals its policy at step 1 (first loss log 2);
- the judge folder per `judgeReference`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from sail_api.layout import RunLayout
from sail_api.phases import Phase
from sail_api.storage import LocalStore
from sail_trainer.cli import main
from sail_trainer.phases.artifacts import ANNOTATION_TENSORS, ANNOTATIONS, load_tensors
from sail_trainer.storage import resolve_committed
from tests.builders.tiny_run import create_tiny_run, phase_args

BETA = 5000.0
SETTINGS = dict(promptsPerRound=4, candidatesPerPrompt=2, rewardDraws=3,
                sampler={"kind": "ddpm", "steps": 3, "guidanceScale": 5.0, "batchSize": 4},
                train={"step0Steps": 4, "steps": 1, "effectiveBatch": 4, "microBatch": 2})


class _Run:
    def __init__(self, folder: Path) -> None:
        self.tiny = create_tiny_run(folder, **SETTINGS)
        self.store, self.layout = LocalStore(self.tiny.run_uri), RunLayout(self.tiny.run_uri)
        self.spec = json.loads(self.tiny.spec.read_text())["algorithm"]

    def file(self, folder: str, name: str, *, is_folder: bool = False) -> Path:
        return Path(resolve_committed(self.store, folder, name, is_folder=is_folder))

    def model(self, iteration: int) -> Path:
        return self.file(self.layout.phase_dir(iteration, Phase.TRAIN), "model", is_folder=True)

    def history(self, iteration: int) -> list[dict]:
        return json.loads(self.file(self.layout.phase_dir(iteration, Phase.TRAIN), "metrics.json").read_text())


# The module fixture builds its tiny run once; one xdist worker runs the module (tests/conftest.py).
pytestmark = pytest.mark.xdist_group("trainer_wiring")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> _Run:
    r = _Run(tmp_path_factory.mktemp("wiring"))
    for phase, iteration in [("mixup", 0), ("train", 0), ("generate", 1), ("annotate", 1), ("mixup", 1), ("train", 1)]:
        assert main(phase_args(r.tiny, phase, iteration)) == 0, (phase, iteration)
    return r


def _unet(folder: Path):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(folder, subfolder="unet").eval()


def _encode(folder: Path, prompts: list[str]) -> torch.Tensor:
    from transformers import CLIPTextModel, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    enc = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder").eval()
    ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return enc(ids.input_ids)[0]


def _alphas(folder: Path) -> torch.Tensor:
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_pretrained(folder, subfolder="scheduler").alphas_cumprod


def _se(unet, x0, noise, t, emb, alphas) -> torch.Tensor:
    """SE = mean (eps - eps_theta(x_t))^2 by direct diffusers calls."""
    abar = alphas[t].view(-1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    with torch.no_grad():
        pred = unet(x_t, t, encoder_hidden_states=emb).sample
    return (pred - noise).pow(2).flatten(1).mean(1)


# ----------------------------------------------------------------------------- generate


def test_generate_equals_stable_diffusion_pipeline_with_cfg_and_several_prompts_per_batch(run: _Run) -> None:
    from diffusers import StableDiffusionPipeline

    from sail_trainer.phases.generate_phase import sample_seeds

    shard = run.layout.shard_dir(1, Phase.GENERATE, 0, 1)
    meta = json.loads(run.file(shard, "prompts.json").read_text())
    latents = load_tensors(run.file(shard, "parts/part-00000/latents.safetensors").read_bytes())["latents"]
    n, s = meta["candidates"], run.spec["sail"]
    assert n == 2 and s["sampler"]["batchSize"] // n == 2  # two prompts share each batch
    pipe = StableDiffusionPipeline.from_pretrained(run.model(0), safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    for first in range(0, len(meta["prompts"]), 2):
        prompts, indices = meta["prompts"][first:first + 2], meta["prompt_indices"][first:first + 2]
        gens = [torch.Generator().manual_seed(seed) for j in indices for seed in sample_seeds(s["seed"], 1, j, n)]
        noise = torch.stack([torch.randn((4, 8, 8), generator=g) for g in gens])  # advances each generator
        out = pipe(prompt=prompts, num_images_per_prompt=n, latents=noise, generator=gens,
                   num_inference_steps=s["sampler"]["steps"], guidance_scale=s["sampler"]["guidanceScale"],
                   height=16, width=16, output_type="latent").images
        torch.testing.assert_close(latents[first:first + 2].flatten(0, 1), out, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- annotate


def test_annotate_errors_share_draws_and_come_from_the_model_and_the_judge(run: _Run) -> None:
    from sail_trainer.math.reward import draw_shared_noise
    from sail_trainer.plan import derive_seed

    shard = run.layout.shard_dir(1, Phase.ANNOTATE, 0, 1)
    tensors = load_tensors(run.file(shard, ANNOTATION_TENSORS).read_bytes())
    records = json.loads(run.file(shard, ANNOTATIONS).read_text())["pairs"]
    theta0, base = run.model(0), run.tiny.model
    model_unet, judge_unet, alphas = _unet(theta0), _unet(base), _alphas(base)
    gen_shard = run.layout.shard_dir(1, Phase.GENERATE, 0, 1)
    cands = load_tensors(run.file(gen_shard, "parts/part-00000/latents.safetensors").read_bytes())["latents"]
    m = run.spec["sail"]["rewardDraws"]
    for i, rec in enumerate(records):
        x = cands[rec["row"]]  # [N, C, h, w]
        gen = torch.Generator().manual_seed(derive_seed(run.spec["sail"]["seed"], 1, rec["prompt_index"], "annotate"))
        t, eps = draw_shared_noise(gen, m, tuple(x.shape[1:]), 1000)
        emb = _encode(theta0, [rec["prompt"]] * m)
        for k in range(x.shape[0]):  # candidate k on every one of the prompt's M draws
            x0 = x[k : k + 1].expand(m, -1, -1, -1)
            torch.testing.assert_close(tensors["model_err"][i, k], _se(model_unet, x0, eps, t, emb, alphas),
                                       rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(tensors["ref_err"][i, k], _se(judge_unet, x0, eps, t, emb, alphas),
                                       rtol=1e-4, atol=1e-6)
    expected = -(BETA / 2) * (tensors["model_err"] - tensors["ref_err"]).mean(-1)
    torch.testing.assert_close(tensors["rewards"], expected)
    assert [r["winner"] for r in records] == tensors["rewards"].argmax(1).tolist()
    assert [r["loser"] for r in records] == tensors["rewards"].argmin(1).tolist()
    assert all(r["rewards"][r["winner"]] - r["rewards"][r["loser"]] == pytest.approx(r["margin"]) for r in records)


# ----------------------------------------------------------------------------- train


def test_dpo_micro_step_pairs_rows_draws_and_reference_like_direct_calls(run: _Run) -> None:
    from sail_trainer.math.dpo import diffusion_dpo_loss
    from sail_trainer.models.components import load_components
    from sail_trainer.models.text import TextEncoder
    from sail_trainer.phases.train_phase import DpoStepModels, dpo_micro_step

    base, theta0 = run.tiny.model, run.model(0)
    components = load_components(base, "auto", torch.device("cpu"), torch.float32, with_unet=False)
    policy, reference, alphas = _unet(theta0), _unet(base), _alphas(base)  # policy != reference
    g = torch.Generator().manual_seed(3)
    batch = {"prompts": ["a red house", ""], "x_w": torch.randn(2, 4, 8, 8, generator=g),
             "x_l": torch.randn(2, 4, 8, 8, generator=g), "timesteps": torch.tensor([50, 700]),
             "noise": torch.randn(2, 4, 8, 8, generator=g)}
    with torch.no_grad():
        out = dpo_micro_step(DpoStepModels(policy, reference, components, TextEncoder(components), alphas, BETA, 16,
                                           lambda: torch.autocast("cpu", enabled=False)), batch)
    emb = _encode(base, batch["prompts"])
    args = (batch["noise"], batch["timesteps"], emb, alphas)
    expected = diffusion_dpo_loss(_se(policy, batch["x_w"], *args), _se(policy, batch["x_l"], *args),
                                  _se(reference, batch["x_w"], *args), _se(reference, batch["x_l"], *args), BETA)
    assert float(expected.inside.abs().max()) > 1e-3, "policy and reference must differ for this test to mean anything"
    torch.testing.assert_close(out.inside, expected.inside, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.loss, expected.loss, rtol=1e-5, atol=1e-6)


def test_round_one_trains_from_theta0_with_theta0_as_reference(run: _Run) -> None:
    from safetensors.torch import load_file

    name = "unet/diffusion_pytorch_model.safetensors"
    base, theta0, theta1 = (load_file(p / name) for p in (run.tiny.model, run.model(0), run.model(1)))

    def dist(a, b) -> float:
        return sum(float((a[k] - b[k]).abs().sum()) for k in a)

    # step 0 took 4 steps from the base, round 1 one step from theta_0
    assert dist(theta1, theta0) < dist(theta1, base) / 2
    assert run.history(1)[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # reference == policy at step 1
    assert run.history(0)[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)


def test_judge_folder_follows_judge_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from sail_trainer.phases import models_of_run

    monkeypatch.setattr(models_of_run, "resolve_base_folder", lambda ctx: "base")
    monkeypatch.setattr(models_of_run, "resolve_iteration_folder",
                        lambda ctx, i: "base" if i < 0 else f"theta{i}")

    def judge(kind: str, iteration: int) -> str:
        ctx = SimpleNamespace(iteration=iteration, algorithm=SimpleNamespace(sail=SimpleNamespace(judge_reference=kind)))
        return models_of_run.resolve_judge_folder(ctx)

    assert [judge("base", 3), judge("previous", 3), judge("previous", 1), judge("step0", 3)] == \
        ["base", "theta1", "base", "theta0"]


def test_the_prompt_pool_a_phase_reads_has_no_repeats(tmp_path: Path) -> None:
    """Rounds are disjoint by pool index: a raw caption file that repeats strings must not let two
    rounds (or one) use a prompt twice."""
    from sail_api.storage import LocalStore as Store
    from sail_trainer.phases.context import PhaseContext
    from sail_trainer.phases.generate_phase import read_prompt_pool, round_prompt_indices
    from sail_trainer.phases.runner import read_resolved_spec
    from tests.builders.tiny_pipeline import build_tiny_run_spec

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\na dog\na cat\na tree\na dog\na house\n")
    spec = tmp_path / "spec.json"
    spec.write_text(build_tiny_run_spec(str(tmp_path / "run"), "m", "s", str(prompts), promptsPerRound=2))
    ctx = PhaseContext(resolved=read_resolved_spec(str(spec)), run_uri=str(tmp_path / "run"), iteration=1,
                       phase=Phase.GENERATE, store=Store(str(tmp_path / "run")), cache_dir=tmp_path, work_dir=tmp_path)
    pool = read_prompt_pool(ctx)
    assert sorted(pool) == ["a cat", "a dog", "a house", "a tree"]
    seen = [pool[j] for i in (1, 2) for j in round_prompt_indices(
        PhaseContext(**{**ctx.__dict__, "iteration": i}), pool)]
    assert len(seen) == len(set(seen)) == 4
