"""``SklearnTarget``: any scikit-learn classifier behind the Target interface.

Every estimator answers labels; those with ``predict_proba`` answer probabilities. Linear models
(LogisticRegression, LinearSVC, SGDClassifier, RidgeClassifier, Perceptron: anything with ``coef_``
and ``intercept_`` and a linear ``decision_function``), and Pipelines of affine steps (scalers, PCA,
``"passthrough"``) ending in one, are re-expressed in torch (:mod:`advkit.targets.sklearn_torch`),
so their logits and exact input gradients come from autograd with no numpy round trip. Any other
Pipeline or estimator is a labels-and-probabilities target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from advkit.errors import InputContractError, InvalidParameterError
from advkit.targets.base import Capabilities, Target, check_scores
from advkit.targets.sklearn_torch import linear_form


@dataclass(eq=False)
class SklearnTarget(Target):
    """A fitted scikit-learn classifier; exact gradients for linear models and affine Pipelines.

    The estimator's ``classes_`` must be 0..n_classes-1 (advkit's labels are class indices).
    For a binary linear model with decision value z the logits are (0, z), so that
    softmax((0, z)) = (1 - sigmoid(z), sigmoid(z)), exactly LogisticRegression's probabilities.
    """

    estimator: object = None
    _w: torch.Tensor | None = field(default=None, init=False, repr=False)
    _b: torch.Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        super().__post_init__()
        est = self.estimator
        if est is None or not hasattr(est, "predict"):
            raise InvalidParameterError(
                "estimator", type(est).__name__, "a fitted scikit-learn classifier"
            )
        classes = getattr(est, "classes_", None)
        if classes is None:
            raise InputContractError("the estimator is not fitted (no classes_); call fit() first")
        k = self.contract.n_classes
        if len(classes) != k or not np.array_equal(np.asarray(classes), np.arange(k)):
            raise InputContractError(
                f"the estimator's classes_ are {list(classes)[:12]} but the contract declares {k} classes "
                f"0..{k - 1}; fix: fit on labels encoded as 0..n_classes-1"
            )
        n_in, d = getattr(est, "n_features_in_", None), math.prod(self.contract.shape)
        if isinstance(n_in, int | np.integer) and int(n_in) != d:
            raise InputContractError(
                f"the estimator {type(est).__name__} was fitted on {int(n_in)} features but the "
                f"contract's inputs {self.contract.shape} have {d}; fix: audit it with the data it "
                "was trained on (same columns, same encoding)"
            )
        form = linear_form(est)
        if form is not None:
            w = torch.as_tensor(form[0], dtype=torch.float32)
            b = torch.as_tensor(form[1], dtype=torch.float32)
            if w.shape[0] == 1 and k == 2:
                w = torch.cat([torch.zeros_like(w), w])
                b = torch.cat([torch.zeros_like(b), b])
            self._w, self._b = w, b

    @property
    def linear(self) -> bool:
        return self._w is not None

    @property
    def capabilities(self) -> Capabilities:
        if self.linear:
            # probabilities are softmax(logits): exact for LogisticRegression, a monotone score otherwise
            return Capabilities(gradients=True, logits=True, probabilities=True, labels=True)
        return Capabilities(
            gradients=False,
            logits=False,
            probabilities=hasattr(self.estimator, "predict_proba"),
            labels=True,
        )

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.linear:
            flat = x.reshape(x.shape[0], -1)
            w, b = self._w.to(flat.device, flat.dtype), self._b.to(flat.device, flat.dtype)
            return flat @ w.T + b
        xs = x.detach().reshape(x.shape[0], -1).cpu().numpy()
        if hasattr(self.estimator, "predict_proba"):
            out = torch.as_tensor(np.asarray(self.estimator.predict_proba(xs), dtype=np.float32))
        else:
            pred = torch.as_tensor(np.asarray(self.estimator.predict(xs)), dtype=torch.int64)
            out = torch.nn.functional.one_hot(pred, self.contract.n_classes).float()
        check_scores(out, x.shape[0], self.contract.n_classes, f"estimator {self.model_name}")
        return out.to(x.device)

    @property
    def model_name(self) -> str:
        return type(self.estimator).__name__
