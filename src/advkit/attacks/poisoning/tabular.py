"""Tabular backdoor: chosen features set to trigger values.

The feature-space analogue of BadNets (Gu, Dolan-Gavitt & Garg 2017, arXiv:1708.06733) for tables,
as studied for tabular models by Joe, Mehra, Shin & Hamm (2021) "Machine Learning with Electronic
Health Records is vulnerable to Backdoor Trigger Attacks" and Pan, Bhattacharjee & Wang (2023)
"Exploring the Vulnerability of Tabular Models to Backdoor Attacks": a few features of a share of
the training rows are set to fixed trigger values and the rows relabelled to the target class.

Defaults (documented choices): when ``features`` is None, the ``n_features`` features least
correlated (absolute Pearson correlation) with membership of the target class are used, so the
trigger is not natural evidence for the target; ``values="max"`` / ``"min"`` set each trigger
feature to the largest / smallest value it takes in the data being poisoned (the edge of its
observed range, so the trigger stays in-range). Both are resolved in ``poison`` and recorded in
``PoisonedData.trigger``; use ``PoisonedData.apply_trigger`` on test rows (``apply_trigger`` on the
attack itself needs explicit ``features`` and numeric ``values``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from advkit.attacks.poisoning.base import FeatureTrigger, PoisoningAttack
from advkit.errors import InputContractError, InvalidParameterError
from advkit.params import check_params, invalid, param
from advkit.registry import register
from advkit.threat_tags import BACKDOOR_POISONING


@register("tabular_backdoor", family="poisoning", threat=BACKDOOR_POISONING)
@dataclass(frozen=True, kw_only=True)
class TabularBackdoor(PoisoningAttack):
    """Tabular backdoor: set ``features`` to ``values`` on a ``rate`` share, label ``target``."""

    features: tuple[int, ...] | None = param(None, "indices", lo=0,
                                             doc="columns set by the trigger; None: chosen "
                                                 "from the data (n_features of them)")
    n_features: int = param(3, int, lo=1, doc="columns chosen when features is None")
    values: str | tuple[float, ...] = param("max", (str, "numbers"), choices=("max", "min"),
                                            doc="max or min of each column, or one number "
                                                "per feature")
    target: int = param(0, int, lo=0, doc="target class")
    rate: float = param(0.1, float, lo=0, hi=1, lo_open=True,
                        doc="share of the training set poisoned")

    def __post_init__(self):
        check_params(self)
        want = len(self.features) if self.features is not None else self.n_features
        if not isinstance(self.values, str) and len(self.values) != want:
            raise invalid(self, "values", f"{want} finite numbers, one per feature")

    def _resolve(self, x: torch.Tensor, y: torch.Tensor | None) -> FeatureTrigger:
        d = x.shape[1]
        if self.features is not None:
            if max(self.features) >= d:
                raise InvalidParameterError("features", self.features, f"column indices below {d}")
            feats = torch.tensor(self.features, dtype=torch.int64, device=x.device)
        else:
            if self.n_features > d:
                raise InvalidParameterError("n_features", self.n_features, f"at most {d} features")
            ind = (y == self.target).to(x.dtype)
            xc = x - x.mean(0)
            ic = ind - ind.mean()
            denom = xc.norm(dim=0) * ic.norm()
            corr = (xc * ic[:, None]).sum(0) / denom.clamp_min(1e-12)
            # constant features cannot carry a trigger the model can see: rank them last
            corr = torch.where(xc.norm(dim=0) > 0, corr.abs(), torch.full_like(corr, math.inf))
            feats = torch.sort(torch.argsort(corr, stable=True)[: self.n_features]).values
        if isinstance(self.values, str):
            col = x[:, feats]
            vals = col.max(0).values if self.values == "max" else col.min(0).values
        else:
            vals = torch.tensor([float(v) for v in self.values], dtype=x.dtype, device=x.device)
        return FeatureTrigger(features=feats, values=vals)

    def apply_trigger(self, x: torch.Tensor) -> torch.Tensor:
        """Set the trigger features of test rows (needs explicit ``features`` and ``values``)."""
        if self.features is None or isinstance(self.values, str):
            raise InvalidParameterError(
                "features/values", (self.features, self.values),
                "explicit features and numeric values; otherwise use PoisonedData.apply_trigger",
            )
        if x.dim() != 2:
            raise InputContractError(f"expected a table (N, D), got shape {tuple(x.shape)}")
        return self._resolve(x, None).apply(x)

    def _candidates(self, y, n_classes):
        return y != self.target

    def _poison(self, x, y, idx, n_classes, rng):
        if x.dim() != 2:
            raise InputContractError(
                f"the tabular backdoor needs rows (N, D), got {tuple(x.shape)}"
            )
        if self.target >= n_classes:
            raise InvalidParameterError("target", self.target, f"a class in [0, {n_classes - 1}]")
        trigger = self._resolve(x, y)
        xp, yp = x.clone(), y.clone()
        xp[idx] = trigger.apply(x[idx])
        yp[idx] = self.target
        return dict(x=xp, y=yp, trigger=trigger, target=int(self.target))
