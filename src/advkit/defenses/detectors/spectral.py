"""Spectral signatures: find backdoor poison in a training set by an SVD of the representations.

Tran, Li & Madry (2018), "Spectral Signatures in Backdoor Attacks", NeurIPS. Poisoned samples of a
class leave a trace in the covariance of the learned representations: along the top singular
vector of the centred representations they sit far from the clean samples. Per class: centre the
representations (last hidden layer), take the top right singular vector v, score each sample by its
squared projection ((r - mean) . v)^2 and remove the ``removal_factor * expected_rate`` share of
the class with the highest scores (the paper removes 1.5 epsilon, epsilon an upper bound on the
poisoned share of a class). Mitigation: retrain without the removed samples
(``advkit.attacks.poisoning.train.retrain_without``).

Note: the guarantee needs the poisoned share of the class to be small; an all-to-one attack that
poisons 10 % of a 10-class training set makes about half of the target class poison, where the
score separates the two halves poorly (both sit far from the mean). Set ``expected_rate`` to the
share you expect *within a class*.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from advkit.defenses.detectors.activation_clustering import check_fit_inputs, layer_activations
from advkit.errors import InputContractError, InvalidParameterError
from advkit.params import check_params, param
from advkit.registry import register
from advkit.threat_tags import MITIGATES_BACKDOOR


def spectral_scores(reps: torch.Tensor) -> torch.Tensor:
    """Outlier scores (n,) of one class's representations (n, d): squared projections of the
    centred representations on their top right singular vector."""
    r = reps - reps.mean(0, keepdim=True)
    if r.shape[0] < 2 or not bool((r != 0).any()):
        return torch.zeros(r.shape[0], dtype=r.dtype, device=r.device)
    _, _, vh = torch.linalg.svd(r, full_matrices=False)
    return (r @ vh[0]) ** 2


class ActivationDetector:
    """What the training-set detectors on a layer's activations share (spectral signatures,
    SPECTRE): ``fit`` reads the activations and calls ``fit_activations``; ``score`` rates the
    flags against the ground truth. Subclasses hold ``layer`` and ``batch_size``."""

    def fit(self, model: nn.Module, x, y):
        """Fit on the training set ``(x, y)`` seen through ``model``; returns self."""
        x, y = check_fit_inputs(x, y)
        t0 = time.perf_counter()
        reps = layer_activations(model, x, layer=self.layer, batch_size=self.batch_size)
        self.fit_activations(reps, y)
        object.__setattr__(self, "fit_seconds_", time.perf_counter() - t0)
        return self

    @staticmethod
    def check_representations(reps: torch.Tensor, y) -> tuple[torch.Tensor, torch.Tensor]:
        """``fit_activations``' inputs checked: representations (N, d) and labels (N,)."""
        reps, y = check_fit_inputs(reps, y)
        if reps.dim() != 2:
            raise InputContractError(f"representations must be (N, d), got {tuple(reps.shape)}")
        return reps, y

    def score(self, poisoned) -> tuple:
        """(precision, recall) of ``poisoned_mask_`` against a ``PoisonedData``'s truth."""
        if not hasattr(self, "poisoned_mask_"):
            raise InvalidParameterError("detector", "unfitted", "a fitted detector: call fit first")
        return poisoned.detection_scores(self.poisoned_mask_)


@register("spectral_signatures", family="defense", threat=MITIGATES_BACKDOOR)
@dataclass(frozen=True, kw_only=True)
class SpectralSignatures(ActivationDetector):
    """Spectral signatures (Tran 2018): remove the top 1.5 * expected_rate of each class by score.

    Learned attributes after ``fit``: ``poisoned_mask_`` (bool (N,)), ``scores_`` (float (N,)),
    ``per_class_`` (per class: n, number removed, score threshold, mean scores of the removed and
    kept samples) and, after ``fit``, ``fit_seconds_`` (wall time, activations included).
    """

    expected_rate: float = param(0.1, float, lo=0, hi=1, lo_open=True,
                                 doc="expected share of poisoned samples")
    removal_factor: float = param(1.5, float, lo=0, lo_open=True,
                                  doc="removes removal_factor * expected_rate of each class")
    layer: str | None = param(None, str, doc="module whose activations are scored; None: the "
                                            "last hidden layer")
    batch_size: int = param(512, int, lo=1)

    def __post_init__(self):
        check_params(self)

    def fit_activations(self, reps: torch.Tensor, y):
        """Fit on precomputed representations (N, d) and labels (N,); returns self."""
        reps, y = self.check_representations(reps, y)
        reps = reps.detach().to(torch.float64)
        y = y.to(reps.device)
        scores = torch.zeros(y.shape[0], dtype=torch.float64, device=reps.device)
        mask = torch.zeros(y.shape[0], dtype=torch.bool, device=reps.device)
        share = min(1.0, self.removal_factor * self.expected_rate)
        per_class: dict[int, dict[str, Any]] = {}
        for c in torch.unique(y).tolist():
            idx = torch.nonzero(y == c, as_tuple=True)[0]
            s = spectral_scores(reps[idx])
            scores[idx] = s
            n_remove = min(int(math.floor(share * idx.numel() + 0.5)), idx.numel())
            top = torch.argsort(s, descending=True, stable=True)[:n_remove]
            mask[idx[top]] = True
            kept = torch.ones_like(s, dtype=torch.bool)
            kept[top] = False
            per_class[int(c)] = dict(
                n=int(idx.numel()), removed=n_remove,
                threshold=float(s[top[-1]]) if n_remove else float("inf"),
                mean_score_removed=float(s[top].mean()) if n_remove else float("nan"),
                mean_score_kept=float(s[kept].mean()) if bool(kept.any()) else float("nan"),
            )
        object.__setattr__(self, "scores_", scores)
        object.__setattr__(self, "poisoned_mask_", mask)
        object.__setattr__(self, "per_class_", per_class)
        return self
