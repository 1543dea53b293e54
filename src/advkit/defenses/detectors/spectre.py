"""SPECTRE: robust-statistics spectral poison detection with quantum-entropy scoring.

Hayase, Kong, Somani & Oh (2021), "SPECTRE: Defending Against Backdoor Attacks Using Robust
Statistics", ICML. Plain spectral signatures (Tran et al. 2018, ``spectral.py``) score samples by
their projection on the top singular vector of the raw covariance, which the clean data's own
variance can dominate. SPECTRE, per class:

1. projects the centred representations on their top ``n_components`` principal directions;
2. estimates the clean mean and covariance ROBUSTLY and whitens the data with them, so clean
   data is isotropic and the poison's direction stands out. The paper uses its own robust
   estimator; here: mean and covariance of the ``1 - expected_rate`` share of points closest to
   them (concentration steps from a median start, ``robust_whiten``; scikit-learn's ``MinCovDet``
   kept a tight planted cluster inside its support in our tests, so it is not used);
3. scores each whitened point ``z`` by quantum entropy (QUE): ``tau = z' Q z / tr(Q)`` with
   ``Q = exp(alpha (M - I) / (||M||_2 - 1))`` and ``M`` the whitened second-moment matrix.
   ``alpha = 0`` gives the squared norm (all directions), large ``alpha`` the top direction only;
   the paper uses ``alpha = 4``;
4. removes the ``removal_factor * expected_rate`` share of the class with the highest scores.

The same caveat as spectral signatures holds: an all-to-one attack of 10 % of a 10-class set makes
about half of the target class poison, beyond what any robust estimator can ignore; set
``expected_rate`` to the share expected *within a class* (at most 0.5).
Mitigation: retrain without the removed samples (``advkit.attacks.poisoning.train.retrain_without``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from advkit.defenses.detectors.spectral import ActivationDetector
from advkit.params import check_params, param
from advkit.registry import register
from advkit.threat_tags import MITIGATES_BACKDOOR


def que_scores(z: np.ndarray, alpha: float) -> np.ndarray:
    """Quantum-entropy outlier scores (n,) of whitened points ``z`` (n, k) (Hayase 2021, §4)."""
    n, k = z.shape
    m = z.T @ z / max(n, 1)
    w, v = np.linalg.eigh(m)
    top = float(w[-1])
    scale = alpha / (top - 1) if top > 1 + 1e-9 else alpha
    e = np.exp(scale * (w - 1) - scale * (top - 1))  # exp(scale (M - I)) / exp(scale (top - 1))
    q = (v * e) @ v.T
    return np.einsum("ij,jk,ik->i", z, q, z) / float(e.sum())


def robust_whiten(r: np.ndarray, support: float, iters: int = 20) -> np.ndarray:
    """``r`` (n, k) whitened with a robust mean and covariance: the mean and covariance of the
    ``support`` share of points closest to them, found by concentration steps (as in FastMCD,
    Rousseeuw & Van Driessen 1999) started from the points closest to the coordinate-wise median
    (distances scaled by each coordinate's MAD), so that the first subset already leaves out
    far-away clusters."""
    n, k = r.shape
    h = max(k + 1, min(n, int(math.ceil(support * n))))
    med = np.median(r, 0)
    mad = np.median(np.abs(r - med), 0) * 1.4826 + 1e-12
    keep = np.argsort((((r - med) / mad) ** 2).sum(1), kind="stable")[:h]
    for _ in range(iters):
        mu = r[keep].mean(0)
        w, v = np.linalg.eigh(np.cov(r[keep], rowvar=False).reshape(k, k))
        w = np.maximum(w, w.max() * 1e-9 + 1e-12)
        z = (r - mu) @ (v / np.sqrt(w))
        new = np.sort(np.argsort((z**2).sum(1), kind="stable")[:h])
        if np.array_equal(new, np.sort(keep)):
            break
        keep = new
    return z


@register("spectre", family="defense", threat=MITIGATES_BACKDOOR)
@dataclass(frozen=True, kw_only=True)
class Spectre(ActivationDetector):
    """SPECTRE (Hayase 2021): robust whitening + quantum-entropy scores; removes the top
    ``removal_factor * expected_rate`` of each class.

    Learned attributes after ``fit``: ``poisoned_mask_`` (bool (N,)), ``scores_`` (float (N,)),
    ``per_class_`` (per class: n, number removed, score threshold, mean scores of the removed and
    kept samples), ``fit_seconds_`` (wall time, activations included, after ``fit``).
    """

    expected_rate: float = param(0.1, float, lo=0, hi=0.5, lo_open=True,
                                 doc="expected share of poisoned samples within a class")
    removal_factor: float = param(1.5, float, lo=0, lo_open=True,
                                  doc="removes removal_factor * expected_rate of each class")
    n_components: int = param(32, int, lo=1, doc="principal directions kept before whitening")
    alpha: float = param(4.0, float, lo=0, doc="QUE's alpha (0: squared norm; large: top "
                                                 "direction)")
    layer: str | None = param(None, str, doc="module whose activations are scored; None: the "
                                            "last hidden layer")
    batch_size: int = param(512, int, lo=1)

    def __post_init__(self):
        check_params(self)

    def fit_activations(self, reps: torch.Tensor, y):
        """Fit on precomputed representations (N, d) and labels (N,); returns self."""
        reps, y = self.check_representations(reps, y)
        r_all = reps.detach().cpu().double().numpy()
        y_np = y.cpu().numpy()
        scores = np.zeros(len(y_np))
        mask = np.zeros(len(y_np), dtype=bool)
        share = min(1.0, self.removal_factor * self.expected_rate)
        per_class: dict[int, dict[str, Any]] = {}
        for c in np.unique(y_np):
            idx = np.flatnonzero(y_np == c)
            r = r_all[idx] - r_all[idx].mean(0)
            s = np.zeros(len(idx))
            if len(idx) > 3 and np.any(r.std(0) > 0):
                u, sv, vt = np.linalg.svd(r, full_matrices=False)
                keep = sv > sv[0] * 1e-6
                k = int(min(self.n_components, keep.sum(), max(1, (len(idx) - 1) // 2)))
                z = robust_whiten(r @ vt[:k].T, max(0.5, 1 - self.expected_rate))
                s = que_scores(z, self.alpha)
            scores[idx] = s
            n_remove = min(int(math.floor(share * len(idx) + 0.5)), len(idx))
            top = np.argsort(-s, kind="stable")[:n_remove]
            mask[idx[top]] = True
            kept = np.ones(len(idx), dtype=bool)
            kept[top] = False
            per_class[int(c)] = dict(
                n=len(idx), removed=n_remove,
                threshold=float(s[top[-1]]) if n_remove else float("inf"),
                mean_score_removed=float(s[top].mean()) if n_remove else float("nan"),
                mean_score_kept=float(s[kept].mean()) if kept.any() else float("nan"))
        object.__setattr__(self, "scores_", torch.as_tensor(scores, device=y.device))
        object.__setattr__(self, "poisoned_mask_", torch.as_tensor(mask, device=y.device))
        object.__setattr__(self, "per_class_", per_class)
        return self
