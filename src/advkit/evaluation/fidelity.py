"""How well a model was stolen (DESIGN §4, extraction): fidelity, accuracy, queries spent.

- *fidelity*: the share of points on which the stolen model's label agrees with the victim's
  (Tramèr et al. 2016 call 1 - fidelity the extraction error R_test / R_unif), on test points and
  on points uniform in the input bounds;
- *accuracy*: the stolen model's accuracy on labelled test points (and the victim's, beside it);
- *queries*: the victim queries the attack spent (the scoring queries made here are counted by
  the victim's target, if it has one, but are not the attacker's and never hit its budget).

Every proportion carries its n and a 95 % Wilson interval (``advkit.evaluation.metrics``).
``fidelity_curve`` repeats an extraction at several query budgets.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from advkit.attacks.privacy.extraction_equations import QueryOracle, as_oracle
from advkit.errors import InputContractError, InvalidParameterError, check_range
from advkit.evaluation.metrics import Proportion, proportion
from advkit.targets.base import Target


def stolen_labels(stolen, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Labels of a stolen model: an ``nn.Module`` or callable returning scores ``(N, k)`` (argmax)
    or labels ``(N,)``, or an object with ``labels_of``; evaluated without gradients, in batches
    and in the module's parameter dtype."""
    fn = getattr(stolen, "labels_of", None)
    if fn is None and not callable(stolen):
        raise InvalidParameterError("stolen", type(stolen).__name__,
                                    "a model (nn.Module or callable returning scores or labels)")
    out = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size]
            if fn is not None:
                out.append(torch.as_tensor(fn(xb)).long())
                continue
            if isinstance(stolen, nn.Module):
                p = next(stolen.parameters(), None)
                if p is not None:
                    xb = xb.to(p.dtype)
            s = torch.as_tensor(stolen(xb))
            out.append(s.argmax(1) if s.dim() == 2 else s.long())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def _scoring(oracle: QueryOracle):
    v = oracle.victim
    return v.scoring() if isinstance(v, Target) else contextlib.nullcontext()


def victim_labels(victim, x: torch.Tensor, **oracle_kwargs) -> torch.Tensor:
    """The victim's labels for ``x`` (scoring queries: never refused by its budget)."""
    o = as_oracle(victim, **oracle_kwargs)
    before = o.queries
    with _scoring(o):
        lab = o.ask(x).labels
    o.queries = before  # scoring is not the attacker's spend
    return lab


def fidelity(victim, stolen, x: torch.Tensor, **oracle_kwargs) -> Proportion:
    """Share of ``x`` on which ``stolen`` and the victim agree, with its Wilson interval."""
    x = torch.as_tensor(x)
    if x.shape[0] == 0:
        raise InputContractError("no points to measure fidelity on; pass at least one")
    return proportion(victim_labels(victim, x, **oracle_kwargs) == stolen_labels(stolen, x))


def uniform_points(victim, n: int, *, generator: torch.Generator | None = None,
                   dtype: torch.dtype = torch.float32, **oracle_kwargs) -> torch.Tensor:
    """``n`` points uniform in the victim's input bounds (per feature where it declares them)."""
    check_range("n", n, lo=1, kind=int)
    return as_oracle(victim, **oracle_kwargs).uniform(n, generator, dtype)


@dataclass(frozen=True)
class FidelityReport:
    """Fidelity on test and uniform points, the stolen and victim models' test accuracy (None
    without test labels), and the attack's victim ``queries``."""

    test: Proportion
    uniform: Proportion
    accuracy: Proportion | None
    victim_accuracy: Proportion | None
    queries: int

    def to_dict(self) -> dict:
        def d(p):
            return None if p is None else p.as_dict()

        return {"fidelity_test": d(self.test), "fidelity_uniform": d(self.uniform),
                "accuracy": d(self.accuracy), "victim_accuracy": d(self.victim_accuracy),
                "queries": self.queries}

    @classmethod
    def from_dict(cls, data: dict) -> FidelityReport:
        def p(v):
            return None if v is None else Proportion(v["k"], v["n"], v["ci_low"], v["ci_high"],
                                                     v.get("confidence", 0.95))

        return cls(p(data["fidelity_test"]), p(data["fidelity_uniform"]), p(data["accuracy"]),
                   p(data["victim_accuracy"]), int(data["queries"]))


def evaluate_extraction(victim, stolen, x_test, y_test=None, *, queries: int,
                        n_uniform: int = 1000, generator: torch.Generator | None = None,
                        **oracle_kwargs) -> FidelityReport:
    """Fidelity on ``x_test`` and on ``n_uniform`` uniform points, accuracies on ``y_test``."""
    check_range("queries", queries, lo=0, kind=int)
    check_range("n_uniform", n_uniform, lo=1, kind=int)
    x_test = torch.as_tensor(x_test)
    o = as_oracle(victim, **oracle_kwargs)
    v_test = victim_labels(o, x_test)
    s_test = stolen_labels(stolen, x_test)
    u = o.uniform(n_uniform, generator, x_test.dtype if x_test.is_floating_point() else None)
    agree_u = proportion(victim_labels(o, u) == stolen_labels(stolen, u))
    acc = vacc = None
    if y_test is not None:
        y = torch.as_tensor(y_test).long().reshape(-1)
        if y.shape[0] != x_test.shape[0]:
            raise InputContractError(f"got {y.shape[0]} labels for {x_test.shape[0]} test "
                                     "points; they must match")
        acc, vacc = proportion(s_test == y), proportion(v_test == y)
    return FidelityReport(proportion(v_test == s_test), agree_u, acc, vacc, int(queries))


@dataclass(frozen=True)
class CurvePoint:
    """One point of a fidelity-versus-queries curve: the budget asked and the report."""

    budget: int
    report: FidelityReport
    seconds: float

    def to_dict(self) -> dict:
        return {"budget": self.budget, "seconds": self.seconds, **self.report.to_dict()}


def fidelity_curve(steal: Callable[[int], tuple[object, int]], budgets: Sequence[int], victim,
                   x_test, y_test=None, *, n_uniform: int = 1000,
                   generator: torch.Generator | None = None,
                   **oracle_kwargs) -> list[CurvePoint]:
    """Run ``steal(budget) -> (stolen model, queries spent)`` for each budget (increasing) and
    score each result with :func:`evaluate_extraction`; ``seconds`` is the extraction's time."""
    import time

    budgets = list(budgets)
    if not budgets or any(isinstance(b, bool) or not isinstance(b, int) or b < 1
                          for b in budgets):
        raise InvalidParameterError("budgets", budgets, "a non-empty list of positive ints")
    points = []
    for b in budgets:
        t0 = time.perf_counter()
        stolen, spent = steal(b)
        dt = time.perf_counter() - t0
        rep = evaluate_extraction(victim, stolen, x_test, y_test, queries=int(spent),
                                  n_uniform=n_uniform, generator=generator, **oracle_kwargs)
        points.append(CurvePoint(b, rep, dt))
    return points


__all__ = ["CurvePoint", "FidelityReport", "evaluate_extraction", "fidelity", "fidelity_curve",
           "stolen_labels", "uniform_points", "victim_labels"]
