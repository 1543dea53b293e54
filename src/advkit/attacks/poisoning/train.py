"""Train a model on poisoned data and measure what the poison did.

``train_poisoned`` is what ``advkit train --poison NAME ...`` calls: it poisons the training split
of a ``Dataset``, trains a zoo model (PyTorch) or a scikit-learn estimator on it, and measures clean
accuracy on the clean test split and the attack's effect on the triggered test split (DESIGN §4).
``retrain_without`` retrains on the poisoned set minus the samples a detector flagged, which is how
the training-set detectors (activation clustering, spectral signatures) mitigate.

Seeds: the poison is drawn with ``numpy.random.default_rng(seed)``, the model's initial weights
and batch order with ``torch.Generator().manual_seed(seed)`` (estimators get ``random_state=seed``).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from advkit.attacks.poisoning.base import PoisonedData, PoisoningAttack
from advkit.errors import AdvkitWarning, InputContractError, InvalidParameterError
from advkit.evaluation.metrics import (
    Proportion,
    backdoor_success_rate,
    clean_accuracy,
    proportion,
)

SKLEARN_MODELS = ("logistic_regression", "random_forest", "gradient_boosting")


@dataclass(frozen=True)
class PoisonMetrics:
    """What a poisoned (or cleaned) model does on the test split.

    ``clean_accuracy``: correct / all clean test points. ``attack_success``: for a backdoor, the
    triggered test points (true class != target) classified as the target / those points (for
    all-to-all: classified as ``label_map[y]`` / all points); for a class-targeted flip, test points
    of the source class classified as the target; None for random label flips.
    """

    clean_accuracy: Proportion
    attack_success: Proportion | None
    n_train: int
    n_poisoned_train: int
    train_seconds: float
    seed: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "clean_accuracy": self.clean_accuracy.as_dict(),
            "attack_success": (None if self.attack_success is None
                               else self.attack_success.as_dict()),
            "n_train": self.n_train, "n_poisoned_train": self.n_poisoned_train,
            "train_seconds": self.train_seconds, "seed": self.seed,
        }


def predict(model, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Predicted labels of a torch module (eval mode, restored) or a fitted estimator."""
    if isinstance(model, torch.nn.Module):
        from advkit.targets.torch import module_device

        dev, was = module_device(model), model.training
        model.eval()
        try:
            with torch.no_grad():
                out = [model(x[i : i + batch_size].to(dev)).argmax(1).to(x.device)
                       for i in range(0, x.shape[0], batch_size)]
        finally:
            model.train(was)
        return torch.cat(out) if out else torch.empty(0, dtype=torch.int64)
    pred = model.predict(x.reshape(x.shape[0], -1).cpu().numpy())
    return torch.as_tensor(np.asarray(pred), dtype=torch.int64, device=x.device)


def evaluate_poison(
    model, poisoned: PoisonedData, x_test, y_test, *, reject=None
) -> tuple[Proportion, Proportion | None]:
    """(clean accuracy, attack success) of ``model`` on a clean test split (DESIGN §4).

    ``reject(x) -> bool (N,)``: an input filter in front of the model (a test-time detector such
    as STRIP); a rejected input gets no label, so it counts as a clean error and as a failed
    attack. It is called on the clean points first, then on the triggered ones."""

    def pred(x):
        out = predict(model, x)
        return out if reject is None else torch.where(reject(x).to(out.device), -1, out)

    clean_pred = pred(x_test)
    acc = clean_accuracy(clean_pred, y_test)
    if poisoned.trigger is not None:
        trig_pred = pred(poisoned.apply_trigger(x_test))
        if poisoned.label_map is None:
            return acc, backdoor_success_rate(trig_pred, y_test, int(poisoned.target))
        want = poisoned.label_map.to(y_test.device)[y_test]
        return acc, proportion(trig_pred == want, within=want >= 0)
    if poisoned.label_map is not None:  # class-targeted flip: source points sent to the target
        want = poisoned.label_map.to(y_test.device)[y_test]
        return acc, proportion(clean_pred == want, within=want >= 0)
    return acc, None


def _check_model_name(model_name: str) -> None:
    from advkit.models.zoo import ZOO_NAMES

    if model_name not in SKLEARN_MODELS and model_name not in ZOO_NAMES:
        raise InvalidParameterError(
            "model_name", model_name, f"a zoo model {ZOO_NAMES} or an estimator {SKLEARN_MODELS}"
        )


