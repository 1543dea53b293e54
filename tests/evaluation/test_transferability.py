"""The transferability matrix (Papernot, McDaniel & Goodfellow 2016) across model families."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advkit.attacks.evasion.substitute import SubstituteTraining
from advkit.attacks.evasion.transfer import TransferAttack
from advkit.errors import InputContractError, InvalidParameterError
from advkit.evaluation.transferability import (
    FAMILIES,
    fit_family,
    transferability_matrix,
)
from advkit.targets.base import InputContract

FAST = SubstituteTraining(rounds=2, epochs=10)


def _split(x, y, n_train, n_test):
    p = np.random.default_rng(0).permutation(len(x))
    x, y = x[p].astype(np.float32), y[p]
    return x[:n_train], y[:n_train], x[n_train:n_train + n_test], y[n_train:n_train + n_test]


@pytest.fixture(scope="module")
def cancer():
    from sklearn.datasets import load_breast_cancer
    from sklearn.preprocessing import MinMaxScaler

    x, y = load_breast_cancer(return_X_y=True)
    xtr, ytr, xte, yte = _split(x, y, 400, 120)
    sc = MinMaxScaler().fit(xtr)
    return sc.transform(xtr), ytr, np.clip(sc.transform(xte), 0, 1), yte


@pytest.fixture(scope="module")
def cancer_matrix(cancer):
    return transferability_matrix(*cancer, families=("nn", "logreg", "tree"), eps=0.15,
                                  steps=10, n_seed=20, substitute=FAST, seed=3)


def test_matrix_shape_labels_and_query_accounting(cancer_matrix, cancer):
    m = cancer_matrix
    assert m.families == ("nn", "logreg", "tree")
    assert m.values().shape == (3, 3)
    assert m.source_labels == ("neural network", "logistic regression",
                               "decision tree (via substitute)")
    assert m.victim_labels == ("neural network", "logistic regression", "decision tree")
    assert set(m.substitute_queries) == {"tree"} and m.substitute_queries["tree"] == 20 * 2**2
    n = len(cancer[3])
    # each victim: its clean labels once, then the adversarial labels of each source's examples
    assert m.victim_queries == dict.fromkeys(m.families, n + 3 * n)
    vals = m.values()
    assert np.all((vals >= 0) & (vals <= 1))
    for row in m.rates:
        for c in row:
            assert 0 < c.n <= n and c.lo <= c.value <= c.hi
    d = m.as_dict()
    assert d["norm"] == "inf" and len(d["rates"]) == 3 and d["rates"][0][0]["n"] > 0
    assert "decision tree (via substitute)" in m.to_text()


def test_diagonal_is_white_box_success_on_the_same_model(cancer_matrix, cancer):
    xtr, ytr, xte, yte = cancer
    contract = InputContract(shape=(30,), n_classes=2)
    xt, yt = torch.from_numpy(xte.astype(np.float32)), torch.from_numpy(yte).long()
    for i, fam in enumerate(("nn", "logreg")):  # the matrix seeds source i with seed + i
        model = fit_family(fam, xtr, ytr, contract, seed=3)
        res = TransferAttack(eps=0.15, steps=10).craft(
            model, xt, yt, generator=torch.Generator().manual_seed(3 + i))
        wb, cell = res.success_rate(), cancer_matrix.rates[i][i]
        assert (cell.k, cell.n) == (wb.k, wb.n)
        assert wb.value > 0.5  # white-box at eps 0.15 breaks most points


def test_matrix_on_digits_with_substitute_sources():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    xtr, ytr, xte, yte = _split(x / 16.0, y, 600, 80)
    m = transferability_matrix(xtr, ytr, xte, yte, families=["logreg", "knn"], eps=0.2,
                               steps=5, n_seed=30, substitute=FAST)
    assert m.values().shape == (2, 2)
    assert m.source_labels[1] == "k-NN (via substitute)"
    assert m.clean_accuracy["logreg"] > 0.85 and m.clean_accuracy["knn"] > 0.85
    assert m.rates[0][0].value > 0.5  # white-box on logistic regression at eps 0.2


def test_all_families_are_known():
    assert FAMILIES == ("nn", "logreg", "linear_svm", "tree", "knn", "ensemble")


@pytest.mark.parametrize("kw, err", [
    ({"families": ["nn", "forest"]}, InvalidParameterError),
    ({"families": []}, InvalidParameterError),
    ({"families": "nn"}, InvalidParameterError),
    ({"families": ["nn", "nn"]}, InvalidParameterError),
    ({"eps": -1.0}, InvalidParameterError),
    ({"attack": "square"}, InvalidParameterError),
    ({"n_seed": 1}, InvalidParameterError),
    ({"n_seed": 10_000}, InvalidParameterError),
    ({"seed": -1}, InvalidParameterError),
    ({"substitute": "fast"}, InvalidParameterError),
])
def test_bad_params_raise_typed_errors(cancer, kw, err):
    xtr, ytr, xte, yte = cancer
    with pytest.raises(err):
        transferability_matrix(xtr[:50], ytr[:50], xte[:5], yte[:5], **kw)


def test_bad_data_raises_typed_errors(cancer):
    xtr, ytr, xte, yte = cancer
    with pytest.raises(InputContractError, match="same number of rows"):
        transferability_matrix(xtr, ytr[:-1], xte, yte)
    with pytest.raises(InputContractError):  # outside [0, 1]
        transferability_matrix(xtr, ytr, xte + 3, yte, families=["logreg"])


def test_matrix_heat_map_renders(cancer_matrix):
    from advkit.evaluation.transferability import matrix_heatmap_png

    assert matrix_heatmap_png(cancer_matrix).startswith(b"\x89PNG\r\n\x1a\n")
