"""diffusion_dpo_loss: docs/method.md equations, the log-2 fixed point, gradient direction."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from sail_trainer.math.denoising import add_noise, denoising_error
from sail_trainer.math.dpo import diffusion_dpo_loss


def _reference(mw, ml, rw, rl, beta):
    """Straight from docs/method.md, one pair at a time in python floats."""
    insides = [-0.5 * beta * ((a - b) - (c - d)) for a, b, c, d in zip(mw, ml, rw, rl, strict=True)]
    losses = [math.log1p(math.exp(-x)) if x > -30 else -x for x in insides]  # -logsigmoid(x)
    return sum(losses) / len(losses), insides


@pytest.mark.parametrize("beta", [1.0, 2000.0, 5000.0])
def test_loss_equals_a_straightforward_reference_implementation(beta: float) -> None:
    g = torch.Generator().manual_seed(int(beta))
    errs = [torch.rand(16, generator=g, dtype=torch.float64).float() * 0.2 for _ in range(4)]
    out = diffusion_dpo_loss(*errs, beta=beta)
    ref_loss, ref_inside = _reference(*(e.tolist() for e in errs), beta)
    assert out.loss.item() == pytest.approx(ref_loss, rel=1e-4)
    torch.testing.assert_close(out.inside, torch.tensor(ref_inside), rtol=1e-4, atol=1e-3)
    assert out.implicit_accuracy.item() == pytest.approx(sum(x > 0 for x in ref_inside) / 16)
    assert out.reward_margin.item() == pytest.approx(sum(ref_inside) / 16, rel=1e-4, abs=1e-3)
    torch.testing.assert_close(out.model_diff, errs[0] - errs[1])
    torch.testing.assert_close(out.ref_diff, errs[2] - errs[3])


def test_theta_equal_to_ref_gives_log_2_and_zero_inside() -> None:
    g = torch.Generator().manual_seed(3)
    w, l_ = torch.rand(8, generator=g), torch.rand(8, generator=g)
    out = diffusion_dpo_loss(w, l_, w.clone(), l_.clone(), beta=5000.0)
    assert out.loss.item() == pytest.approx(math.log(2.0), abs=1e-7)
    assert torch.all(out.inside == 0)
    assert out.implicit_accuracy.item() == 0.0  # ties are not counted as correct
    assert out.reward_margin.item() == 0.0


def test_gradient_pushes_winner_error_down_and_loser_error_up() -> None:
    mw = torch.rand(4, requires_grad=True)
    ml = torch.rand(4, requires_grad=True)
    rw, rl = torch.rand(4, requires_grad=True), torch.rand(4, requires_grad=True)
    diffusion_dpo_loss(mw, ml, rw, rl, beta=100.0).loss.backward()
    assert torch.all(mw.grad > 0)  # descent lowers SE_theta(x_w)
    assert torch.all(ml.grad < 0)  # descent raises SE_theta(x_l)
    assert rw.grad is None and rl.grad is None  # the reference is frozen


class _TinyEps(torch.nn.Module):
    """A parameterised epsilon predictor shared by every sample: 1x1 conv times a per-pixel scale."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 1)
        self.scale = torch.nn.Parameter(torch.ones(1, 4, 8, 8))

    def forward(self, x_t: torch.Tensor) -> torch.Tensor:
        return self.conv(x_t) * self.scale


class _PerImageEps(torch.nn.Module):
    """A predictor with a separate bias per image, so winner and loser gradients do not interact."""

    def __init__(self, num_images: int) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(num_images, 4, 8, 8))
        self.conv = torch.nn.Conv2d(4, 4, 1).requires_grad_(False)

    def forward(self, x_t: torch.Tensor, image_ids: torch.Tensor) -> torch.Tensor:
        return self.conv(x_t) + self.bias[image_ids]


def _pair_batch(seed: int, batch: int = 2):
    g = torch.Generator().manual_seed(seed)
    abar = torch.linspace(0.999, 0.01, 1000)
    x_w, x_l = torch.randn(batch, 4, 8, 8, generator=g), torch.randn(batch, 4, 8, 8, generator=g)
    eps = torch.randn(batch, 4, 8, 8, generator=g)  # same eps and t for winner and loser
    t = torch.randint(0, 1000, (batch,), generator=g)
    return add_noise(x_w, eps, t, abar), add_noise(x_l, eps, t, abar), eps


