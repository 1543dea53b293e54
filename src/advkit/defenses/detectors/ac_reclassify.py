"""Exclusionary reclassification for activation clustering (Chen et al. 2018, arXiv:1811.03728, §4).

The paper's third decision rule: train a new model without the data of a cluster, classify the
cluster's points with it, and count ``l`` (classified as their label) and ``p`` (classified as the
most frequent other class C). A legitimate cluster is still recognised as its label by a model
trained on the rest of its class (``l / p > T``); a poisoned cluster is not: its points are sent
back to their source class C.

Two reclassifiers, each a function ``(exclude, dropped) -> probabilities``: ``exclude``, the
indices of the cluster's points in the training set, are left out of the new model's training
data and classified by it (probabilities (len(exclude), K)); ``dropped``, points already judged
poison, are left out of the training data too.

- :func:`retrain_reclassifier` (used by ``ActivationClustering.fit``): the paper's retraining,
  made cheaper and stated as such: a fresh copy of the model's architecture (weights re-drawn
  from the given generator) trained on a class-balanced subsample of at most ``per_class`` points
  per class of the data without the cluster, for a few epochs. It never sees the excluded points.
- :func:`logistic_reclassifier` (``fit_activations``, which has no inputs): a multinomial logistic
  head on the given features, fit on the data without the cluster. Only meaningful when the
  features were not learned from the poison (a poisoned model's own hidden layer maps triggered
  points into the target class, so this head would call every poison cluster legitimate).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

Reclassifier = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _subsample(y: np.ndarray, exclude: np.ndarray, per_class: int,
               rng: np.random.Generator) -> np.ndarray:
    keep = np.ones(len(y), dtype=bool)
    keep[exclude] = False
    picks = [rng.permutation(np.flatnonzero(keep & (y == c)))[:per_class] for c in np.unique(y)]
    return np.sort(np.concatenate(picks))


def reinitialised(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """A deep copy of ``model`` with every weight and bias re-drawn from U(-1/sqrt(fan_in),
    1/sqrt(fan_in)) (PyTorch's default bound for Linear and Conv layers) using ``generator``;
    BatchNorm layers are reset to their initial state."""
    new = copy.deepcopy(model)
    with torch.no_grad():
        for m in new.modules():
            w = getattr(m, "weight", None)
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_parameters()
            elif isinstance(w, torch.Tensor) and w.dim() >= 2:
                bound = 1 / math.sqrt(w[0].numel())
                w.copy_(torch.rand(w.shape, generator=generator).to(w) * 2 * bound - bound)
                b = getattr(m, "bias", None)
                if isinstance(b, torch.Tensor):
                    b.copy_(torch.rand(b.shape, generator=generator).to(b) * 2 * bound - bound)
    return new


def retrain_reclassifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, per_class: int,
                         epochs: int, lr: float, batch_size: int,
                         rng: np.random.Generator) -> Reclassifier:
    """Reclassify a cluster with a fresh copy of ``model`` trained without it (see the module
    docstring)."""
    from advkit.defenses.detectors.fine_pruning import predict_scores
    from advkit.models.train import train

    y_np = y.cpu().numpy()

    def reclassify(exclude: np.ndarray, dropped: np.ndarray) -> np.ndarray:
        g = torch.Generator().manual_seed(int(rng.integers(2**31 - 1)))
        out_idx = np.concatenate([exclude, dropped])
        keep = torch.as_tensor(_subsample(y_np, out_idx, per_class, rng), device=x.device)
        fresh = reinitialised(model, g)
        train(fresh, x[keep], y[keep], epochs=epochs, lr=lr, batch_size=batch_size, generator=g,
              progress=False)
        out = predict_scores(fresh, x[torch.as_tensor(exclude, device=x.device)])
        return torch.softmax(out.double(), 1).cpu().numpy()

    return reclassify


def logistic_reclassifier(feats: np.ndarray, y: np.ndarray, *, per_class: int,
                          rng: np.random.Generator) -> Reclassifier:
    """Reclassify a cluster with a logistic head on ``feats`` fit without it."""
    from sklearn.linear_model import LogisticRegression

    k = int(y.max()) + 1

    def reclassify(exclude: np.ndarray, dropped: np.ndarray) -> np.ndarray:
        tr = _subsample(y, np.concatenate([exclude, dropped]), per_class, rng)
        clf = LogisticRegression(max_iter=1000).fit(feats[tr], y[tr])
        out = np.zeros((len(exclude), k))
        out[:, clf.classes_] = clf.predict_proba(feats[exclude])
        return out

    return reclassify


def reclassification_stats(probs: np.ndarray, label: int) -> dict:
    """``l`` (points classified as ``label``), ``p`` (as the most frequent other class),
    ``ratio`` = l / p (inf when p = 0), ``source`` (that other class) and ``confidence`` (mean
    top probability of the points classified away from ``label``; nan when none is)."""
    pred = probs.argmax(1)
    counts = np.bincount(pred, minlength=probs.shape[1])
    lab = int(counts[label])
    others = counts.copy()
    others[label] = -1
    src = int(others.argmax())
    p = int(counts[src])
    away = pred != label
    conf = float(probs[away].max(1).mean()) if away.any() else float("nan")
    return dict(l=lab, p=p, ratio=(lab / p) if p else math.inf, source=src, confidence=conf)
