"""Additive Gaussian noise on the input, clipped to the bounds (a randomized transform).

A common randomization defense (e.g. Zhang & Liang 2019, "Defending against Whitebox Adversarial
Attacks via Randomized Discretization", and the noise layer of Liu, Cheng, Zhang & Hsieh 2018,
"Towards Robust Neural Networks via Random Self-ensemble", ECCV). Its Jacobian is the identity
except where clipping saturates, so adaptive attacks pass gradients straight through (BPDA) and
average them over draws (EOT; Athalye, Carlini & Wagner 2018).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from advkit.defenses.transforms.base import InputTransform
from advkit.params import check_params, param
from advkit.registry import register
from advkit.threat_tags import MITIGATES_EVASION


@register("gaussian-noise", family="defense", threat=MITIGATES_EVASION)
@dataclass(frozen=True, kw_only=True)
class GaussianNoise(InputTransform):
    """Gaussian input noise of std ``sigma`` (in units of the input range), clipped to bounds."""

    sigma: float = param(0.3, float, lo=0, doc="std of the noise, in units of the input range")
    clip: bool = param(True, bool, doc="clip the noisy input to the bounds")
    gradient: ClassVar[str] = "bpda"
    randomized: ClassVar[bool] = True

    def __post_init__(self):
        check_params(self)

    def apply(self, x, bounds=(0.0, 1.0), generator=None):
        lo, hi = bounds
        dev = generator.device if generator is not None else x.device
        z = torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype).to(x.device)
        out = x + self.sigma * (hi - lo) * z
        return out.clamp(lo, hi) if self.clip else out
