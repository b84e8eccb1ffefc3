"""The sampling loop on a UNet + scheduler, with classifier-free guidance in one batched forward.

Written here (not `pipeline(...)`) so that generate, annotate and train share the same
pieces (components, text embeddings, UNet kwargs) and so that each sample has its own
`torch.Generator`: the initial noise and any stochastic scheduler noise of sample j come
from generator j only, which makes a sample independent of which other samples share its
batch (sharding does not change results).
"""

from __future__ import annotations

from typing import Any

import diffusers
import torch

from sail_trainer.models.components import Components
from sail_trainer.models.text import TextEmbeddings, build_unet_kwargs

SCHEDULER_CLASSES = {
    "ddpm": "DDPMScheduler",
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_ancestral": "EulerAncestralDiscreteScheduler",
    "dpmsolver": "DPMSolverMultistepScheduler",
}


def build_scheduler(kind: str, base_config: dict[str, Any]) -> Any:
    """A fresh diffusers scheduler of `kind` built from the pipeline's scheduler config."""
    cls = getattr(diffusers, SCHEDULER_CLASSES[kind])
    config = {k: v for k, v in base_config.items() if not k.startswith("_")}
    return cls.from_config(config)


def predict_noise(unet: Any, components: Components, x_t: Any, timesteps: Any, text: TextEmbeddings,
                  resolution: int) -> Any:
    """Epsilon prediction of `unet` for `x_t [B,...]` at integer `timesteps [B]` (conditional only)."""
    kwargs = build_unet_kwargs(components, text, resolution, unet.dtype)
    return unet(x_t.to(unet.dtype), timesteps, **kwargs, return_dict=False)[0]


def sample_latents(
    unet: Any, components: Components, scheduler: Any, cond: TextEmbeddings, uncond: TextEmbeddings,
    generators: list[Any], *, steps: int, guidance_scale: float, resolution: int,
) -> Any:
    """Final latents `[B, C, h, w]` (fp32, not decoded) for `B = len(generators)` samples.

    `cond`/`uncond` hold B rows each. With guidance_scale > 1 the conditional and
    unconditional halves go through the UNet as one batch of 2B. The UNet's inputs are cast
    to the UNet's own dtype (the train phase samples its grid with the fp32 policy while the
    text encoders run in bf16); the scheduler works in fp32.
    """
    device, dtype = components.device, unet.dtype
    shape = components.latent_shape(resolution)
    latents = torch.stack([torch.randn(shape, generator=g, device=g.device) for g in generators]).to(device)
    scheduler.set_timesteps(steps, device=device)
    latents = latents * scheduler.init_noise_sigma
    use_cfg = guidance_scale > 1.0
    text = TextEmbeddings.cat([uncond, cond]) if use_cfg else cond
    kwargs = build_unet_kwargs(components, text, resolution, dtype)
    gen_arg = generators if len(generators) > 1 else generators[0]
    with torch.no_grad():
        for t in scheduler.timesteps:
            model_in = torch.cat([latents, latents]) if use_cfg else latents
            model_in = scheduler.scale_model_input(model_in, t)
            pred = unet(model_in.to(dtype), t, **kwargs, return_dict=False)[0].float()
            if use_cfg:
                pred_uncond, pred_cond = pred.chunk(2)
                pred = pred_uncond + guidance_scale * (pred_cond - pred_uncond)
            latents = scheduler.step(pred, t, latents, generator=gen_arg, return_dict=False)[0]
    return latents.float()


def decode_latents(components: Components, latents: Any) -> Any:
    """uint8 images `[B, H, W, 3]` (numpy) from latents, via the fp32 VAE."""
    vae = components.vae
    with torch.no_grad():
        images = vae.decode(latents.to(components.device, torch.float32) / vae.config.scaling_factor,
                            return_dict=False)[0]
    images = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).cpu().numpy()


def encode_images(components: Components, pixels: Any, generator: Any) -> Any:
    """Clean latents `vae.encode(x).latent_dist.sample() * scaling_factor` for pixels in [-1, 1]."""
    vae = components.vae
    with torch.no_grad():
        dist = vae.encode(pixels.to(components.device, torch.float32)).latent_dist
        return (dist.sample(generator=generator) * vae.config.scaling_factor).float().cpu()
