"""Load the components of an SD1.5- or SDXL-layout diffusers pipeline one by one.

Loading components separately (not a pipeline object) lets a phase copy the UNet for a
trainable policy and a frozen reference, keep the VAE in fp32, and run its own loops.
Precision: fp32/bf16/fp16 on CUDA; CPU computes in fp32 (logged once), because
half-precision convolutions on CPU are slow or unsupported, unless `SAIL_CPU_BF16=1` asks
for bf16 there too: that is how the test suite and `bench/gpu_check.py --device cpu` run
the bf16 code paths (autocast, dtype boundaries) without a GPU. The VAE stays fp32 (choice:
SDXL's VAE overflows in fp16, and it runs once per image).
The base model must predict epsilon (`prediction_type` of its scheduler config): the DPO
loss and the implicit reward compare epsilon errors.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from sail_trainer.errors import BadSpecError

log = logging.getLogger(__name__)
Layout = Literal["sd15", "sdxl"]


def detect_layout(folder: Path, requested: str = "auto") -> Layout:
    """sd15 or sdxl from model_index.json (a second text encoder means SDXL), unless `requested` says."""
    index = read_model_index(folder)
    has_second = bool(index.get("text_encoder_2")) and index["text_encoder_2"][0] is not None
    detected: Layout = "sdxl" if has_second else "sd15"
    if requested != "auto" and requested != detected:
        raise BadSpecError(
            f"model.layout: {requested!r} but {folder}/model_index.json describes a {detected} pipeline; "
            "set model.layout to auto or to the right layout"
        )
    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        if not index.get(name) or index[name][0] is None:
            raise BadSpecError(f"model.uri: {folder}/model_index.json has no {name!r} component")
    return detected


def read_model_index(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError) as exc:
        raise BadSpecError(f"model.uri: cannot read {folder}/model_index.json: {exc}") from exc


def pick_device() -> Any:
    """cuda:LOCAL_RANK when CUDA is available, else cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


CPU_BF16_ENV = "SAIL_CPU_BF16"


def resolve_dtype(precision: str, device: Any) -> Any:
    """torch dtype for a spec precision on `device`; fp32 on CPU (with a log line) unless
    `SAIL_CPU_BF16=1` and the precision is bf16."""
    wanted = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if device.type == "cpu" and wanted == torch.bfloat16 and os.environ.get(CPU_BF16_ENV) == "1":
        log.info("precision bf16 on CPU (%s=1)", CPU_BF16_ENV)
        return wanted
    if device.type == "cpu" and wanted != torch.float32:
        log.info("precision %s requested but running on CPU: computing in fp32", precision)
        return torch.float32
    return wanted


@dataclass
class Components:
    """The loaded parts of a pipeline. `unet` may be None when a phase loads it separately."""

    folder: Path
    layout: Layout
    device: Any
    dtype: Any
    vae: Any
    text_encoders: list[Any]
    tokenizers: list[Any]
    scheduler_config: dict[str, Any]
    unet: Any = None
    force_zeros_for_empty_prompt: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    def latent_shape(self, resolution: int) -> tuple[int, int, int]:
        side = resolution // self.vae_scale_factor
        return (self.latent_channels, side, side)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler_config.get("num_train_timesteps", 1000))


def read_scheduler_config(folder: Path) -> dict[str, Any]:
    """The scheduler config of a pipeline folder; BadSpecError unless the model predicts epsilon."""
    path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(path.read_text())
    check_epsilon_prediction(config, path)
    return config


def check_epsilon_prediction(scheduler_config: dict[str, Any], source: Any) -> None:
    """SAIL's loss and reward compare epsilon errors (as the Diffusion-DPO reference code asserts):
    a v-prediction or sample-prediction model would train on the wrong target without an error."""
    kind = scheduler_config.get("prediction_type", "epsilon")
    if kind != "epsilon":
        raise BadSpecError(
            f"model.uri: {source} has prediction_type {kind!r}; SAIL needs an epsilon-prediction base model "
            "(SD1.5, SDXL base); v-prediction models (e.g. SD2.x 768) are not supported"
        )


def load_unet(folder: Path, device: Any, dtype: Any) -> Any:
    """The UNet of a pipeline folder, eval mode, no grad, on device/dtype."""
    try:
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype)
    except (OSError, ValueError) as exc:
        raise BadSpecError(f"model.uri: cannot load {folder}/unet: {exc}") from exc
    unet.to(device)
    unet.eval().requires_grad_(False)
    return unet


def load_components(folder: Path, layout: str, device: Any, dtype: Any, *, with_unet: bool = True) -> Components:
    """Load every component but the UNet is optional (see the module docstring for precision)."""
    resolved = detect_layout(folder, layout)
    index = read_model_index(folder)
    try:
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float32).to(device)
        tokenizers = [CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")]
        encoders = [CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")]
        if resolved == "sdxl":
            tokenizers.append(CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer_2"))
            encoders.append(CLIPTextModelWithProjection.from_pretrained(folder, subfolder="text_encoder_2"))
        scheduler_config = read_scheduler_config(folder)
    except (OSError, ValueError) as exc:
        raise BadSpecError(f"model.uri: cannot load the components of {folder}: {exc}") from exc
    for module in [vae, *encoders]:
        module.eval().requires_grad_(False)
    encoders = [e.to(device=device, dtype=dtype) for e in encoders]
    return Components(
        folder=folder, layout=resolved, device=device, dtype=dtype, vae=vae, text_encoders=encoders,
        tokenizers=tokenizers, scheduler_config=scheduler_config,
        unet=load_unet(folder, device, dtype) if with_unet else None,
        force_zeros_for_empty_prompt=bool(index.get("force_zeros_for_empty_prompt", resolved == "sdxl")),
    )
