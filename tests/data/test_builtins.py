"""digits and breast_cancer: shapes, bounds, labels, a fixed stratified split, sklearn as oracle."""

import sys

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_digits

from advkit.data import Dataset, DatasetInfo, available, load, stratified_split
from advkit.data.datasets import SPLIT_SEED
from advkit.data.tabular import TEST_FRACTION
from advkit.errors import InputContractError


def rows(x: torch.Tensor, y: torch.Tensor) -> list[bytes]:
    flat = x.reshape(len(x), -1).numpy().astype(np.float32)
    return sorted(r.tobytes() + bytes([int(c)]) for r, c in zip(flat, y.numpy(), strict=True))


def check_common(ds: Dataset, n_classes: int):
    assert isinstance(ds.info, DatasetInfo)
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert tuple(x.shape[1:]) == ds.info.shape and len(x) == len(y)
        lo, hi = ds.info.bounds
        assert x.min() >= lo and x.max() <= hi
        assert y.min() >= 0 and y.max() < n_classes
    assert ds.info.n_classes == n_classes == len(ds.info.class_names)
    # every class in both parts
    assert set(ds.y_train.tolist()) == set(ds.y_test.tolist()) == set(range(n_classes))


def check_stratified(y_all: np.ndarray, ds: Dataset):
    n = len(y_all)
    assert len(ds.y_train) + len(ds.y_test) == n
    for c in np.unique(y_all):
        n_c = int((y_all == c).sum())
        expected = min(int(np.floor(n_c * TEST_FRACTION + 0.5)), n_c - 1)
        assert int((ds.y_test == int(c)).sum()) == expected


def test_digits_matches_sklearn_and_is_a_stratified_partition():
    ds = load("digits")
    check_common(ds, 10)
    assert ds.info.shape == (1, 8, 8) and ds.info.kind == "image" and ds.info.bounds == (0, 1)
    bunch = load_digits()
    x = torch.from_numpy((bunch.data / 16.0).astype(np.float32))
    y = torch.from_numpy(bunch.target.astype(np.int64))
    both_x = torch.cat([ds.x_train, ds.x_test])
    both_y = torch.cat([ds.y_train, ds.y_test])
    assert rows(both_x, both_y) == rows(x, y)  # the split is a partition of the whole dataset
    check_stratified(bunch.target, ds)
    assert ds.info.class_names == tuple(str(i) for i in range(10))


def test_breast_cancer_matches_sklearn_scaled_with_train_statistics():
    ds = load("breast_cancer")
    check_common(ds, 2)
    bunch = load_breast_cancer()
    assert ds.info.kind == "tabular" and ds.info.shape == (30,)
    assert ds.info.feature_names == tuple(bunch.feature_names)
    assert ds.info.feature_types == ("continuous",) * 30
    assert ds.info.class_names == tuple(bunch.target_names)
    check_stratified(bunch.target, ds)
    # oracle: min-max statistics from the training rows only, test clipped into [0, 1]
    tr, te = stratified_split(bunch.target, test_fraction=TEST_FRACTION, seed=SPLIT_SEED)
    lo, hi = bunch.data[tr].min(0), bunch.data[tr].max(0)
    np.testing.assert_allclose(ds.x_train.numpy(), (bunch.data[tr] - lo) / (hi - lo), atol=1e-6)
    want_test = np.clip((bunch.data[te] - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(ds.x_test.numpy(), want_test, atol=1e-6)
    np.testing.assert_array_equal(ds.y_test.numpy(), bunch.target[te])
    assert np.allclose(ds.x_train.min(0).values, 0) and np.allclose(ds.x_train.max(0).values, 1)


@pytest.mark.parametrize("name", ["digits", "breast_cancer"])
def test_builtin_split_is_fixed(name):
    a, b, c = load(name), load(name), load(name, rng_seed=123)
    assert a.sha256() == b.sha256() == c.sha256()  # rng_seed does not move a built-in split
    assert torch.equal(a.x_test, c.x_test) and torch.equal(a.y_train, c.y_train)


def test_fast_readers_equal_sklearn_loaders(monkeypatch):
    """The loaders read sklearn's bundled files directly; forcing the fallback (sklearn's own
    loaders) must give the identical dataset."""
    fast_digits, fast_cancer = load("digits"), load("breast_cancer")
    from advkit.data import datasets

    monkeypatch.setattr(datasets, "_sklearn_data_file", lambda name: datasets.Path("/nonexistent"))
    assert load("digits").sha256() == fast_digits.sha256()
    slow_cancer = load("breast_cancer")
    assert slow_cancer.sha256() == fast_cancer.sha256()
    assert slow_cancer.info == fast_cancer.info


def test_fast_path_does_not_import_sklearn_datasets(monkeypatch):
    """Importing sklearn costs seconds; the built-in loaders must not need it."""
    reference = load("breast_cancer").sha256(), load("digits").sha256()
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # any import of it now fails
    assert (load("breast_cancer").sha256(), load("digits").sha256()) == reference


def test_names_are_normalized():
    assert load("Breast-Cancer").sha256() == load("breast_cancer").sha256()


def test_available_lists_every_builtin():
    avail = available()
    assert set(avail) == {"digits", "breast_cancer", "mnist", "fashion_mnist", "adult", "german_credit"}
    assert avail["digits"] and avail["breast_cancer"]
    assert all(isinstance(v, bool) for v in avail.values())


def test_stratified_split_properties():
    y = np.repeat(np.arange(4), [10, 7, 3, 1])
    tr, te = stratified_split(y, test_fraction=0.25, seed=5)
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(len(y)))
    for c, n_c in enumerate([10, 7, 3, 1]):
        assert int((y[te] == c).sum()) == min(int(np.floor(n_c * 0.25 + 0.5)), n_c - 1)
    tr2, te2 = stratified_split(y, test_fraction=0.25, seed=5)
    assert np.array_equal(tr, tr2) and np.array_equal(te, te2)
    splits = {tuple(stratified_split(y, test_fraction=0.25, seed=s)[1]) for s in range(5)}
    assert len(splits) > 1  # the seed matters
    with pytest.raises(InputContractError, match="too few"):
        stratified_split(np.array([0, 1]), seed=0)
