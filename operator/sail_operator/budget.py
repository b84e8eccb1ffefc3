"""The admin's cost budget: refuse a SAILRun whose step 0 or round would not fit, before any Job starts.

Pure: the limits come from the operator policy (`OperatorPolicy.max_round_gpu_hours`,
`max_round_storage_bytes`, chart values `policy.maxRoundGpuHours` / `policy.maxRoundStorageBytes`),
the cost from `estimate.compute_estimate` with the layout's default model facts (the operator
never reads the model or the data). Each violation names the spec field that drives the cost
and the largest value that fits, so the user knows what to change.

A "round" is one iteration: step 0 (seed encoding + train) and each SAIL round (generate,
annotate, mixup, train) are checked on their own; every round costs the same.
"""

from __future__ import annotations

from sail_api.spec import SAILRunSpec
from sail_operator.estimate import CostEstimate, compute_estimate


def _round_fits(spec: SAILRunSpec, prompts: int, max_gpu_hours: float | None, max_bytes: int | None) -> bool:
    trial = spec.model_copy(update={"sail": spec.sail.model_copy(update={"prompts_per_round": prompts})})
    total = compute_estimate(trial).total(1)
    return ((max_gpu_hours is None or (total.gpu_hours or 0.0) <= max_gpu_hours)
            and (max_bytes is None or total.storage_bytes <= max_bytes))


def compute_max_prompts_per_round(spec: SAILRunSpec, max_gpu_hours: float | None, max_bytes: int | None) -> int:
    """The largest sail.promptsPerRound whose round fits both limits (0 when not even one prompt fits)."""
    if not _round_fits(spec, 1, max_gpu_hours, max_bytes):
        return 0
    low, high = 1, max(2, spec.sail.prompts_per_round)
    while _round_fits(spec, high, max_gpu_hours, max_bytes):  # cost grows with prompts: find an upper bound
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if _round_fits(spec, mid, max_gpu_hours, max_bytes) else (low, mid)
    return low


def _describe(estimate: CostEstimate, iteration: int, what: str) -> str:
    parts = []
    for p in estimate.iteration(iteration):
        value = p.gpu_hours if what == "gpu" else p.storage_bytes / 1e9
        if value:
            parts.append(f"{p.phase} {value:.2f}")
    return ", ".join(parts)


def compute_budget_violations(spec: SAILRunSpec, *, max_round_gpu_hours: float | None = None,
                              max_round_storage_bytes: int | None = None) -> list[str]:
    """Every way step 0 or a round of `spec` exceeds the budget, each naming the field to change.

    A limit of None or 0 is no limit (the chart's default is 0: Helm drops null values)."""
    max_round_gpu_hours = max_round_gpu_hours or None
    max_round_storage_bytes = max_round_storage_bytes or None
    if max_round_gpu_hours is None and max_round_storage_bytes is None:
        return []
    estimate = compute_estimate(spec)
    problems = []
    limits = (("gpu", max_round_gpu_hours, "maxRoundGpuHours", "GPU-hours"),
              ("bytes", max_round_storage_bytes, "maxRoundStorageBytes", "bytes of storage"))
    for kind, limit, key, unit in limits:
        if limit is None:
            continue
        for iteration in ([0, 1] if spec.sail.rounds else [0]):
            total = estimate.total(iteration)
            value = (total.gpu_hours or 0.0) if kind == "gpu" else total.storage_bytes
            if value <= limit:
                continue
            shown = f"{value:.2f} GPU-hours on {estimate.card}" if kind == "gpu" else f"{value / 1e9:.2f} GB"
            split = _describe(estimate, iteration, kind) + (" GB" if kind == "bytes" else "")
            if iteration == 0:
                problems.append(
                    f"spec.seedPairs.limit {spec.seed_pairs.limit}: step 0 needs an estimated {shown} ({split}), "
                    f"over the operator policy's {key} {limit} ({unit} per round); lower spec.seedPairs.limit "
                    "or ask the cluster admin to raise the budget (`sail plan FILE` shows the estimate)")
            else:
                fit = compute_max_prompts_per_round(
                    spec, max_round_gpu_hours if kind == "gpu" else None,
                    max_round_storage_bytes if kind == "bytes" else None)
                problems.append(
                    f"spec.sail.promptsPerRound {spec.sail.prompts_per_round}: one round needs an estimated "
                    f"{shown} ({split}), over the operator policy's {key} {limit} ({unit} per round); "
                    f"at most {fit} prompts per round fit (also check candidatesPerPrompt, sampler.steps, "
                    "rewardDraws), or ask the cluster admin to raise the budget (`sail plan FILE` shows the estimate)")
    return problems
