"""Scikit-learn models whose decision function is affine, as one matrix and one bias for torch.

A linear classifier (anything with ``coef_`` and ``intercept_`` and a linear
``decision_function``: LogisticRegression, LinearSVC, SGDClassifier, RidgeClassifier, Perceptron,
...) scores ``x @ coef_.T + intercept_``. A :class:`~sklearn.pipeline.Pipeline` whose steps before
it are affine maps, ``StandardScaler``, ``MinMaxScaler`` (without ``clip``), ``MaxAbsScaler``,
``RobustScaler``, ``PCA`` / ``IncrementalPCA`` (whitened or not) or ``"passthrough"``, with their
``with_mean`` / ``with_std`` / ``with_centering`` / ``with_scaling`` options honoured, still scores
an affine function of its input. :func:`linear_form` folds the steps into the classifier's weights,
last step first, in float64: ``decision_function(x) == x @ W.T + b``, so the target's logits and
their input gradients are exact and come from autograd. Anything else (a tree, a kernel, a
``FunctionTransformer``, a clipping scaler) has no such form: ``None``.
"""

from __future__ import annotations

import numpy as np

LINEAR = (
    "LogisticRegression",
    "LogisticRegressionCV",
    "LinearSVC",
    "SGDClassifier",
    "RidgeClassifier",
    "RidgeClassifierCV",
    "Perceptron",
    "PassiveAggressiveClassifier",
)
_PCA = ("PCA", "IncrementalPCA")


def is_linear(est) -> bool:
    """A fitted linear classifier (by type name, with ``coef_`` and ``intercept_``)."""
    return type(est).__name__ in LINEAR and hasattr(est, "coef_") and hasattr(est, "intercept_")


def linear_form(est) -> tuple[np.ndarray, np.ndarray] | None:
    """``(W, b)`` (float64, shapes ``(k, d)`` and ``(k,)``) with ``decision_function(x) == x @ W.T
    + b`` for a fitted linear classifier or an affine Pipeline ending in one; None otherwise."""
    steps = [s for _, s in est.steps] if type(est).__name__ == "Pipeline" else [est]
    if not steps or not is_linear(steps[-1]):
        return None
    w = np.atleast_2d(np.asarray(steps[-1].coef_, dtype=np.float64))
    b = np.asarray(steps[-1].intercept_, dtype=np.float64).reshape(-1)
    if b.size == 1 and w.shape[0] > 1:
        b = np.repeat(b, w.shape[0])
    for step in reversed(steps[:-1]):
        folded = _fold(step, w, b)
        if folded is None:
            return None
        w, b = folded
    return w, b


def _fold(step, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Fold the affine ``step`` (``x -> x * s + t`` or a projection) into the scores ``z @ w.T +
    b`` of its output ``z``: the weights and bias of the same scores as a function of its input."""
    if step is None or (isinstance(step, str) and step == "passthrough"):
        return w, b
    name = type(step).__name__
    if name == "StandardScaler":
        scale = _vec(step.scale_) if step.with_std and step.scale_ is not None else None
        center = _vec(step.mean_) if step.with_mean and step.mean_ is not None else None
        return _scale_shift(w, b, center=center, scale=scale)
    if name == "RobustScaler":
        center = _vec(step.center_) if step.with_centering else None
        scale = _vec(step.scale_) if step.with_scaling else None
        return _scale_shift(w, b, center=center, scale=scale)
    if name == "MaxAbsScaler":
        return _scale_shift(w, b, center=None, scale=_vec(step.scale_))
    if name == "MinMaxScaler":
        if getattr(step, "clip", False):  # clipping is not affine
            return None
        s, t = _vec(step.scale_), _vec(step.min_)  # x * s + t
        return w * s, b + w @ t
    if name in _PCA and hasattr(step, "components_"):
        comp = np.asarray(step.components_, dtype=np.float64)  # (n_components, d)
        if step.whiten:  # as sklearn: divide by sqrt(variance), clipped at machine epsilon
            sd = np.sqrt(np.asarray(step.explained_variance_, dtype=np.float64))
            w = w / np.maximum(sd, np.finfo(np.asarray(step.explained_variance_).dtype).eps)
        w_in = w @ comp
        return w_in, b - w_in @ _vec(step.mean_)
    return None


def _vec(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).reshape(-1)


def _scale_shift(w, b, *, center, scale):
    """Fold ``z = (x - center) / scale`` (either part optional) into ``z @ w.T + b``."""
    if scale is not None:
        w = w / scale
    if center is not None:
        b = b - w @ center
    return w, b
