"""Shared fixtures of the black-box attack tests: tree ensembles (no gradients) on scikit-learn's
breast_cancer, features scaled to [0, 1]."""

import numpy as np
import pytest
import torch


def _breast_cancer_split():
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.min(0)) / (x.max(0) - x.min(0))
    perm = np.random.default_rng(0).permutation(len(x))
    return x[perm[:400]], y[perm[:400]], x[perm[400:]], y[perm[400:]]


def _tree_target(kind: str, n_points: int = 16):
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

    from advkit.targets.base import InputContract
    from advkit.targets.sklearn import SklearnTarget

    xtr, ytr, xte, yte = _breast_cancer_split()
    est = (RandomForestClassifier(n_estimators=20, random_state=0) if kind == "rf"
           else GradientBoostingClassifier(n_estimators=50, random_state=0))
    est.fit(xtr, ytr)
    right = est.predict(xte) == yte  # attack points the model gets right
    x = torch.tensor(xte[right][:n_points], dtype=torch.float32)
    y = torch.tensor(yte[right][:n_points])
    contract = InputContract(shape=(30,), n_classes=2, bounds=(0.0, 1.0))
    return SklearnTarget(contract, estimator=est), x, y


@pytest.fixture(scope="session")
def breast_cancer_forest():
    """(SklearnTarget around a 20-tree random forest, 16 held-out points it classifies right)."""
    return _tree_target("rf")


@pytest.fixture(scope="session")
def breast_cancer_boosting():
    """(SklearnTarget around 50-stage gradient boosting, 16 held-out points it classifies right)."""
    return _tree_target("gb")
