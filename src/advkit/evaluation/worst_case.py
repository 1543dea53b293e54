"""The worst case over attacks, per point and per budget (DESIGN §4).

At each (norm, eps) a point is robust only if it was correctly classified and survived every attack
run at that eps in that norm: every budgeted attack (and the ensemble) run at exactly that eps, and
every minimum-norm attack of the same norm (DeepFool, C&W, ...), which breaks the point at eps when
it fooled it with a perturbation of norm <= eps. The worst case exists only where it was measured:
at the eps values of the budgeted scenarios of that norm. A norm with minimum-norm attacks only is
measured at every eps; its grid is 0, the requested budgets and the quartiles of the norms found.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch


def broken_within(distance, fooled: torch.Tensor, eps: float) -> torch.Tensor:
    """Points a minimum-norm attack broke within eps (the ensemble's tolerance, 1e-5 relative)."""
    dist = torch.as_tensor(distance, dtype=torch.float64)
    return fooled & (dist <= eps + 1e-5 * max(1.0, eps))


@dataclass
class WorstCasePoint:
    norm: str
    eps: float
    robust: torch.Tensor  # bool per point
    correct: torch.Tensor  # bool per point: clean prediction correct
    attacks: list[str] = field(default_factory=list)  # scenario ids that ran at this budget
    minimum_norm_only: bool = False  # the norm has no budgeted scenario
    requested: bool = True  # a budget of the plan or asked for (not a quartile of the norms)


def worst_case_points(budgeted: dict[str, dict[float, list[tuple[str, list]]]],
                      minimum_norm: dict[str, list[tuple[str, list, list]]],
                      y: torch.Tensor, clean_pred: torch.Tensor, *,
                      extra_eps: dict[str, set[float]] | None = None) -> list[WorstCasePoint]:
    """``budgeted[norm][eps]``: (scenario id, per-point robust flags) of each scenario run at eps;
    ``minimum_norm[norm]``: (scenario id, per-point distances, per-point adversarial predictions)
    of each minimum-norm attack measuring distances in that norm; ``extra_eps[norm]``: budgets
    asked for (thresholds, verdict budgets), used for norms with minimum-norm attacks only."""
    y, clean_pred = y.cpu(), clean_pred.cpu()
    correct = clean_pred == y
    extra_eps = extra_eps or {}
    fooled = {norm: [(sid, dist, correct & (torch.as_tensor(adv) != y)) for sid, dist, adv in rows]
              for norm, rows in minimum_norm.items()}
    points = []
    for norm in sorted(set(budgeted) | set(minimum_norm)):
        by_eps = budgeted.get(norm) or {}
        requested = set(by_eps)
        if by_eps:
            grid = sorted(by_eps)
        else:
            requested = {0.0} | set(extra_eps.get(norm, ()))
            dists = [np.asarray(d, dtype=float)[f.numpy()] for _, d, f in fooled.get(norm, [])]
            pooled = np.concatenate(dists) if dists else np.zeros(0)
            pooled = pooled[np.isfinite(pooled) & (pooled > 0)]
            quart = set(np.quantile(pooled, [0.25, 0.5, 0.75, 1.0]).tolist()) if pooled.size else set()
            grid = sorted(requested | quart)
        for eps in grid:
            robust = correct.clone()
            ids = []
            for sid, flags in by_eps.get(eps, []):
                robust &= torch.as_tensor(flags, dtype=torch.bool)
                ids.append(sid)
            for sid, dist, f in fooled.get(norm, []):
                robust &= ~broken_within(dist, f, eps)
                ids.append(sid)
            points.append(WorstCasePoint(norm=norm, eps=float(eps), robust=robust,
                                         correct=correct, attacks=ids,
                                         minimum_norm_only=not by_eps,
                                         requested=eps in requested))
    return points


def group_scenarios(scenarios, norm_of_minimum_norm) -> tuple[dict, dict]:
    """Split report scenarios (``ScenarioResult``) into the inputs of ``worst_case_points``:
    budgeted evasion and ensemble scenarios by (norm, eps), minimum-norm ones by the norm their
    distances are in (``norm_of_minimum_norm(scenario)``)."""
    from advkit.threats import LpBall

    budgeted: dict = defaultdict(lambda: defaultdict(list))
    minimum_norm: dict = defaultdict(list)
    for s in scenarios:
        if s.kind not in ("evasion", "ensemble") or "robust" not in s.per_sample:
            continue
        eps = s.metrics.get("eps")
        if eps is not None:
            norm = LpBall(norm=s.params.get("norm", "Linf"), eps=0).label
            budgeted[norm][float(eps)].append((s.id, s.per_sample["robust"]))
        elif s.per_sample.get("minimum_norm") and "distance" in s.per_sample:
            minimum_norm[norm_of_minimum_norm(s)].append(
                (s.id, s.per_sample["distance"], s.per_sample["adv_pred"]))
    return {k: dict(v) for k, v in budgeted.items()}, dict(minimum_norm)


__all__ = ["WorstCasePoint", "worst_case_points", "group_scenarios", "broken_within"]
