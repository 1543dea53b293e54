"""Shadow-model membership inference with one attack model per class.

Shokri, Stronati, Song & Shmatikov (2017), "Membership Inference Attacks Against Machine Learning
Models", IEEE S&P. Shadow models are trained like the target on data of the same distribution,
so their behaviour on their own training data (IN) and on other data (OUT) is known. One binary
attack model per class learns, from the shadow models' prediction vectors on points of that
class, whether the point was IN; the target's answer on a point of class c is then scored by
the attack model of class c (its probability of IN: higher = more likely a member).

Here the shadow models are the reference models of ``advkit.attacks.privacy.shadow`` (each pool
point IN exactly half of them, which gives each class model balanced IN/OUT examples). The
features of one prediction ``p`` with true class ``y``:

- the prediction vector sorted in decreasing order (the class-order-free form of Salem et al.
  2019, "ML-Leaks", NDSS; any number of classes gives one feature layout);
- with ``true_class`` (default), also ``p_y``: Shokri's per-class models see the unsorted vector,
  whose y-th entry says how much of the mass sits on the true class; sorting alone loses whether
  the top answer is right, so a confidently wrong non-member would look like a member;

each as ``log(max(p, 1e-12))`` (the small entries of the vector, where an overfit model's
members and non-members differ, are squeezed against 0 in raw probabilities), standardised.
The attack model is scikit-learn's: ``logistic`` (default: an L2-regularised logistic
regression) or ``mlp``, one hidden layer of ``hidden`` ReLU units trained with Adam (Shokri et
al. use a small neural network), seeded from the generator. On overfit digits MLPs (pools of
200, 400 and 600 digits, as in ``tests/privacy/test_membership_label_shadow.py``) the logistic
model scored AUC 0.697, 0.651 and 0.645, a 16-unit MLP (50 iterations) 0.686 and 0.617 on the
first two, a 64-unit MLP (200 iterations) 0.627 on the third: hence the default. A class with
fewer than ``min_per_class`` IN or OUT examples is scored by one model trained on every class
(noted). At most ``max_per_class`` (shadow model, point) pairs per class train its model, drawn
at random.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from advkit.attacks.privacy.common import check_probs, query
from advkit.errors import InvalidParameterError
from advkit.params import check_params, param

_FLOOR = 1e-12


def features(p: torch.Tensor, y: torch.Tensor, true_class: bool) -> np.ndarray:
    """The attack models' features of probabilities ``p`` (..., K) with labels ``y`` (...)."""
    srt = p.sort(-1, descending=True).values
    if true_class:
        py = p.gather(-1, y[..., None])
        srt = torch.cat([py, srt], -1)
    return srt.clamp_min(_FLOOR).log().reshape(-1, srt.shape[-1]).cpu().numpy()


@dataclass
class ShokriModels:
    """The fitted attack models: ``per_class[c]`` (None: the class uses ``fallback``)."""

    per_class: dict[int, object]
    fallback: object | None
    true_class: bool
    n_classes: int
    notes: list[str] = field(default_factory=list)

    def scores_from_probabilities(self, p, y) -> torch.Tensor:
        """The IN probability of each point ``(p, y)`` from the attack model of its class."""
        p, y = check_probs(p, y)
        if p.shape[1] != self.n_classes:
            raise InvalidParameterError(
                "probabilities", f"{p.shape[1]} classes",
                f"the {self.n_classes} classes the attack models were trained on")
        f = features(p, y, self.true_class)
        out = np.zeros(y.shape[0])
        yn = y.cpu().numpy()
        for c in np.unique(yn):
            rows = yn == c
            model = self.per_class.get(int(c))
            model = self.fallback if model is None else model
            out[rows] = model.predict_proba(f[rows])[:, 1]
        return torch.from_numpy(out)

    def scores(self, target, x, y) -> torch.Tensor:
        """Scores of ``(x, y)`` against ``target`` (an advkit Target or a callable returning
        probabilities)."""
        p, y = query(target, x, y)
        return self.scores_from_probabilities(p, y)


