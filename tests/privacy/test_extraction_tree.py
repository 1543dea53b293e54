"""Decision-tree path finding (Tramèr et al. 2016, §4.2): exactness oracles and failure modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.tree import DecisionTreeClassifier

from advkit.attacks.privacy.extraction_tree import TreePathFinding
from advkit.data import load
from advkit.errors import IncompatibleTargetError, InvalidParameterError
from advkit.evaluation.fidelity import evaluate_extraction
from advkit.targets.sklearn import SklearnTarget

KW = dict(n_classes=2, input_shape=30, bounds=(0, 1))


@pytest.fixture(scope="module")
def cancer():
    return load("breast_cancer")


def _tree(ds, depth):
    return DecisionTreeClassifier(max_depth=depth, random_state=0).fit(ds.x_train.numpy(),
                                                                       ds.y_train.numpy())


def test_depth3_tree_from_probabilities_exact(cancer):
    clf = _tree(cancer, 3)
    # every leaf of this tree has its own class distribution: predict_proba identifies leaves
    assert len(np.unique(clf.tree_.value[clf.tree_.children_left == -1], axis=0)) \
        == clf.get_n_leaves()
    t = SklearnTarget(cancer.contract(), estimator=clf)
    r = TreePathFinding().extract(t, generator=torch.Generator().manual_seed(0))
    assert r.complete and r.duplicate_ids == 0 and r.tree.n_leaves == clf.get_n_leaves()
    assert r.queries == t.queries > 0
    rep = evaluate_extraction(t, r.tree, cancer.x_test, cancer.y_test, queries=r.queries,
                              n_uniform=5000, generator=torch.Generator().manual_seed(1))
    assert rep.test.value == 1.0 and rep.uniform.value == 1.0, rep.to_dict()


def test_depth4_tree_from_leaf_identifiers_exact(cancer):
    clf = _tree(cancer, 4)
    victim = lambda x: (clf.predict(x.numpy()), clf.apply(x.numpy()))  # noqa: E731
    r = TreePathFinding().extract(victim, generator=torch.Generator().manual_seed(0), **KW)
    assert r.complete and r.duplicate_ids == 0 and r.tree.n_leaves == clf.get_n_leaves()
    rep = evaluate_extraction(victim, r.tree, cancer.x_test, cancer.y_test, queries=r.queries,
                              n_uniform=5000, generator=torch.Generator().manual_seed(1), **KW)
    assert rep.test.value == 1.0 and rep.uniform.value == 1.0, rep.to_dict()
    assert 0 < rep.queries < 5000


def test_shared_confidences_are_flagged(cancer):
    # depth 4: several pure leaves answer the same (0, 1); the API does not identify leaves
    clf = _tree(cancer, 4)
    t = SklearnTarget(cancer.contract(), estimator=clf)
    r = TreePathFinding().extract(t, generator=torch.Generator().manual_seed(0))
    assert r.duplicate_ids > 0 and r.tree.n_leaves < clf.get_n_leaves()


def test_labels_only_and_budget_and_parameters(cancer):
    clf = _tree(cancer, 3)
    with pytest.raises(IncompatibleTargetError, match="confidence.*Copycat"):
        TreePathFinding().extract(lambda x: clf.predict(x.numpy()), **KW)
    victim = lambda x: (clf.predict(x.numpy()), clf.apply(x.numpy()))  # noqa: E731
    r = TreePathFinding(max_queries=100).extract(victim, **KW)
    assert not r.complete and r.queries <= 100
    for bad in (dict(eps=0.0), dict(max_queries=0), dict(id_decimals=-1)):
        with pytest.raises(InvalidParameterError):
            TreePathFinding(**bad)
