"""User .npz / .csv / .parquet files: round trips, encoding, scaling, and bad input."""

import importlib.util

import numpy as np
import pandas as pd
import pytest
import torch

from advkit.data import DataFileNotFoundError, DataFormatError, load
from advkit.errors import (
    AdvkitError,
    AdvkitWarning,
    InputContractError,
    InvalidParameterError,
    MissingDependencyError,
)


def rows(x, y):
    flat = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    return sorted(r.tobytes() + int(c).to_bytes(8, "little") for r, c in zip(flat, y, strict=True))


# ------------------------------------------------------------------------------------------ npz


def test_npz_uint8_images_with_test_set(tmp_path):
    rng = np.random.default_rng(1)
    x, x_test = (rng.integers(0, 256, (n, 5, 6), dtype=np.uint8) for n in (12, 4))
    y, y_test = np.arange(12) % 3, np.array([2, 1, 0, 1])
    np.savez(tmp_path / "imgs.npz", x=x, y=y, x_test=x_test, y_test=y_test)
    ds = load(tmp_path / "imgs.npz")
    assert ds.info.shape == (1, 5, 6) and ds.info.kind == "image" and ds.info.bounds == (0, 1)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    np.testing.assert_allclose(ds.x_train[:, 0].numpy() * 255, x, atol=1e-4)
    np.testing.assert_allclose(ds.x_test[:, 0].numpy() * 255, x_test, atol=1e-4)
    assert ds.y_test.tolist() == y_test.tolist()
    assert ds.info.class_names == ("0", "1", "2") and ds.info.name == "imgs"


