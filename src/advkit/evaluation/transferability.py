"""The transferability matrix across model families.

Papernot, McDaniel & Goodfellow (2016), "Transferability in Machine Learning: from Phenomena to
Black-Box Attacks using Adversarial Samples" (arXiv:1605.07277), their Figure 3: for every source
model family (rows) and victim family (columns), the share of the source's adversarial examples
that the victim misclassifies. Following the paper, a cell counts only the test points that both
the source and the victim classify correctly; each rate carries a 95 % Wilson interval.

Families (``FAMILIES``): ``nn`` (a torch MLP), ``logreg`` (logistic regression), ``linear_svm``
(LinearSVC), ``tree`` (decision tree), ``knn`` (k-nearest neighbours) and ``ensemble`` (soft vote
of logistic regression, decision tree and k-NN). The first three are differentiable and are
attacked white-box (their row's diagonal cell is the white-box success rate on the model itself).
The tree, k-NN and the ensemble have no gradients: their examples are crafted on a substitute
trained from their labels with Jacobian-based augmentation (Papernot et al. 2017,
:mod:`advkit.attacks.evasion.substitute`), so their rows are labelled "(via substitute)" and
their diagonal is itself a transfer (substitute → model). The victims see labels only; every
victim query is counted (``TransferabilityMatrix.victim_queries``; substitute training queries in
``substitute_queries``).

Inputs are flat feature vectors in [0, 1] (tabular data such as breast_cancer scaled by min-max,
or images flattened, e.g. digits / 16), as the scikit-learn families need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from advkit.attacks.evasion.substitute import SubstituteTraining
from advkit.attacks.evasion.transfer import TransferAttack
from advkit.errors import InputContractError, InvalidParameterError, check_range, check_seed
from advkit.evaluation.metrics import Proportion
from advkit.targets.base import InputContract, Target
from advkit.targets.sklearn import SklearnTarget
from advkit.targets.torch import TorchTarget

FAMILIES = ("nn", "logreg", "linear_svm", "tree", "knn", "ensemble")
FAMILY_NAMES = {"nn": "neural network", "logreg": "logistic regression",
                "linear_svm": "linear SVM", "tree": "decision tree", "knn": "k-NN",
                "ensemble": "ensemble"}
DIFFERENTIABLE = ("nn", "logreg", "linear_svm")
AUDITED = "audited model"  # the victim column of ``transferability_matrix(audited=...)``


@dataclass
class TransferabilityMatrix:
    """``rates[i][j]``: share of ``sources[i]``'s adversarial examples that fool ``victims[j]``
    (among points both classify correctly), with Wilson intervals."""

    families: tuple[str, ...]
    source_labels: tuple[str, ...]
    victim_labels: tuple[str, ...]
    rates: list[list[Proportion]]
    eps: float
    norm: float
    attack: str
    clean_accuracy: dict[str, float]
    substitute_queries: dict[str, int] = field(default_factory=dict)
    victim_queries: dict[str, int] = field(default_factory=dict)

    def values(self) -> np.ndarray:
        return np.array([[c.value for c in row] for row in self.rates])

    def as_dict(self) -> dict:
        return {"families": list(self.families), "source_labels": list(self.source_labels),
                "victim_labels": list(self.victim_labels), "eps": self.eps,
                "norm": "inf" if math.isinf(self.norm) else self.norm, "attack": self.attack,
                "rates": [[c.as_dict() for c in row] for row in self.rates],
                "clean_accuracy": dict(self.clean_accuracy),
                "substitute_queries": dict(self.substitute_queries),
                "victim_queries": dict(self.victim_queries)}

    def to_text(self) -> str:
        """A plain-text table (rows: sources, columns: victims; rates in %)."""
        w = max(len(s) for s in self.source_labels) + 2
        head = " " * w + "".join(f"{v[:12]:>14}" for v in self.victim_labels)
        rows = [f"{s:<{w}}" + "".join(f"{100 * c.value:>13.1f}%" for c in row)
                for s, row in zip(self.source_labels, self.rates, strict=True)]
        return "\n".join([head, *rows])


def check_families(families) -> tuple[str, ...]:
    if isinstance(families, str) or not isinstance(families, list | tuple) or not families:
        raise InvalidParameterError("families", families,
                                    f"a non-empty list of families from {list(FAMILIES)}")
    for f in families:
        if f not in FAMILIES:
            raise InvalidParameterError("families", f, f"one of {list(FAMILIES)}")
    if len(set(families)) != len(families):
        raise InvalidParameterError("families", list(families), "distinct family names")
    return tuple(families)


def fit_family(family: str, x: np.ndarray, y: np.ndarray, contract: InputContract, *,
               seed: int = 0, epochs: int = 60) -> Target:
    """Fit a model of ``family`` on ``(x, y)`` (flat features) and return it as a target."""
    from sklearn.ensemble import VotingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import LinearSVC
    from sklearn.tree import DecisionTreeClassifier

    check_families([family])
    if family == "nn":
        from advkit.models.train import train
        from advkit.models.zoo import build

        g = torch.Generator().manual_seed(seed)
        model = build("mlp", input_shape=contract.shape, n_classes=contract.n_classes,
                      generator=g, hidden=[64])
        train(model, torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y).long(),
              epochs=epochs, lr=1e-2, generator=g, progress=False)
        return TorchTarget(contract=contract, model=model.eval())
    make = {
        "logreg": lambda: LogisticRegression(max_iter=2000),
        "linear_svm": lambda: LinearSVC(C=1.0, max_iter=5000),
        "tree": lambda: DecisionTreeClassifier(max_depth=8, random_state=seed),
        "knn": lambda: KNeighborsClassifier(n_neighbors=5),
    }
    if family == "ensemble":
        est = VotingClassifier([(k, make[k]()) for k in ("logreg", "tree", "knn")], voting="soft")
    else:
        est = make[family]()
    est.fit(x, y)
    return SklearnTarget(contract=contract, estimator=est)


def transferability_matrix(x_train, y_train, x_test, y_test, *, families=FAMILIES,
                           eps: float = 0.1, attack: str = "pgd", steps: int = 20,
                           n_seed: int = 50, substitute: SubstituteTraining | None = None,
                           seed: int = 0, audited: Target | None = None,
                           audited_clean_pred: torch.Tensor | None = None
                           ) -> TransferabilityMatrix:
    """Fit one model per family on the training data, craft adversarial examples of the test
    points on each source (white-box, or on a substitute for non-differentiable families, trained
    from ``n_seed`` unlabelled training points) and score them on every victim.

    ``audited``: one more victim, the last column "audited model" (a model the families were not
    fitted from, e.g. the one an audit is about): every source's examples are reshaped to its input
    shape and scored on it, labels only (its labels of the test points, when known, in
    ``audited_clean_pred`` save N queries)."""
    fams = check_families(families)
    check_seed("seed", seed)
    check_range("n_seed", n_seed, lo=2, kind=int)
    if substitute is not None and not isinstance(substitute, SubstituteTraining):
        raise InvalidParameterError("substitute", type(substitute).__name__,
                                    "a SubstituteTraining or None")
    crafter = TransferAttack(attack=attack, eps=eps, steps=steps)
    xtr, ytr = _flat(x_train, "x_train"), np.asarray(y_train)
    xte, yte = _flat(x_test, "x_test"), np.asarray(y_test)
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise InputContractError("x and y of the training and test data must have the same "
                                 "number of rows")
    if len(ytr) == 0 or len(yte) == 0:
        raise InputContractError("need at least one training and one test point")
    if n_seed > len(xtr):
        raise InvalidParameterError("n_seed", n_seed, f"at most the {len(xtr)} training points")
    k = int(max(ytr.max(), yte.max())) + 1
    contract = InputContract(shape=(xtr.shape[1],), n_classes=k)
    models = {f: fit_family(f, xtr, ytr, contract, seed=seed) for f in fams}
    xt, yt = torch.from_numpy(xte), torch.from_numpy(yte).long()
    clean, victim_q = {}, dict.fromkeys(fams, 0)
    for f, m in models.items():
        q0 = m.queries
        with torch.no_grad():
            clean[f] = m.labels(xt)
        victim_q[f] += m.queries - q0
    if audited is not None:
        if not isinstance(audited, Target):
            raise InputContractError(f"audited must be an advkit Target, got "
                                     f"{type(audited).__name__}")
        if int(np.prod(audited.contract.shape)) != xte.shape[1]:
            raise InputContractError(f"the audited model takes inputs of shape "
                                     f"{tuple(audited.contract.shape)}, the data has "
                                     f"{xte.shape[1]} features a point")
        if audited_clean_pred is None:
            q0 = audited.queries
            with torch.no_grad():
                audited_clean_pred = audited.labels(_shaped(xt, audited))
            victim_q["audited"] = audited.queries - q0
        else:
            victim_q["audited"] = 0
        audited_clean_pred = torch.as_tensor(audited_clean_pred).long().reshape(-1)
        clean["audited"] = audited_clean_pred
    sub_q, rates = {}, []
    spec = substitute or SubstituteTraining()
    for i, src in enumerate(fams):
        g = torch.Generator().manual_seed(seed + i)
        surrogate = models[src]
        if src not in DIFFERENTIABLE:
            sub = spec.fit(models[src], torch.from_numpy(xtr[:n_seed]), generator=g)
            sub_q[src] = sub.queries
            surrogate = sub.target
        crafted = crafter.craft(surrogate, xt, yt, generator=g)
        row = []
        for vic in fams:
            res = crafter.score(models[vic], crafted, within=clean[src] == yt,
                                victim_clean_pred=clean[vic])
            victim_q[vic] += res.victim_queries
            row.append(res.success_rate())
        if audited is not None:
            shaped = replace(crafted, x=_shaped(crafted.x, audited),
                             x_adv=_shaped(crafted.x_adv, audited))
            res = crafter.score(audited, shaped, within=clean[src] == yt,
                                victim_clean_pred=audited_clean_pred)
            victim_q["audited"] += res.victim_queries
            row.append(res.success_rate())
        rates.append(row)
    labels = tuple(FAMILY_NAMES[f] + ("" if f in DIFFERENTIABLE else " (via substitute)")
                   for f in fams)
    return TransferabilityMatrix(
        families=fams, source_labels=labels,
        victim_labels=tuple(FAMILY_NAMES[f] for f in fams) + (
            (AUDITED,) if audited is not None else ()), rates=rates, eps=float(eps),
        norm=crafter.crafter().norm_p, attack=attack,
        clean_accuracy={f: float((c == yt).float().mean()) for f, c in clean.items()},
        substitute_queries=sub_q, victim_queries=victim_q)


def _shaped(x: torch.Tensor, target: Target) -> torch.Tensor:
    return x.reshape(len(x), *target.contract.shape)


def _flat(x, name: str) -> np.ndarray:
    a = np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x,
                   dtype=np.float32)
    if a.ndim < 2:
        raise InputContractError(f"{name} must have one row per point, got shape {a.shape}")
    return np.ascontiguousarray(a.reshape(len(a), -1))


def matrix_heatmap_png(m: TransferabilityMatrix) -> bytes:
    """The matrix as a heat map (rows: sources, columns: victims), PNG bytes for the report."""
    from advkit.report.plots import heatmap_png

    return heatmap_png(m.values(), m.source_labels, m.victim_labels,
                       title=f"transferability, {m.attack} L∞ eps {m.eps:g}",
                       xlabel="victim", ylabel="source (crafted on)")