def _fit(model_name: str, x, y, info, *, epochs, seed, progress, batch_size, lr):
    if model_name in SKLEARN_MODELS:
        from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
        from sklearn.linear_model import LogisticRegression

        est = {
            "logistic_regression": lambda: LogisticRegression(max_iter=5000, random_state=seed),
            "random_forest": lambda: RandomForestClassifier(n_estimators=100, random_state=seed),
            "gradient_boosting": lambda: GradientBoostingClassifier(random_state=seed),
        }[model_name]()
        return est.fit(x.reshape(x.shape[0], -1).cpu().numpy(), y.cpu().numpy())
    from advkit.models.train import train
    from advkit.models.zoo import build

    _check_model_name(model_name)
    g = torch.Generator().manual_seed(seed)
    model = build(model_name, input_shape=tuple(info.shape), n_classes=info.n_classes, generator=g)
    train(model, x, y, epochs=epochs, batch_size=batch_size, lr=lr, generator=g, progress=progress)
    return model


def train_poisoned(
    dataset, *, attack: PoisoningAttack | str, model_name: str = "lenet", epochs: int = 3,
    seed: int = 0, progress: bool | None = None, batch_size: int = 64, lr: float = 1e-3,
    n_train: int | None = None,
) -> tuple[Any, PoisonedData, PoisonMetrics]:
    """Poison ``dataset``'s training split with ``attack``, train ``model_name`` on it, measure.

    ``attack``: a ``PoisoningAttack`` or a registered poisoning name (built with its defaults).
    ``model_name``: a zoo model (``lenet``, ``cnn-small``, ``mlp``, ...) or one of
    ``SKLEARN_MODELS``. ``n_train``: train on the first ``n_train`` training samples only (the
    split's order is fixed, so this is deterministic). Returns (model, poisoned data, metrics).
    """
    if isinstance(attack, str):
        from advkit import registry

        if attack not in registry.list("poisoning"):
            raise InvalidParameterError("attack", attack, f"one of {registry.list('poisoning')}")
        attack = registry.create(attack)
    if not isinstance(attack, PoisoningAttack):
        raise InvalidParameterError(
            "attack", type(attack).__name__, "a PoisoningAttack or its name"
        )
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise InvalidParameterError("seed", seed, "an int >= 0")
    _check_model_name(model_name)
    bounds = getattr(attack, "bounds", None)
    if bounds is not None and tuple(map(float, bounds)) != tuple(map(float, dataset.info.bounds)):
        warnings.warn(
            f"the attack's bounds {bounds} differ from the data's {dataset.info.bounds}; the "
            "trigger may fall outside the data's range", AdvkitWarning, stacklevel=2,
        )
    x, y = dataset.x_train, dataset.y_train
    if n_train is not None:
        if not 1 <= n_train <= x.shape[0]:
            raise InvalidParameterError("n_train", n_train, f"an int in [1, {x.shape[0]}]")
        x, y = x[:n_train], y[:n_train]
    rng = np.random.default_rng(seed)
    poisoned = attack.poison(x, y, rng=rng, n_classes=dataset.info.n_classes)
    t0 = time.perf_counter()
    model = _fit(model_name, poisoned.x, poisoned.y, dataset.info, epochs=epochs, seed=seed,
                 progress=progress, batch_size=batch_size, lr=lr)
    secs = time.perf_counter() - t0
    acc, succ = evaluate_poison(model, poisoned, dataset.x_test, dataset.y_test)
    return model, poisoned, PoisonMetrics(acc, succ, poisoned.n, poisoned.n_poisoned, secs, seed)


def retrain_without(
    dataset, poisoned: PoisonedData, flagged, *, model_name: str = "lenet", epochs: int = 3,
    seed: int = 0, progress: bool | None = None, batch_size: int = 64, lr: float = 1e-3,
) -> tuple[Any, PoisonMetrics]:
    """Retrain from scratch on the poisoned set minus the ``flagged`` (N,) samples; measure."""
    flagged = torch.as_tensor(flagged).bool()
    if flagged.shape != (poisoned.n,):
        raise InputContractError(
            f"flagged must be a boolean mask of shape ({poisoned.n},), got {tuple(flagged.shape)}"
        )
    keep = ~flagged.to(poisoned.y.device)
    x, y = poisoned.x[keep], poisoned.y[keep]
    t0 = time.perf_counter()
    model = _fit(model_name, x, y, dataset.info, epochs=epochs, seed=seed, progress=progress,
                 batch_size=batch_size, lr=lr)
    secs = time.perf_counter() - t0
    acc, succ = evaluate_poison(model, poisoned, dataset.x_test, dataset.y_test)
    left = int((poisoned.poisoned_mask & keep).sum())
    return model, PoisonMetrics(acc, succ, int(keep.sum()), left, secs, seed)
