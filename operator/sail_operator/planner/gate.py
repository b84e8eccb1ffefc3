"""The round gate (`spec.roundGate`, opt-in): is round i accepted, judged by its held-out metric?

Beyond the paper, which runs every round whatever it does. After each train phase the planner
passes the phase's metrics here. Step 0 sets the first best; a round i >= 1 whose metric falls
more than `tolerance` below the best earlier iteration's regressed. Ties keep the earlier best
(fewer rounds away from the base). A train phase without the metric (a run that holds out no
pairs) gets no verdict: the gate cannot judge it and says so.

Pure: metrics and the previous best in, a verdict out; the planner turns it into status,
conditions and events.
"""

from __future__ import annotations

from dataclasses import dataclass

from sail_api.spec import RoundGateSpec
from sail_api.status import BestCheckpointStatus


@dataclass(frozen=True)
class GateVerdict:
    iteration: int
    metric: str
    value: float
    best_iteration: int  # best earlier iteration (this one when it is the new best)
    best_value: float
    regressed: bool

    @property
    def drop(self) -> float:
        return self.best_value - self.value

    def describe(self, tolerance: float) -> str:
        name = f"round {self.iteration}" if self.iteration else "step 0"
        if not self.regressed:
            return (f"{name}: {self.metric} {self.value:.4g} (best so far {self.best_value:.4g}, iteration "
                    f"{self.best_iteration}; tolerance {tolerance:g})")
        return (f"{name}: {self.metric} fell to {self.value:.4g}, {self.drop:.4g} below iteration "
                f"{self.best_iteration}'s {self.best_value:.4g} (tolerance {tolerance:g})")


def judge_iteration(gate: RoundGateSpec, iteration: int, metrics: dict[str, float],
                    best: BestCheckpointStatus | None) -> GateVerdict | None:
    """The verdict on the train of `iteration`; None when its metrics lack `gate.metric`."""
    value = metrics.get(gate.metric)
    if value is None:
        return None
    if best is None or best.metric != gate.metric or best.iteration >= iteration:
        return GateVerdict(iteration, gate.metric, value, iteration, value, regressed=False)
    regressed = iteration >= 1 and value < best.value - gate.tolerance
    if value > best.value:
        return GateVerdict(iteration, gate.metric, value, iteration, value, regressed=False)
    return GateVerdict(iteration, gate.metric, value, best.iteration, best.value, regressed=regressed)


def judge_scorers(gate: RoundGateSpec, iteration: int, metrics: dict[str, float]) -> GateVerdict | None:
    """The verdict on the evaluate phase of round `iteration` by `gate.scorers` (spec.evaluation): the
    guarded scorer whose mean fell most from theta_{i-1} to theta_i, regressed when that drop exceeds
    `scorerTolerance`. None unless one regressed (at step 0 there is nothing earlier to regress from): an
    accepted evaluate leaves the train phase's verdict on the round as it is."""
    if iteration < 1:
        return None
    found = [(metrics[f"eval_{name}_mean_previous"] - metrics[f"eval_{name}_mean_current"], name)
             for name in gate.scorers
             if f"eval_{name}_mean_current" in metrics and f"eval_{name}_mean_previous" in metrics]
    if not found:
        return None
    drop, name = max(found)
    if drop <= gate.scorer_tolerance:
        return None
    current = metrics[f"eval_{name}_mean_current"]
    return GateVerdict(iteration, f"scorer {name} (mean score)", current, iteration - 1, current + drop,
                       regressed=True)


def is_new_best(verdict: GateVerdict) -> bool:
    return verdict.best_iteration == verdict.iteration
