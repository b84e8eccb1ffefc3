"""Condition rules: upsert one condition, read one, and the set every accepted run carries.

Kubernetes' convention: ``lastTransitionTime`` moves only when a condition's status flips,
so a condition re-set with the same status (every reconcile does) keeps its time and only
its reason/message change. Pure: lists of conditions in, a new list out.
"""

from __future__ import annotations

from datetime import datetime

from sail_api.status import Condition, ConditionType, Reason, SAILRunStatus
from sail_operator.planner.timefmt import format_time

# Set to False on acceptance when absent, so `kubectl wait --for=condition=...` and dashboards
# see every condition from the start (Validated is set by the validity rules themselves).
BASE_CONDITIONS = (
    ConditionType.RUNNING, ConditionType.RETRYING, ConditionType.SUSPENDED,
    ConditionType.CHECKPOINT_AVAILABLE, ConditionType.COMPLETE, ConditionType.FAILED,
)


def set_condition(
    conditions: list[Condition], type_: ConditionType, status: str, reason: str, message: str,
    generation: int, now: datetime,
) -> list[Condition]:
    """Upsert a condition; lastTransitionTime changes only when `status` flips."""
    out: list[Condition] = []
    found = False
    for cond in conditions:
        if cond.type != type_:
            out.append(cond)
            continue
        found = True
        time = cond.last_transition_time if cond.status == status else format_time(now)
        out.append(Condition(type=type_, status=status, reason=reason, message=message,
                             observed_generation=generation, last_transition_time=time))
    if not found:
        out.append(Condition(type=type_, status=status, reason=reason, message=message,
                             observed_generation=generation, last_transition_time=format_time(now)))
    return out


def find_condition(status: SAILRunStatus, type_: ConditionType) -> Condition | None:
    return next((c for c in status.conditions if c.type == type_), None)


def condition_is(status: SAILRunStatus, type_: ConditionType, value: str = "True") -> bool:
    """True when `status` carries condition `type_` with status `value`."""
    cond = find_condition(status, type_)
    return cond is not None and cond.status == value


def add_base_conditions(conditions: list[Condition], generation: int, now: datetime) -> list[Condition]:
    """`conditions` plus each of BASE_CONDITIONS it lacks, as False (present ones are kept as they are)."""
    out = list(conditions)
    present = {c.type for c in out}
    for type_ in BASE_CONDITIONS:
        if type_ not in present:
            reason = Reason.NO_CHECKPOINT if type_ == ConditionType.CHECKPOINT_AVAILABLE else Reason.WAITING
            out = set_condition(out, type_, "False", reason, "", generation, now)
    return out
