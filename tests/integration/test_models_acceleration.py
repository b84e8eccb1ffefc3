"""accelerate_unet: the levers change speed, not numbers, parameters or checkpoint keys.

Runs a real tiny UNet2DConditionModel (tests/builders) on CPU. The default suite compiles with
the aot_eager backend (same tracing, no kernel codegen); the inductor case is opt-in (`-m heavy`).
"""

from __future__ import annotations

import pytest
import torch

from sail_api.spec import PerformanceSpec
from sail_trainer.models.acceleration import accelerate_unet
from sail_trainer.models.components import load_unet
from tests.builders.tiny_pipeline import build_tiny_sd15


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_sd15(tmp_path_factory.mktemp("tiny") / "model")


def _inputs(unet):
    gen = torch.Generator().manual_seed(0)
    size = unet.config.sample_size
    x = torch.randn(3, unet.config.in_channels, size, size, generator=gen)
    text = torch.randn(3, 4, unet.config.cross_attention_dim, generator=gen)
    return x, torch.tensor([10, 500, 990]), text


def _predict(unet, inputs):
    x, t, text = inputs
    with torch.no_grad():
        return unet(x, t, encoder_hidden_states=text, return_dict=False)[0]


def test_no_lever_leaves_the_unet_untouched(model_dir):
    unet = load_unet(model_dir, torch.device("cpu"), torch.float32)
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    assert accelerate_unet(unet, PerformanceSpec()) is unet
    assert unet._compiled_call_impl is None
    assert all(torch.equal(before[k], v) for k, v in unet.state_dict().items())


def test_channels_last_changes_layout_not_predictions(model_dir):
    plain = load_unet(model_dir, torch.device("cpu"), torch.float32)
    fast = accelerate_unet(load_unet(model_dir, torch.device("cpu"), torch.float32),
                           PerformanceSpec(channels_last=True))
    conv = fast.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    inputs = _inputs(plain)
    torch.testing.assert_close(_predict(fast, inputs), _predict(plain, inputs), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", [
    # aot_eager: dynamo tracing + AOT autograd, the whole compile path but inductor's codegen.
    pytest.param("aot_eager", marks=pytest.mark.slow),
    # inductor generates and builds C++ kernels: minutes on 2 CPU cores, so opt-in.
    pytest.param("inductor", marks=pytest.mark.heavy),
])
def test_compile_keeps_keys_and_predictions_and_trains(model_dir, backend):
    plain = load_unet(model_dir, torch.device("cpu"), torch.float32)
    fast = accelerate_unet(load_unet(model_dir, torch.device("cpu"), torch.float32), PerformanceSpec(compile=True),
                           compile_backend=backend)
    assert fast._compiled_call_impl is not None  # compiled in place, not wrapped
    assert list(fast.state_dict()) == list(plain.state_dict())  # checkpoints keep the diffusers keys
    inputs = _inputs(plain)
    torch.testing.assert_close(_predict(fast, inputs), _predict(plain, inputs), rtol=1e-4, atol=1e-4)
    # Gradients flow through the compiled forward into the module's own parameters.
    fast.train().requires_grad_(True)
    x, t, text = inputs
    fast(x, t, encoder_hidden_states=text, return_dict=False)[0].pow(2).mean().backward()
    assert fast.conv_in.weight.grad is not None and fast.conv_in.weight.grad.abs().sum() > 0
