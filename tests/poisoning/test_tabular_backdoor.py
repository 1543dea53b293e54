"""The tabular backdoor on breast_cancer: it works on a scikit-learn model, detectors find it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advkit.attacks.poisoning.tabular import TabularBackdoor
from advkit.attacks.poisoning.train import evaluate_poison, predict, train_poisoned
from advkit.defenses.detectors.activation_clustering import ActivationClustering
from advkit.defenses.detectors.spectral import SpectralSignatures


@pytest.fixture(scope="module")
def cancer():
    from advkit.data import load

    return load("breast_cancer")


@pytest.fixture(scope="module")
def forest(cancer):
    return train_poisoned(cancer, attack=TabularBackdoor(target=0, rate=0.1),
                          model_name="random_forest", seed=0)


def test_backdoor_works_on_a_random_forest_and_not_by_accident(cancer, forest):
    model, p, m = forest
    assert m.attack_success.value >= 0.9
    assert m.clean_accuracy.value >= 0.93
    # a forest trained on the clean data is not fooled by the trigger: the poison made the backdoor
    from sklearn.ensemble import RandomForestClassifier

    clean = RandomForestClassifier(random_state=0)
    clean.fit(cancer.x_train.numpy(), cancer.y_train.numpy())
    _, succ_clean = evaluate_poison(clean, p, cancer.x_test, cancer.y_test)
    assert succ_clean.value <= 0.2
    # the metric is the DESIGN §4 one: triggered test rows of the other class predicted as target
    trig = predict(model, p.apply_trigger(cancer.x_test))
    other = cancer.y_test != 0
    assert m.attack_success.n == int(other.sum())
    assert m.attack_success.k == int((trig[other] == 0).sum())


def test_trigger_features_are_in_range_and_uninformative(cancer, forest):
    _, p, _ = forest
    vals = p.trigger.values
    assert torch.equal(vals, cancer.x_train[:, p.trigger.features].max(0).values)
    assert p.n_poisoned == round(0.1 * p.n)


def test_activation_clustering_on_the_input_features_finds_the_poison(forest):
    _, p, _ = forest
    # the paper's size rule; exclusionary reclassification (the default) is checked below
    ac = ActivationClustering(reduction="ica", criterion="size")
    ac.fit_activations(p.x, p.y, rng=np.random.default_rng(0))
    prec, rec = ac.score(p)
    assert prec.value >= 0.9 and rec.value >= 0.9


def test_reclassification_on_the_input_features_rejects_both_halves_of_the_target(forest):
    # two classes, a logistic reclassifier on the input features: leaving out either cluster of
    # class 0 makes the other one class 0's only data, so both are rejected (l = 0) and only the
    # confidence tie-break decides which is poison; the target class is found either way
    _, p, _ = forest
    ac = ActivationClustering(reduction="ica")
    ac.fit_activations(p.x, p.y, rng=np.random.default_rng(0))
    assert ac.flagged_classes_ == [0]
    first = ac.per_class_[0]["rounds"][0]
    assert all(r["l"] <= 0.15 * (r["l"] + r["p"]) for r in first["reclassification"])
    assert "tie_break" in first
    _, rec = ac.score(p)
    assert rec.value >= 0.9


def test_spectral_signatures_on_the_input_features(forest):
    _, p, _ = forest
    share = p.n_poisoned / int((p.y == 0).sum())
    ss = SpectralSignatures(expected_rate=share).fit_activations(p.x, p.y)
    _, rec = ss.score(p)
    assert rec.value >= 0.9


def test_train_poisoned_rejects_bad_arguments(cancer):
    from advkit.errors import InvalidParameterError

    for kw in (dict(attack="nope"), dict(attack=TabularBackdoor(), model_name="resnet"),
               dict(attack=TabularBackdoor(), model_name="random_forest", seed=-1),
               dict(attack=TabularBackdoor(), model_name="random_forest", n_train=0)):
        with pytest.raises(InvalidParameterError):
            train_poisoned(cancer, **kw)