def _sgd_step(model: torch.nn.Module, lr: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= lr * p.grad


@pytest.mark.parametrize("seed", range(3))
def test_one_sgd_step_lowers_se_winner_and_raises_se_loser(seed: int) -> None:
    torch.manual_seed(seed)
    model = _PerImageEps(num_images=4)
    ref = copy.deepcopy(model).requires_grad_(False)
    xt_w, xt_l, eps = _pair_batch(seed)
    ids_w, ids_l = torch.tensor([0, 1]), torch.tensor([2, 3])

    def errors(m: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        return denoising_error(m(xt_w, ids_w), eps), denoising_error(m(xt_l, ids_l), eps)

    with torch.no_grad():
        rw, rl = errors(ref)
    mw, ml = errors(model)
    out = diffusion_dpo_loss(mw, ml, rw, rl, beta=50.0)
    assert out.loss.item() == pytest.approx(math.log(2.0), abs=1e-6)
    out.loss.backward()
    _sgd_step(model, 1e-2)
    with torch.no_grad():
        new_w, new_l = errors(model)
    assert torch.all(new_w < mw.detach())
    assert torch.all(new_l > ml.detach())


@pytest.mark.parametrize("seed", range(3))
def test_one_sgd_step_on_a_shared_model_widens_the_preference_and_lowers_the_loss(seed: int) -> None:
    torch.manual_seed(seed)
    model = _TinyEps()
    ref = copy.deepcopy(model).requires_grad_(False)
    xt_w, xt_l, eps = _pair_batch(seed)

    def errors(m: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        return denoising_error(m(xt_w), eps), denoising_error(m(xt_l), eps)

    with torch.no_grad():
        rw, rl = errors(ref)
    mw, ml = errors(model)
    out = diffusion_dpo_loss(mw, ml, rw, rl, beta=50.0)
    out.loss.backward()
    _sgd_step(model, 1e-3)
    with torch.no_grad():
        new_w, new_l = errors(model)
        after = diffusion_dpo_loss(new_w, new_l, rw, rl, beta=50.0)
    assert (new_w - new_l).mean() < (mw - ml).detach().mean()  # SE_w pushed down relative to SE_l
    assert after.loss.item() < out.loss.item()
    assert after.reward_margin.item() > 0


def test_reference_errors_with_grad_do_not_leak_gradient() -> None:
    p = torch.tensor(0.3, requires_grad=True)
    rw = p * torch.ones(3)
    out = diffusion_dpo_loss(torch.rand(3, requires_grad=True), torch.rand(3), rw, torch.zeros(3), beta=10.0)
    out.loss.backward()
    assert p.grad is None


def test_logged_fields_are_detached_and_loss_is_scalar() -> None:
    out = diffusion_dpo_loss(torch.rand(5, requires_grad=True), torch.rand(5), torch.rand(5), torch.rand(5), 5.0)
    assert out.loss.ndim == 0 and out.loss.requires_grad
    for name in ("inside", "implicit_accuracy", "reward_margin", "model_diff", "ref_diff"):
        assert not getattr(out, name).requires_grad, name
    assert out.implicit_accuracy.dtype == torch.float32
    with pytest.raises(AttributeError):
        out.loss = torch.tensor(0.0)  # frozen


def test_large_beta_does_not_overflow() -> None:
    out = diffusion_dpo_loss(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([0.0]), 5000.0)
    assert math.isfinite(out.loss.item()) and out.loss.item() == pytest.approx(2500.0)


@pytest.mark.parametrize(
    "shapes, beta",
    [([(4,), (4,), (4,), (3,)], 1.0), ([(4, 1)] * 4, 1.0), ([(4,)] * 4, 0.0), ([(4,)] * 4, float("nan"))],
    ids=["one shape differs", "not 1-D", "beta zero", "beta nan"],
)
def test_bad_inputs_are_rejected(shapes, beta) -> None:
    with pytest.raises(ValueError, match="diffusion_dpo_loss"):
        diffusion_dpo_loss(*(torch.zeros(s) for s in shapes), beta=beta)