def test_npz_4d_float_images_keep_channels_and_data_bounds(tmp_path):
    x = np.random.default_rng(2).normal(size=(20, 3, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "c.npz", x=x, y=np.arange(20) % 2)
    ds = load(str(tmp_path / "c.npz"))
    assert ds.info.shape == (3, 4, 4)
    assert ds.info.bounds == (float(x.min()), float(x.max()))
    assert rows(torch.cat([ds.x_train, ds.x_test]), torch.cat([ds.y_train, ds.y_test])) == rows(
        x, np.arange(20) % 2)


def test_npz_tabular_split_is_seeded_stratified_and_a_partition(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.uniform(size=(50, 4))
    y = np.repeat([0, 1, 2], [25, 15, 10])
    np.savez(tmp_path / "t.npz", x=x, y=y)
    a, b = load(tmp_path / "t.npz"), load(tmp_path / "t.npz")
    assert a.sha256() == b.sha256()
    assert a.info.kind == "tabular" and a.info.shape == (4,)
    fs = a.info.feature_space  # per-feature bounds: each column's own range, float32 values
    x32 = x.astype(np.float32).astype(np.float64)
    assert fs.lo == tuple(x32.min(0)) and fs.hi == tuple(x32.max(0))
    assert a.info.bounds == (min(fs.lo), max(fs.hi))
    assert a.info.preprocessing == {"kind": "none"}
    assert a.info.feature_names == ("x0", "x1", "x2", "x3")
    assert a.info.feature_types == ("continuous",) * 4
    assert [int((a.y_test == c).sum()) for c in range(3)] == [5, 3, 2]
    assert rows(torch.cat([a.x_train, a.x_test]), torch.cat([a.y_train, a.y_test])) == rows(x, y)
    seeds = {load(tmp_path / "t.npz", rng_seed=s).sha256() for s in (0, 1, 2, 3)}
    assert len(seeds) > 1  # rng_seed moves the split of a user file


def test_npz_string_and_offset_labels_are_encoded(tmp_path):
    x = np.zeros((10, 2))
    x[:, 0] = np.arange(10)
    np.savez(tmp_path / "s.npz", x=x, y=np.array(["dog", "cat"] * 5))
    ds = load(tmp_path / "s.npz")
    assert ds.info.class_names == ("cat", "dog")
    # dog rows have even x0
    both_x, both_y = torch.cat([ds.x_train, ds.x_test]), torch.cat([ds.y_train, ds.y_test])
    assert ((both_x[:, 0] % 2 == 0) == (both_y == 1)).all()
    np.savez(tmp_path / "o.npz", x=x, y=np.array([1, 2] * 5))
    with pytest.warns(AdvkitWarning, match="re-encoded"):
        ds = load(tmp_path / "o.npz")
    assert ds.info.class_names == ("1", "2") and set(ds.y_train.tolist()) == {0, 1}


@pytest.mark.parametrize(
    "arrays, error, words",
    [
        ({"x": np.zeros((4, 2))}, DataFormatError, r"lacks the array\(s\) \['y'\]"),
        ({"y": np.zeros(4)}, DataFormatError, "'x'"),
        ({"x": np.zeros((4, 2)), "y": np.zeros(4), "x_test": np.zeros((2, 2))},
         DataFormatError, "only one of 'x_test' and 'y_test'"),
        ({"x": np.zeros((4, 2)), "y": np.zeros(3)}, DataFormatError, "one label per row"),
        ({"x": np.zeros(4), "y": np.zeros(4)}, DataFormatError, "has shape"),
        ({"x": np.array([[0.0, 1], [np.nan, 2], [1, 1], [2, 2]]), "y": np.array([0, 1, 0, 1])},
         InputContractError, r"'x'\[1, 0\] is nan \(sample 1\)"),
        ({"x": np.zeros((4, 2)), "y": np.array([0.5, 1, 0, 1])}, InputContractError,
         "not an integer"),
        ({"x": np.zeros((4, 2)), "y": np.zeros(4)}, InputContractError, "at least 2"),
    ],
    ids=["no-y", "no-x", "half-test", "length", "1d-x", "nan", "float-label", "one-class"],
)
def test_npz_bad_input(tmp_path, arrays, error, words):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(error, match=words) as err:
        load(tmp_path / "bad.npz")
    assert isinstance(err.value, AdvkitError)


def test_npz_is_never_unpickled(tmp_path):
    x = np.empty(4, dtype=object)
    x[:] = [[1], [2], [3], [4]]
    np.savez(tmp_path / "obj.npz", x=x, y=np.arange(4))  # object array: needs pickle
    with pytest.raises(DataFormatError, match="without unpickling"):
        load(tmp_path / "obj.npz")
    (tmp_path / "pickled.npz").write_bytes(b"\x80\x04K\x01.")  # a pickle, named .npz
    with pytest.raises(DataFormatError, match="without unpickling"):
        load(tmp_path / "pickled.npz")


# ------------------------------------------------------------------------------------------ csv


@pytest.fixture()
def csv_path(tmp_path):
    rng = np.random.default_rng(4)
    n = 60
    color = rng.choice(["red", "green", "blue"], size=n)
    a = rng.normal(size=n) * 10 + 3
    df = pd.DataFrame({
        "a": a,
        "color": color,
        "b": 4 * a - 7,  # a positive affine map of a: min-max scaled it equals scaled a
        "species": np.where(color == "red", "fox", np.where(color == "green", "cat", "dog")),
        "flag": rng.integers(0, 2, size=n).astype(bool),
    })
    path = tmp_path / "animals.csv"
    df.to_csv(path, index=False)
    return path, df


def test_csv_round_trip(csv_path):
    path, df = csv_path
    ds = load(path, label_column="species")
    info = ds.info
    assert info.kind == "tabular" and info.preprocessing == {"kind": "none"}
    assert info.class_names == ("cat", "dog", "fox")  # sorted
    assert info.feature_names == ("a", "color=blue", "color=green", "color=red", "b", "flag")
    assert info.feature_types == ("continuous", "binary", "binary", "binary", "continuous",
                                  "binary")
    assert info.shape == (6,) and ds.x_train.shape[1] == 6
    assert len(ds.x_train) + len(ds.x_test) == len(df)
    for c, name in enumerate(info.class_names):  # stratified: round(20 %) of each class
        n_c = int((df["species"] == name).sum())
        assert int((ds.y_test == c).sum()) == int(np.floor(n_c * 0.2 + 0.5))
    x = torch.cat([ds.x_train, ds.x_test])
    y = torch.cat([ds.y_train, ds.y_test])
    names = np.array(info.class_names)[y.numpy()]
    # one-hot columns agree with the labels they imply
    assert ((x[:, 3] == 1).numpy() == (names == "fox")).all()
    assert ((x[:, 2] == 1).numpy() == (names == "cat")).all()
    assert torch.equal(x[:, 1:4].sum(1), torch.ones(len(x)))
    # no silent scaling: the columns keep their values; the categorical column is a one-hot group
    order = np.argsort(df["a"].to_numpy())
    torch.testing.assert_close(torch.sort(x[:, 0]).values,
                               torch.tensor(df["a"].to_numpy()[order], dtype=torch.float32))
    fs = info.feature_space
    assert fs.one_hot == ((1, 2, 3),) and fs.integer == () and fs.immutable == ()
    assert fs.lo[0] == float(x[:, 0].min()) and fs.hi[4] == float(x[:, 4].max())
    assert (fs.lo[5], fs.hi[5]) == (0.0, 1.0)
    # min-max on request, from train statistics: train spans exactly [0, 1], test clipped into it
    mm = load(path, label_column="species", preprocessing="minmax")
    assert mm.info.preprocessing["kind"] == "minmax"
    assert mm.x_train[:, 0].min() == 0 and mm.x_train[:, 0].max() == 1
    assert mm.x_test.min() >= 0 and mm.x_test.max() <= 1
    xm = torch.cat([mm.x_train, mm.x_test])
    torch.testing.assert_close(xm[:, 0], xm[:, 4], atol=1e-6, rtol=0)
    assert load(path, label_column="species").sha256() == ds.sha256()
    assert load(path, label_column="species", rng_seed=9).sha256() != ds.sha256()


def test_csv_numeric_labels(tmp_path):
    df = pd.DataFrame({"f": np.arange(20.0), "y": np.arange(20) % 2})
    df.to_csv(tmp_path / "n.csv", index=False)
    ds = load(tmp_path / "n.csv", label_column="y")
    assert ds.info.class_names == ("0", "1")
    x = torch.cat([ds.x_train, ds.x_test])[:, 0]
    y = torch.cat([ds.y_train, ds.y_test])
    order = torch.argsort(x)
    assert y[order].tolist() == [i % 2 for i in range(20)]  # scaling keeps the order of f


def test_csv_label_column_missing_or_unknown_lists_columns(csv_path):
    path, _ = csv_path
    for bad in (None, "label"):
        with pytest.raises(InvalidParameterError, match="label_column") as err:
            load(path, label_column=bad)
        assert "'species'" in str(err.value) and "'color'" in str(err.value)


def test_csv_nan_names_row_and_column(tmp_path):
    (tmp_path / "nan.csv").write_text("a,b,y\n1,2,x\n3,4,y\n5,,x\n7,8,y\n")
    with pytest.raises(InputContractError, match=r"row 2 .*column 'b'"):
        load(tmp_path / "nan.csv", label_column="y")
    (tmp_path / "nolabel.csv").write_text("a,y\n1,x\n3,\n5,x\n")
    with pytest.raises(InputContractError, match=r"row 1 .*column 'y'"):
        load(tmp_path / "nolabel.csv", label_column="y")


def test_parquet_needs_pyarrow_or_round_trips(tmp_path):
    path = tmp_path / "t.parquet"
    if importlib.util.find_spec("pyarrow") is None:
        path.write_bytes(b"PAR1")
        with pytest.raises(MissingDependencyError, match="pyarrow"):
            load(path, label_column="y")
    else:
        pd.DataFrame({"a": np.arange(10.0), "y": ["p", "q"] * 5}).to_parquet(path)
        ds = load(path, label_column="y")
        assert ds.info.class_names == ("p", "q") and ds.info.shape == (1,)


# ---------------------------------------------------------------------------------- bad names


def test_unknown_name_lists_names_and_file_types():
    with pytest.raises(InvalidParameterError, match="name_or_path") as err:
        load("cifar10")
    for word in ("digits", "breast_cancer", "mnist", "fashion_mnist", ".npz", ".csv", ".parquet"):
        assert word in str(err.value)


def test_unsupported_suffix_and_missing_file(tmp_path):
    (tmp_path / "data.txt").write_text("1,2\n")
    with pytest.raises(InvalidParameterError, match=r"\.npz"):
        load(tmp_path / "data.txt")
    with pytest.raises(DataFileNotFoundError, match="does not exist") as err:
        load(tmp_path / "nope.npz")
    assert isinstance(err.value, FileNotFoundError) and "nope.npz" in str(err.value)


def test_bad_parameters():
    with pytest.raises(InvalidParameterError, match="rng_seed"):
        load("digits", rng_seed=-1)
    with pytest.raises(InvalidParameterError, match="label_column"):
        load("digits", label_column="y")
    with pytest.raises(InvalidParameterError, match="name_or_path"):
        load(3)