@dataclass(frozen=True, kw_only=True)
class Shokri:
    """Shokri et al. (2017) shadow-model attack, one attack model per class."""

    model: str = param("logistic", str, choices=("logistic", "mlp"), doc="the attack model")
    hidden: int = param(64, int, lo=1, hi=4096, doc="mlp: hidden units")
    max_iter: int = param(200, int, lo=1, hi=100_000, doc="attack model: training iterations")
    true_class: bool = param(True, bool, doc="also the true class's probability as a feature")
    min_per_class: int = param(10, int, lo=1, doc="IN and OUT examples a class model needs")
    max_per_class: int = param(5000, int, lo=10, doc="training pairs per class (drawn at random)")

    def __post_init__(self):
        check_params(self)

    def _new(self, seed: int):
        from sklearn.linear_model import LogisticRegression
        from sklearn.neural_network import MLPClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        if self.model == "logistic":
            clf = LogisticRegression(max_iter=self.max_iter)
        else:
            clf = MLPClassifier(hidden_layer_sizes=(self.hidden,), max_iter=self.max_iter,
                                random_state=seed)
        return make_pipeline(StandardScaler(), clf)

    def _fit_one(self, f: np.ndarray, lab: np.ndarray, seed: int):
        from sklearn.exceptions import ConvergenceWarning

        model = self._new(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter is the user's cap
            return model.fit(f, lab)

    def fit(self, shadow_probs, y, in_mask, *, generator: torch.Generator,
            exclude: int | None = None) -> ShokriModels:
        """Attack models from the shadow models' probabilities ``shadow_probs`` (M, N, K) on
        points with labels ``y`` (N,), ``in_mask`` (M, N) saying which shadow models trained on
        each point; ``exclude``: a shadow model to leave out (the target, in a leave-one-out
        evaluation)."""
        if not isinstance(generator, torch.Generator):
            raise InvalidParameterError("generator", type(generator).__name__,
                                        "a torch.Generator (randomness is explicit)")
        sp = torch.as_tensor(shadow_probs).detach()
        mask = torch.as_tensor(in_mask).detach().bool().cpu()
        if sp.ndim != 3 or mask.shape != sp.shape[:2]:
            raise InvalidParameterError(
                "shadow_probs", f"shapes {tuple(sp.shape)} and mask {tuple(mask.shape)}",
                "probabilities (M, N, K) and an IN mask (M, N)")
        m, n, k = sp.shape
        p, yy = check_probs(sp.reshape(m * n, k), torch.as_tensor(y).repeat(m))
        p, yy = p.view(m, n, k), yy.view(m, n)[0].cpu()
        if exclude is not None:
            keep = [i for i in range(m) if i != exclude]
            p, mask, m = p[keep], mask[keep], m - 1
        if m < 2:
            raise InvalidParameterError("shadow_probs", f"{m} shadow model(s)",
                                        "at least 2 shadow models (IN and OUT of each point)")
        f = features(p, yy.expand(m, n).to(p.device), self.true_class)  # (M * N, F)
        lab = mask.reshape(-1).numpy().astype(np.int64)
        cls = yy.expand(m, n).reshape(-1).numpy()
        rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
        seed = int(rng.integers(2**31 - 1))
        per_class, notes, small = {}, [], []
        for c in range(k):
            rows = np.flatnonzero(cls == c)
            if rows.size > self.max_per_class:
                rows = np.sort(rng.choice(rows, self.max_per_class, replace=False))
            n_in = int(lab[rows].sum())
            if min(n_in, rows.size - n_in) < self.min_per_class:
                small.append(c)
                continue
            per_class[c] = self._fit_one(f[rows], lab[rows], seed + c)
        fallback = None
        if small:
            rows = np.arange(lab.size)
            if rows.size > self.max_per_class:
                rows = np.sort(rng.choice(rows, self.max_per_class, replace=False))
            if min(int(lab[rows].sum()), int((1 - lab[rows]).sum())) < 1:
                raise InvalidParameterError("in_mask", "no IN or no OUT example",
                                            "shadow models IN and OUT of the points")
            fallback = self._fit_one(f[rows], lab[rows], seed + k)
            notes.append(f"shadow: classes {small} have fewer than {self.min_per_class} IN or OUT "
                         "shadow examples and share one attack model trained on every class")
        return ShokriModels(per_class, fallback, self.true_class, k, notes)
