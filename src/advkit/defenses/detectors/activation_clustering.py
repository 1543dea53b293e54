"""Activation clustering: find backdoor poison in a training set from the model's activations.

Chen, Carvalho, Baracaldo, Ludwig, Edwards, Lee, Molloy & Srivastava (2019), "Detecting Backdoor
Attacks on Deep Neural Networks by Activation Clustering", SafeAI@AAAI (arXiv:1811.03728, 2018).
Poisoned samples of a class reach their label through the trigger rather than the class's own
features, so in the last hidden layer they form a cluster apart from the clean samples. Per class:
take the last hidden layer's activations, reduce them to 10 dimensions (ICA in the paper; PCA
optional), split them with 2-means, and call the smaller cluster poisoned when its relative size
is below a threshold (the paper's "relative size" criterion, default 0.35) or, with
``criterion="silhouette"``, when the 2-means silhouette score is above a threshold (two well
separated clusters). Mitigation: retrain without the flagged samples
(``advkit.attacks.poisoning.train.retrain_without``).
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
    reduction: str = param("ica", str, choices=("ica", "pca"))
    criterion: str = param("size", str, choices=("size", "silhouette"))
    size_threshold: float = param(0.35, float, lo=0, hi=0.5, lo_open=True,
                                  doc="flag a class whose smaller cluster is at most this share")
    silhouette_threshold: float = param(0.25, float, lo=-1, hi=1,
                                        doc="data- and reduction-dependent: calibrate on clean "
                                            "data")
    layer: str | None = param(None, str, doc="module whose activations are clustered; None: "
                                            "the last hidden layer")
    batch_size: int = param(512, int, lo=1)

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

    def fit_activations(self, acts: torch.Tensor, y, *, rng: np.random.Generator | None = None):
        """Fit on precomputed activations (N, d) and labels (N,); returns self."""
        from sklearn.cluster import KMeans
        from sklearn.metrics import silhouette_score

        acts, y = check_fit_inputs(acts, y)
        if acts.dim() != 2:
            raise InputContractError(f"activations must be (N, d), got {tuple(acts.shape)}")
        rng = rng if rng is not None else np.random.default_rng()
        a_all = acts.detach().cpu().double().numpy()
        y_np = y.cpu().numpy()
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
            z = self._reduce(a, seed)
            km = KMeans(n_clusters=2, n_init=10, random_state=seed).fit(z)
            sizes = np.bincount(km.labels_, minlength=2)
            small = int(np.argmin(sizes))
            rel = float(sizes[small] / len(idx))
            sil = float(silhouette_score(z, km.labels_, sample_size=min(len(idx), 3000),
                                         random_state=seed)) if sizes.min() > 0 else 0.0
            flag = rel < self.size_threshold if self.criterion == "size" else (
                sil > self.silhouette_threshold and sizes.min() > 0)
            clusters[idx] = np.where(km.labels_ == small, 1, 0)
            if flag:
                mask[idx[km.labels_ == small]] = True
            per_class[int(c)] = dict(n=len(idx), sizes=sizes.tolist(), relative_size=rel,
                                     silhouette=sil, flagged=bool(flag))
        object.__setattr__(self, "poisoned_mask_", torch.as_tensor(mask, device=y.device))
        object.__setattr__(self, "clusters_", torch.as_tensor(clusters, device=y.device))
        object.__setattr__(self, "per_class_", per_class)
        flagged = [c for c, s in per_class.items() if s["flagged"]]
        object.__setattr__(self, "flagged_classes_", flagged)
        return self

    def fit(self, model: nn.Module, x, y, *, rng: np.random.Generator | None = None):
        """Fit on the training set ``(x, y)`` seen through ``model``; returns self."""
        x, y = check_fit_inputs(x, y)
        t0 = time.perf_counter()
        acts = layer_activations(model, x, layer=self.layer, batch_size=self.batch_size)
        self.fit_activations(acts, y, rng=rng)
        object.__setattr__(self, "fit_seconds_", time.perf_counter() - t0)
        return self

    def score(self, poisoned) -> tuple:
        """(precision, recall) of ``poisoned_mask_`` against a ``PoisonedData``'s truth."""
        if not hasattr(self, "poisoned_mask_"):
            raise InvalidParameterError("detector", "unfitted", "a fitted detector: call fit first")
        return poisoned.detection_scores(self.poisoned_mask_)
