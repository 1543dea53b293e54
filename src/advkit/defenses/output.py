"""Output hardening: answer less than the model knows (``target.with_output(Rounded(decimals=2))``).

Rounding probabilities, returning only the top-k classes, or labels only are the prediction-API
countermeasures studied against model extraction and score-based attacks by Tramèr, Zhang, Juels,
Reiter & Ristenpart (2016), "Stealing Machine Learning Models via Prediction APIs", USENIX
Security, and against membership inference by Shokri, Stronati, Song & Shmatikov (2017),
"Membership Inference Attacks Against Machine Learning Models", IEEE S&P. They remove gradients
and fine-grained scores, not the decision: label-only attacks (e.g. HopSkipJump) still apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from advkit.params import check_params, param
from advkit.registry import register
from advkit.threat_tags import MITIGATES_EXTRACTION


@register("output-rounding", family="defense", threat=MITIGATES_EXTRACTION)
@dataclass(frozen=True, kw_only=True)
class Rounded:
    """Probabilities rounded to ``decimals`` decimal places (Tramèr et al. 2016)."""

    decimals: int = param(2, int, lo=0, hi=12)
    probabilities: ClassVar[bool] = True

    def __post_init__(self):
        check_params(self)

    def harden(self, p: torch.Tensor) -> torch.Tensor:
        return torch.round(p, decimals=self.decimals)


@register("output-topk", family="defense", threat=MITIGATES_EXTRACTION)
@dataclass(frozen=True, kw_only=True)
class TopK:
    """Only the ``k`` largest probabilities are returned; the others read 0 (not renormalised)."""

    k: int = param(1, int, lo=1, doc="probabilities kept")
    probabilities: ClassVar[bool] = True

    def __post_init__(self):
        check_params(self)

    def harden(self, p: torch.Tensor) -> torch.Tensor:
        k = min(self.k, p.shape[1])
        top = p.topk(k, dim=1)
        return torch.zeros_like(p).scatter(1, top.indices, top.values)


@register("labels-only", family="defense", threat=MITIGATES_EXTRACTION)
@dataclass(frozen=True, kw_only=True)
class LabelsOnly:
    """Only the predicted label is returned (as a one-hot row)."""

    probabilities: ClassVar[bool] = False

    def harden(self, p: torch.Tensor) -> torch.Tensor:
        return F.one_hot(p.argmax(1), p.shape[1]).to(p.dtype)
