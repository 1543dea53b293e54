"""Scores of model-inversion reconstructions: do they show their class?

Fredrikson et al. (2015) judged MI-Face reconstructions by people picking the victim from a
line-up; an audit needs a number a machine computes, so two stand-ins, each against its chance
level:

- **held-out classifier accuracy**: a multinomial logistic regression (L2, fitted by L-BFGS) on a
  split the audited model never trained on (the test split), then asked to classify each
  reconstruction; chance is 1/K. Its accuracy on the training split is reported beside it, so a
  weak evaluator is visible.
- **similarity to the class mean**: cosine similarity between a reconstruction and the mean of its
  class in the private (training) data, both centred on the overall training mean, against its
  mean similarity to the other classes' means; and the share of reconstructions whose nearest
  class mean (Euclidean) is their own class (chance 1/K).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from advkit.evaluation.metrics import Proportion, proportion, wilson_interval


@dataclass(frozen=True)
class HeldOutClassifier:
    """Softmax regression ``W x + b`` on flattened inputs."""

    weight: torch.Tensor
    bias: torch.Tensor

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1).double() @ self.weight.T + self.bias).argmax(1)


def fit_held_out(x: torch.Tensor, y: torch.Tensor, n_classes: int, *, l2: float = 1e-3,
                 max_iter: int = 200) -> HeldOutClassifier:
    """Multinomial logistic regression with an L2 penalty ``l2 * ||W||^2 / 2`` (mean loss)."""
    xf = x.flatten(1).double()
    w = torch.zeros(n_classes, xf.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xf @ w.T + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return HeldOutClassifier(w.detach(), b.detach())


@dataclass(frozen=True)
class InversionScores:
    held_out_accuracy: Proportion
    held_out_on_train: Proportion  # the evaluator's own accuracy on data it did not fit
    nearest_mean_accuracy: Proportion
    similarity_own: torch.Tensor  # (N,) cosine to the own class mean (centred)
    similarity_other: torch.Tensor  # (N,) mean cosine to the other classes' means
    held_out_pred: torch.Tensor
    chance: float

    def to_dict(self) -> dict:
        return {
            "held_out_accuracy": self.held_out_accuracy.as_dict(),
            "held_out_on_train": self.held_out_on_train.as_dict(),
            "nearest_mean_accuracy": self.nearest_mean_accuracy.as_dict(),
            "similarity_own": self.similarity_own.tolist(),
            "similarity_other": self.similarity_other.tolist(),
            "held_out_pred": self.held_out_pred.tolist(), "chance": self.chance,
        }


def class_means(x: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(K, d) mean of each class's flattened inputs (a class without points: the overall mean)."""
    xf = x.flatten(1).double()
    out = xf.mean(0).expand(n_classes, -1).clone()
    for c in range(n_classes):
        sel = y == c
        if sel.any():
            out[c] = xf[sel].mean(0)
    return out


def score_reconstructions(x_rec: torch.Tensor, labels: torch.Tensor, *, x_private, y_private,
                          x_held_out, y_held_out, n_classes: int) -> InversionScores:
    """Score reconstructions ``x_rec`` of the classes ``labels``: the held-out classifier fitted
    on ``(x_held_out, y_held_out)`` and the class means of ``(x_private, y_private)``."""
    clf = fit_held_out(x_held_out, y_held_out, n_classes)
    pred = clf.predict(x_rec)
    means = class_means(x_private, y_private, n_classes)
    centre = x_private.flatten(1).double().mean(0)
    r = x_rec.flatten(1).double() - centre
    m = means - centre
    cos = torch.nn.functional.cosine_similarity(r[:, None, :], m[None, :, :], dim=-1)  # (N, K)
    own = cos.gather(1, labels[:, None]).squeeze(1)
    other = (cos.sum(1) - own) / max(n_classes - 1, 1)
    nearest = torch.cdist(x_rec.flatten(1).double(), means).argmin(1)
    return InversionScores(
        held_out_accuracy=proportion(pred == labels),
        held_out_on_train=proportion(clf.predict(x_private) == y_private),
        nearest_mean_accuracy=proportion(nearest == labels),
        similarity_own=own, similarity_other=other, held_out_pred=pred, chance=1.0 / n_classes)


def paired_difference_interval(both: int, only_first: int, only_second: int, neither: int
                               ) -> tuple[float, float]:
    """95 % interval for ``p1 - p2`` of two proportions measured on the same records: Newcombe
    (1998), "Improved confidence intervals for the difference between binomial proportions based
    on paired data", Statistics in Medicine 17, method 10 (Wilson score intervals of each
    proportion combined with the phi correlation of the 2x2 table, no continuity correction)."""
    a, b, c, d = both, only_first, only_second, neither
    n = a + b + c + d
    if n == 0:
        return float("nan"), float("nan")
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson_interval(a + b, n)
    l2, u2 = wilson_interval(a + c, n)
    denom = (a + b) * (c + d) * (a + c) * (b + d)
    phi = (a * d - b * c) / math.sqrt(denom) if denom > 0 else 0.0
    dl = (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2
    du = (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2
    theta = p1 - p2
    return max(-1.0, theta - math.sqrt(max(dl, 0.0))), min(1.0, theta + math.sqrt(max(du, 0.0)))


def attribute_metrics(guess: torch.Tensor, baseline: torch.Tensor, truth: torch.Tensor) -> dict:
    """Accuracy of attribute guesses and of the marginal baseline on the same records, each with
    its Wilson interval, and the advantage (attack minus baseline accuracy) with its paired 95 %
    interval (:func:`paired_difference_interval`)."""
    hit, base_hit = (guess == truth), (baseline == truth)
    n = int(hit.numel())
    cells = [int((hit & base_hit).sum()), int((hit & ~base_hit).sum()),
             int((~hit & base_hit).sum()), int((~hit & ~base_hit).sum())]
    adv = (cells[1] - cells[2]) / n if n else float("nan")
    return {"accuracy": proportion(hit).as_dict(), "baseline_accuracy": proportion(base_hit).as_dict(),
            "advantage": adv, "advantage_ci": list(paired_difference_interval(*cells)),
            "table": cells, "n": n}
