"""Feature squeezing by bit-depth reduction.

Xu, Evans & Qi (2018), "Feature Squeezing: Detecting Adversarial Examples in Deep Neural
Networks", NDSS: quantise each input value to ``bits`` bits, x -> round(x * (2^b - 1)) / (2^b - 1)
on the unit range. Rounding has a zero gradient almost everywhere, so adaptive attacks use BPDA
with the identity (Athalye, Carlini & Wagner 2018).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from advkit.defenses.transforms.base import InputTransform, from_unit, to_unit
from advkit.params import check_params, param
from advkit.registry import register
from advkit.threat_tags import MITIGATES_EVASION


@register("bit-depth", family="defense", threat=MITIGATES_EVASION)
@dataclass(frozen=True, kw_only=True)
class BitDepth(InputTransform):
    """Bit-depth reduction to ``bits`` bits per value (Xu, Evans & Qi 2018)."""

    bits: int = param(1, int, lo=1, hi=16, doc="bits per value")
    gradient: ClassVar[str] = "bpda"
    randomized: ClassVar[bool] = False

    def __post_init__(self):
        check_params(self)

    def apply(self, x, bounds=(0.0, 1.0), generator=None):
        levels = 2**self.bits - 1
        u = to_unit(x, bounds).clamp(0, 1)
        return from_unit(torch.round(u * levels) / levels, bounds)
