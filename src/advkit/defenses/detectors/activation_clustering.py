"""Activation clustering: find backdoor poison in a training set from the model's activations.

Chen, Carvalho, Baracaldo, Ludwig, Edwards, Lee, Molloy & Srivastava (2019), "Detecting Backdoor
Attacks on Deep Neural Networks by Activation Clustering", SafeAI@AAAI (arXiv:1811.03728, 2018).
Poisoned samples of a class reach their label through the trigger rather than the class's own
features, so in the last hidden layer they form a cluster apart from the clean samples. Per class:
take the last hidden layer's activations, reduce them to 10 dimensions (ICA in the paper; PCA
optional), split them with 2-means, and decide with one of the paper's three rules
(``criterion``):

- ``"size"``: the smaller cluster is poison when its relative size is at most ``size_threshold``
  (the paper's 0.35);
- ``"silhouette"``: the smaller cluster is poison when the 2-means silhouette score is above
  ``silhouette_threshold`` (two well separated clusters);
- ``"reclassification"`` (default): exclusionary reclassification (see ``ac_reclassify``): each
  of the two clusters is left out, a model is trained without it, and the cluster is poison when
  the new model classifies its points as their label less often than as the most frequent other
  class (``l / p`` below ``reclass_threshold``, the paper's T).

Why the size rule fails on an all-to-one attack of 10 % of a 10-class training set (measured on
BadNets LeNet/MNIST, seed 0): the poison is then about half of the target class (2,000 poisoned
beside 1,935 clean zeros), 2-means puts it in a cluster of relative size 0.40 > 0.35, so the
target class is not flagged, while the natural sub-styles of clean classes (7s with and without a
bar: relative sizes 0.17-0.35) are: precision 0 and recall 0. Exclusionary reclassification does
not depend on the share. When the poison is about half of a class, leaving out the CLEAN half
leaves a class made of poison only, so the clean half is rejected too; then both clusters of the
class fail the test, and the one flagged is the one whose points the new model sends to other
classes with the higher mean confidence (poisoned points are genuine members of their source
classes; clean points of the class resemble no class the new model knows). This tie-break is
advkit's addition to the paper, stated in ``per_class_``.

Reduction: ICA as in the paper (default) or PCA. For 2-means ICA is the same as whitened PCA
(k-means does not see the rotation). Measured with exclusionary reclassification on BadNets
LeNet/MNIST (seeds 0-2, 1/5/10 % poison, ``benchmarks/backdoor_detectors.py``): ICA met precision
and recall >= 0.9 on 7 of the 9 models; on one at 10 % 2-means put the poison with 1,105 clean
zeros and nothing was rejected (recall 0), on one at 5 % a clean cluster of 9s was rejected
(precision 0.43). PCA fixed those two (P 1.00 / R 0.99 and P 0.97 / R 0.95) but at 1 % flagged
nothing on all three seeds (unwhitened, the small poison cluster does not split off).

Mitigation: retrain without the flagged samples (``advkit.attacks.poisoning.train.retrain_without``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from advkit.errors import InputContractError, InvalidParameterError
from advkit.params import check_params, param
from advkit.registry import register
from advkit.threat_tags import MITIGATES_BACKDOOR


def _final_linear(model: nn.Module) -> str:
    last = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            last = name
    if last is None:
        raise InvalidParameterError(
            "layer", None,
            "a layer name: the model has no nn.Linear to take the last hidden layer from",
        )
    return last


def layer_activations(
    model: nn.Module, x: torch.Tensor, *, layer: str | None = None, batch_size: int = 512
) -> torch.Tensor:
    """Activations (N, d) of ``model`` on ``x``, on ``x``'s device.

    ``layer=None``: the input of the model's last ``nn.Linear`` (the last hidden layer); a name
    from ``model.named_modules()``: that module's output, flattened. The model runs in eval mode
    and is put back in the mode it was in.
    """
    from advkit.targets.torch import module_device

    modules = dict(model.named_modules())
    name = _final_linear(model) if layer is None else layer
    if name not in modules:
        known = ", ".join(n for n in modules if n)
        raise InvalidParameterError("layer", layer, f"a module name of the model ({known})")
    grabbed: list[torch.Tensor] = []

    def hook(_m, inputs, output):
        t = inputs[0] if layer is None else output
        grabbed.append(t.detach().flatten(1).to(x.device))

    handle = modules[name].register_forward_hook(hook)
    dev, was = module_device(model), model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, x.shape[0], batch_size):
                model(x[i : i + batch_size].to(dev))
    finally:
        handle.remove()
        model.train(was)
    return torch.cat(grabbed)


def check_fit_inputs(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if y.dim() != 1 or y.shape[0] != x.shape[0] or torch.is_floating_point(y):
        raise InputContractError(
            f"y must hold one integer label per sample of x: x {tuple(x.shape)}, y {tuple(y.shape)}"
        )
    return x, y.to(torch.int64)


@register("activation_clustering", family="defense", threat=MITIGATES_BACKDOOR)
@dataclass(frozen=True, kw_only=True)
class ActivationClustering:
    """Activation clustering (Chen 2018): per class, reduce, 2-means, flag the poisoned cluster.

    Learned attributes after ``fit``: ``poisoned_mask_`` (bool (N,)), ``clusters_`` (int64 (N,):
    1 for the smaller 2-means cluster of its class, 0 for the larger, -1 unclustered),
    ``flagged_classes_``, ``per_class_`` (per class: n, cluster sizes, relative size of the
    smaller cluster, silhouette score, whether it was flagged) and, after ``fit``,
    ``fit_seconds_`` (wall time, activations included).
    """

    n_components: int = param(10, int, lo=1, doc="dimensions kept by the reduction")
    reduction: str = param("ica", str, choices=("ica", "pca"),
                           doc="the paper's ICA (default) or PCA; see the module docstring")
    criterion: str = param("reclassification", str,
                           choices=("reclassification", "size", "silhouette"),
                           doc="decision rule (Chen 2018): exclusionary reclassification, relative "
                               "size or silhouette score")
    size_threshold: float = param(0.35, float, lo=0, hi=0.5, lo_open=True,
                                  doc="flag a class whose smaller cluster is at most this share")
    silhouette_threshold: float = param(0.25, float, lo=-1, hi=1,
                                        doc="data- and reduction-dependent: calibrate on clean "
                                            "data")
    layer: str | None = param(None, str, doc="module whose activations are clustered; None: "
                                            "the last hidden layer")
    batch_size: int = param(512, int, lo=1)
    reclass_threshold: float = param(0.3, float, lo=0, lo_open=True,
                                     doc="T: a left-out cluster is poison when l / p < T")
    reclass_per_class: int = param(250, int, lo=1,
                                   doc="points per class the reclassifier is trained on")
    reclass_epochs: int = param(3, int, lo=1, doc="epochs of the reclassifier's training")
    reclass_lr: float = param(3e-3, float, lo=0, lo_open=True)
    max_rounds: int = param(3, int, lo=1,
                            doc="reclassification: re-cluster what is left of a class after a "
                                "cluster was rejected, at most this many rounds in all")

    def __post_init__(self):
        check_params(self)

    def _reduce(self, a: np.ndarray, seed: int) -> np.ndarray:
        """PCA to the (at most ``n_components``) directions of non-negligible variance, then
        FastICA on those when ``reduction="ica"`` (PCA first keeps ICA's whitening well posed when
        dead ReLU units make the activations rank-deficient)."""
        import warnings

        from sklearn.decomposition import PCA, FastICA

        k = min(self.n_components, a.shape[1], a.shape[0] - 1)
        pca = PCA(n_components=k, random_state=seed).fit(a)
        ev = pca.explained_variance_
        k = max(1, int((ev > ev[0] * 1e-9).sum()))
        z = pca.transform(a)[:, :k]
        if self.reduction == "pca" or k < 2:
            return z
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")  # FastICA's convergence warnings are not actionable
            s = FastICA(n_components=k, random_state=seed, max_iter=400,
                        whiten="unit-variance").fit_transform(z)
        return s if np.isfinite(s).all() else z

    def fit_activations(self, acts: torch.Tensor, y, *, rng: np.random.Generator | None = None,
                        reclassify=None):
        """Fit on precomputed activations (N, d) and labels (N,); returns self.

        ``reclassify`` (criterion ``"reclassification"`` only): a function from the indices of a
        left-out cluster to class probabilities (len, K) from a model trained without it; default
        a logistic head on ``acts`` (``ac_reclassify.logistic_reclassifier``: only meaningful for
        features not learned from the poison; ``fit`` retrains the model instead)."""
        acts, y = check_fit_inputs(acts, y)
        if acts.dim() != 2:
            raise InputContractError(f"activations must be (N, d), got {tuple(acts.shape)}")
        rng = rng if rng is not None else np.random.default_rng()
        a_all = acts.detach().cpu().double().numpy()
        y_np = y.cpu().numpy()
        if self.criterion == "reclassification" and reclassify is None:
            from advkit.defenses.detectors.ac_reclassify import logistic_reclassifier

            reclassify = logistic_reclassifier(a_all, y_np, per_class=self.reclass_per_class,
                                               rng=np.random.default_rng(rng.integers(2**31)))
        mask = np.zeros(len(y_np), dtype=bool)
        clusters = np.full(len(y_np), -1, dtype=np.int64)  # 1: the smaller cluster of its class
        per_class: dict[int, dict[str, Any]] = {}
        for c in np.unique(y_np):
            idx = np.flatnonzero(y_np == c)
            seed = int(rng.integers(2**31 - 1))
            if len(idx) < 4:
                per_class[int(c)] = dict(n=len(idx), skipped="fewer than 4 samples", flagged=False)
                continue
            a = a_all[idx]
            a = a - a.mean(0)
            if not np.any(a.std(0) > 0):
                per_class[int(c)] = dict(n=len(idx), skipped="constant activations", flagged=False)
                continue
            labels, stats = self._split(a, seed)
            sizes, small = np.bincount(labels, minlength=2), stats["small"]
            clusters[idx] = np.where(labels == small, 1, 0)
            if self.criterion == "reclassification":
                bad = self._reclassify(idx, labels, int(c), reclassify, stats, mask)
                rounds, left = [dict(stats)], idx
                while bad is not None:
                    mask[left[labels == bad]] = True
                    left = left[labels != bad]
                    if len(rounds) >= self.max_rounds or len(left) < 4:
                        break
                    a = a_all[left] - a_all[left].mean(0)
                    if not np.any(a.std(0) > 0):
                        break
                    labels, st = self._split(a, int(rng.integers(2**31 - 1)))
                    bad = self._reclassify(left, labels, int(c), reclassify, st, mask)
                    rounds.append(st)
                stats["rounds"] = rounds
                stats["flagged"] = bool(mask[idx].any())
            else:
                rel, sil = stats["relative_size"], stats["silhouette"]
                if self.criterion == "size":
                    bad = small if rel < self.size_threshold else None
                else:
                    bad = small if sil > self.silhouette_threshold and sizes.min() > 0 else None
                if bad is not None:
                    mask[idx[labels == bad]] = True
                stats["flagged"] = bad is not None
            stats["n_flagged"] = int(mask[idx].sum())
            per_class[int(c)] = stats
        object.__setattr__(self, "poisoned_mask_", torch.as_tensor(mask, device=y.device))
        object.__setattr__(self, "clusters_", torch.as_tensor(clusters, device=y.device))
        object.__setattr__(self, "per_class_", per_class)
        flagged = [c for c, s in per_class.items() if s["flagged"]]
        object.__setattr__(self, "flagged_classes_", flagged)
        return self

    def _split(self, a: np.ndarray, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
        """2-means of the reduced, centred activations ``a``: (labels, sizes/relative size of the
        smaller cluster/silhouette score)."""
        from sklearn.cluster import KMeans
        from sklearn.metrics import silhouette_score

        z = self._reduce(a, seed)
        km = KMeans(n_clusters=2, n_init=10, random_state=seed).fit(z)
        sizes = np.bincount(km.labels_, minlength=2)
        small = int(np.argmin(sizes))
        sil = float(silhouette_score(z, km.labels_, sample_size=min(len(a), 3000),
                                     random_state=seed)) if sizes.min() > 0 else 0.0
        return km.labels_, dict(n=len(a), sizes=sizes.tolist(), small=small,
                                relative_size=float(sizes[small] / len(a)), silhouette=sil)

    def _reclassify(self, idx, labels, c: int, reclassify, stats: dict, mask) -> int | None:
        """Exclusionary reclassification of both clusters of class ``c`` (points flagged in
        ``mask`` so far stay out of the new models' training): the cluster (0 or 1) judged
        poison, or None; the per-cluster figures go into ``stats``."""
        from advkit.defenses.detectors.ac_reclassify import reclassification_stats

        dropped = np.flatnonzero(mask)
        res = [reclassification_stats(reclassify(idx[labels == k], dropped), c)
               if (labels == k).any() else None for k in (0, 1)]
        stats["reclassification"] = [
            None if r is None else {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                                    for k, v in r.items()} for r in res]
        bad = [k for k in (0, 1) if res[k] is not None and res[k]["ratio"] < self.reclass_threshold]
        if len(bad) == 2:  # poison about half the class: see the module docstring
            stats["tie_break"] = "both clusters rejected: the one reclassified more confidently"
            return max(bad, key=lambda k: res[k]["confidence"])
        return bad[0] if bad else None

    def fit(self, model: nn.Module, x, y, *, rng: np.random.Generator | None = None):
        """Fit on the training set ``(x, y)`` seen through ``model``; returns self.

        With ``criterion="reclassification"`` each left-out cluster is judged by a fresh copy of
        ``model``'s architecture trained without it (``ac_reclassify.retrain_reclassifier``)."""
        x, y = check_fit_inputs(x, y)
        rng = rng if rng is not None else np.random.default_rng()
        t0 = time.perf_counter()
        acts = layer_activations(model, x, layer=self.layer, batch_size=self.batch_size)
        reclassify = None
        if self.criterion == "reclassification":
            from advkit.defenses.detectors.ac_reclassify import retrain_reclassifier

            reclassify = retrain_reclassifier(
                model, x, y, per_class=self.reclass_per_class, epochs=self.reclass_epochs,
                lr=self.reclass_lr, batch_size=32,
                rng=np.random.default_rng(rng.integers(2**31)))
        self.fit_activations(acts, y, rng=rng, reclassify=reclassify)
        object.__setattr__(self, "fit_seconds_", time.perf_counter() - t0)
        return self

    def score(self, poisoned) -> tuple:
        """(precision, recall) of ``poisoned_mask_`` against a ``PoisonedData``'s truth."""
        if not hasattr(self, "poisoned_mask_"):
            raise InvalidParameterError("detector", "unfitted", "a fitted detector: call fit first")
        return poisoned.detection_scores(self.poisoned_mask_)
