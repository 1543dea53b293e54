"""LOSS / confidence threshold membership inference.

Yeom, Giacomelli, Fredrikson & Jha (2018), "Privacy Risk in Machine Learning: Analyzing the
Connection to Overfitting", IEEE CSF. A point is called a member when the model's loss on it is
below a threshold: training points have lower loss than unseen ones in proportion to overfitting.
The score is ``-loss = log p_y`` (``score="loss"``) or the true-class confidence ``p_y``
(``score="confidence"``); the two rank points identically (same ROC), and the second is what a
confidence-threshold attacker reads off an API. Scores are threshold-free: the metrics in
``advkit.evaluation.privacy`` sweep or fix the threshold (Yeom's own threshold, the expected
training loss, is one point of that sweep).
"""

from __future__ import annotations

from dataclasses import dataclass

from advkit.attacks.privacy.common import ProbabilityScorer, true_class_logprob
from advkit.params import check_params, param


@dataclass(frozen=True, kw_only=True)
class LossThreshold(ProbabilityScorer):
    """Yeom et al. (2018) loss threshold attack; higher score = more likely a member."""

    score: str = param("loss", str, choices=("loss", "confidence"),
                       doc="'loss': -cross-entropy; 'confidence': p of the true class")

    def __post_init__(self):
        check_params(self)

    def _score(self, p, y):
        lp = true_class_logprob(p, y)
        return lp if self.score == "loss" else lp.exp()
