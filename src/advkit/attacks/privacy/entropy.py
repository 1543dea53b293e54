"""Modified-entropy membership inference.

Song & Mittal (2021), "Systematic Evaluation of Privacy Risks of Machine Learning Models", USENIX
Security. The modified entropy of a prediction ``F(x)`` with true label ``y``

    Mentr(F(x), y) = -(1 - F_y) log F_y - sum_{i != y} F_i log(1 - F_i)

is low when the model is confidently right (members) and high when it is confidently wrong, unlike
plain entropy, which cannot tell the two apart. The score is ``-Mentr`` (higher = more likely a
member), thresholded by the metrics in ``advkit.evaluation.privacy`` (the paper also learns one
threshold per class on shadow models; a global threshold is used here).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from advkit.attacks.privacy.common import ProbabilityScorer
from advkit.params import check_params, param

_TINY = 1e-30


@dataclass(frozen=True, kw_only=True)
class ModifiedEntropy(ProbabilityScorer):
    """Song & Mittal (2021) modified entropy; score = -Mentr, higher = more likely a member."""

    floor: float = param(1e-30, float, lo=0, lo_open=True, hi=1e-3,
                         doc="probabilities are clamped to [floor, 1 - floor] before logs")

    def __post_init__(self):
        check_params(self)

    def _score(self, p, y):
        onehot = torch.zeros_like(p).scatter_(1, y[:, None], 1.0).bool()
        pc = p.clamp(self.floor, 1.0)
        qc = (1.0 - p).clamp(self.floor, 1.0)  # 1 - F_i
        # true class: -(1 - F_y) log F_y ; others: -F_i log(1 - F_i)
        term = torch.where(onehot, -qc * pc.log(), -pc * qc.log())
        return -term.sum(1)
