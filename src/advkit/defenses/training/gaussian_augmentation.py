"""Gaussian data augmentation: train on ``x + N(0, sigma^2 I)``.

The base classifier of randomized smoothing is trained with the noise it is smoothed with (Cohen,
Rosenfeld & Kolter 2019, "Certified Adversarial Robustness via Randomized Smoothing", ICML, §4;
Lecuyer, Atlidakas, Geambasu, Hsu & Jana 2019, "Certified Robustness to Adversarial Examples
with Differential Privacy", IEEE S&P): without it the smoothed classifier abstains on most
inputs at useful noise levels. The noisy inputs are not clipped to the data's bounds, as in the
paper. As a training defense of the audit (``defenses: [{name: gaussian-augmentation}]``) the
trained model is attacked like any other, and a ``randomized-smoothing`` entry certifies it when
it names this entry as its ``base``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from advkit.params import check_params, param
from advkit.registry import register
from advkit.threat_tags import MITIGATES_EVASION


@register("gaussian-augmentation", family="defense", threat=MITIGATES_EVASION)
@dataclass(frozen=True, kw_only=True)
class GaussianAugmentation:
    """Train on inputs with Gaussian noise added (Cohen et al. 2019's base classifier)."""

    sigma: float = param(0.25, float, lo=0, lo_open=True,
                         doc="standard deviation of the noise added to every training input")

    def __post_init__(self):
        check_params(self)

    def batch_hook(self, generator: torch.Generator | None = None):
        """The ``batch_hook`` of :func:`advkit.models.train.train` that adds the noise."""
        from advkit.defenses.certify.smoothing import gaussian_augmentation_hook

        return gaussian_augmentation_hook(self.sigma, generator)
