"""Feature-squeezing detector of adversarial examples.

Xu, Evans & Qi (2018), "Feature Squeezing: Detecting Adversarial Examples in Deep Neural
Networks", NDSS. The score of an input is the largest L1 distance between the model's softmax
prediction on the input and on each squeezed version of it (bit-depth reduction, median smoothing);
the threshold is the (1 - fpr) quantile of the scores of clean inputs, so about ``fpr`` of clean
inputs are flagged. Scikit-learn style: ``fit(target, x_clean)`` returns the detector with the
learned ``threshold_`` and ``clean_scores_``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from advkit.defenses.transforms.smoothing import MedianSmoothing
from advkit.defenses.transforms.squeeze import BitDepth
from advkit.errors import AdvkitError, InvalidParameterError
from advkit.params import check_params, param
from advkit.registry import register
from advkit.targets.base import Target
from advkit.threat_tags import MITIGATES_EVASION


def _default_squeezers() -> tuple:
    return (BitDepth(bits=1), MedianSmoothing(kernel=2))


@register("feature-squeezing-detector", family="defense", threat=MITIGATES_EVASION)
@dataclass(kw_only=True, eq=False)
class FeatureSqueezingDetector:
    """Feature-squeezing detector (Xu 2018): max L1 distance of predictions, squeezed vs not."""

    squeezers: tuple = param(default_factory=_default_squeezers, kind="transforms",
                             doc="input transforms; default: 1-bit depth and a 2x2 median")
    fpr: float = param(0.05, float, lo=0, hi=1, lo_open=True, hi_open=True,
                       doc="share of clean inputs flagged (sets the threshold)")

    def __post_init__(self):
        check_params(self)
        self.squeezers = tuple(self.squeezers)

    def score(self, target: Target, x) -> torch.Tensor:
        """Per-sample max over squeezers of ||softmax(x) - softmax(squeeze(x))||_1."""
        target.require({"probabilities"}, "the feature-squeezing detector", None)
        x = target.check_inputs(x).detach()
        with torch.no_grad():
            p = target.probabilities(x, check=False)
            out = torch.zeros(x.shape[0], dtype=p.dtype, device=p.device)
            for s in self.squeezers:
                q = target.probabilities(s.apply(x, target.contract.bounds, None), check=False)
                out = torch.maximum(out, (p - q).abs().sum(1))
        return out

    def fit(self, target: Target, x_clean) -> FeatureSqueezingDetector:
        """Set ``threshold_`` to the (1 - fpr) quantile of the scores of clean inputs (rounded up
        to an observed score: at most ``fpr`` of ``x_clean`` scores above it)."""
        scores = self.score(target, x_clean)
        if scores.numel() < 2:
            raise InvalidParameterError("x_clean", scores.numel(), "at least 2 clean inputs")
        self.clean_scores_ = scores
        # the next order statistic up, so that at most fpr of the fitting set is flagged
        self.threshold_ = float(torch.quantile(scores.double(), 1.0 - self.fpr,
                                               interpolation="higher"))
        return self

    def predict(self, target: Target, x) -> torch.Tensor:
        """True where an input is flagged as adversarial (score above ``threshold_``)."""
        if not hasattr(self, "threshold_"):
            raise AdvkitError("the detector is not fitted; call fit(target, x_clean) first")
        return self.score(target, x) > self.threshold_
