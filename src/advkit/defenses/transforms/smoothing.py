"""Spatial smoothing: a k x k median filter per channel.

Xu, Evans & Qi (2018), "Feature Squeezing: Detecting Adversarial Examples in Deep Neural
Networks", NDSS, use local median smoothing as one of their squeezers (2x2 on MNIST, 2x2 or 3x3 on
colour images). Borders are handled by reflection; for an even ``kernel`` the window reaches one
pixel further down/right than up/left and the lower of the two middle values is taken. The median
is piecewise the identity on one input, so autograd gives its exact (sparse) gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from advkit.defenses.transforms.base import InputTransform
from advkit.errors import InputContractError
from advkit.params import check_params, param
from advkit.registry import register
from advkit.threat_tags import MITIGATES_EVASION


def median_filter(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """k x k median filter of a batch of images (N, C, H, W) with reflected borders."""
    if x.dim() != 4:
        raise InputContractError(
            f"median smoothing needs images (N, C, H, W), got {tuple(x.shape)}")
    n, c, h, w = x.shape
    before, after = (kernel - 1) // 2, kernel // 2
    mode = "reflect" if min(h, w) > max(before, after) else "replicate"
    padded = F.pad(x, (before, after, before, after), mode=mode)
    patches = padded.unfold(2, kernel, 1).unfold(3, kernel, 1)  # (N, C, H, W, k, k)
    return patches.reshape(n, c, h, w, kernel * kernel).median(dim=-1).values


@register("median-smoothing", family="defense", threat=MITIGATES_EVASION)
@dataclass(frozen=True, kw_only=True)
class MedianSmoothing(InputTransform):
    """Median filter of size ``kernel`` x ``kernel`` (Xu, Evans & Qi 2018)."""

    kernel: int = param(3, int, lo=1, hi=15, doc="side of the median filter")
    gradient: ClassVar[str] = "exact"
    randomized: ClassVar[bool] = False

    def __post_init__(self):
        check_params(self)

    def apply(self, x, bounds=(0.0, 1.0), generator=None):
        return median_filter(x, self.kernel)
