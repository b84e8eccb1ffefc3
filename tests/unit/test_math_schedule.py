"""lr_lambda: the four schedules, checked against transformers' get_scheduler shapes."""

from __future__ import annotations

import math

import pytest

from sail_trainer.math.schedule import lr_lambda


def test_constant_ignores_warmup() -> None:
    f = lr_lambda("constant", 10, 100)
    assert [f(s) for s in (0, 5, 10, 1000)] == [1.0, 1.0, 1.0, 1.0]


def test_constant_with_warmup_ramps_linearly_then_holds() -> None:
    f = lr_lambda("constant_with_warmup", 4, 100)
    assert [f(s) for s in range(7)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_lambda("constant_with_warmup", 0, 100)(0) == 1.0


def test_linear_warms_up_then_decays_to_zero_at_total_steps() -> None:
    f = lr_lambda("linear", 10, 110)
    assert f(5) == 0.5 and f(10) == 1.0
    assert f(60) == pytest.approx(0.5)
    assert f(110) == 0.0 and f(200) == 0.0


def test_cosine_is_a_half_cosine_after_warmup() -> None:
    f = lr_lambda("cosine", 10, 110)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5)
    assert f(35) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    assert f(110) == pytest.approx(0.0, abs=1e-12) and f(500) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("kind", ["constant", "constant_with_warmup", "linear", "cosine"])
def test_matches_transformers_get_scheduler(kind: str) -> None:
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = transformers.get_scheduler(kind, opt, num_warmup_steps=7, num_training_steps=50)
    ours = lr_lambda(kind, 7, 50)
    for step in range(51):  # past total_steps transformers' cosine rises again; ours stays at 0
        assert ours(step) == pytest.approx(sched.lr_lambdas[0](step), abs=1e-12), step


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown schedule 'polynomial'"):
        lr_lambda("polynomial", 0, 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps must be >= 0"):
        lr_lambda("linear", -1, 10)
