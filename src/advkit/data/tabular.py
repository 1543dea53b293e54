"""User data files to Datasets: ``.npz`` arrays and ``.csv`` / ``.parquet`` tables.

A table becomes a float matrix: numeric columns stay ("continuous"; integer columns are integer
features), bool columns become 0/1 and non-numeric columns are one-hot encoded (one "binary"
feature per level, levels in sorted order, the levels one one-hot group). Nothing is scaled unless
the spec asks (``preprocessing``); the per-feature bounds and constraints are a FeatureSpace
(:mod:`advkit.data.features`) recorded in the DatasetInfo. Labels (a table's label column, a
``.npz``'s ``y``) are encoded to ``0..k-1`` in sorted order of their values. Without a given test
set the split is stratified 80/20 with the caller's seed. pandas is imported only to read a table.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from advkit.data.features import build_space, preprocess
from advkit.data.info import Dataset, DatasetInfo
from advkit.data.npz_limits import check_npz, max_bytes
from advkit.errors import (
    AdvkitWarning,
    DataFormatError,
    InputContractError,
    InvalidParameterError,
    MissingDependencyError,
)

TABLE_SUFFIXES = (".csv", ".parquet")
TEST_FRACTION = 0.2
# warn when one column would become more one-hot features than this
MANY_LEVELS = 100


@dataclass(frozen=True)
class Table:
    """A table split into a float feature matrix and raw labels, with per-feature metadata."""

    x: np.ndarray  # (n, d) float64
    y: np.ndarray  # (n,) raw label values
    feature_names: tuple[str, ...]
    feature_types: tuple[str, ...]
    # a non-numeric column -> the indices of its one-hot features; integer-typed columns
    columns: dict[str, tuple[int, ...]] | None = None
    integer: tuple[int, ...] = ()


def read_table(path: Path):
    """Read a ``.csv`` or ``.parquet`` file into a pandas DataFrame."""
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix == ".parquet":
        if importlib.util.find_spec("pyarrow") is None:
            raise MissingDependencyError("reading .parquet files", "pyarrow")
        return pd.read_parquet(path)
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: cannot parse as CSV ({exc})") from exc


def frame_to_table(df, label_column: str | None, *, source: str) -> Table:
    """Check a DataFrame for missing values and encode its features; the labels stay raw."""
    from pandas.api import types as pdt

    columns = [str(c) for c in df.columns]
    if label_column is None:
        raise InvalidParameterError(
            "label_column", None, f"the name of the label column of {source}; its columns are "
            f"{columns}"
        )
    if label_column not in columns:
        raise InvalidParameterError(
            "label_column", label_column, f"one of the columns of {source}: {columns}"
        )
    if len(df) == 0:
        raise InputContractError(f"{source} has no data rows")
    missing = df.isna().to_numpy()
    if missing.any():
        row, col = np.argwhere(missing)[0]
        raise InputContractError(
            f"{source}: missing value (NaN) in row {row} (0-based, header not counted), column "
            f"{columns[col]!r}; fill or drop it before loading"
        )
    label_pos = columns.index(label_column)
    blocks, names, types = [], [], []
    groups: dict[str, tuple[int, ...]] = {}
    integer: list[int] = []
    for pos, name in enumerate(columns):
        if pos == label_pos:
            continue
        col = df.iloc[:, pos]
        if pdt.is_bool_dtype(col.dtype):
            blocks.append(col.to_numpy(dtype=np.float64)[:, None])
            names.append(name)
            types.append("binary")
        elif pdt.is_numeric_dtype(col.dtype):
            values = col.to_numpy(dtype=np.float64)
            bad = ~np.isfinite(values)
            if bad.any():
                raise InputContractError(
                    f"{source}: non-finite value {values[bad][0]} in row {int(np.argmax(bad))} "
                    f"(0-based), column {name!r}; replace it before loading"
                )
            if pdt.is_integer_dtype(col.dtype):
                integer.append(len(names))
            blocks.append(values[:, None])
            names.append(name)
            types.append("continuous")
        else:
            values = col.astype(str).to_numpy(dtype=object).astype(str)
            levels = np.unique(values)
            if len(levels) > MANY_LEVELS:
                warnings.warn(
                    f"{source}: column {name!r} has {len(levels)} distinct values and becomes "
                    f"{len(levels)} one-hot features; drop it if it is an identifier",
                    AdvkitWarning, stacklevel=3,
                )
            blocks.append((values[:, None] == levels[None, :]).astype(np.float64))
            if len(levels) > 1:
                groups[name] = tuple(range(len(names), len(names) + len(levels)))
            names.extend(f"{name}={level}" for level in levels)
            types.extend("binary" for _ in levels)
    if not blocks:
        raise InputContractError(
            f"{source}: no feature columns besides the label column {label_column!r}"
        )
    label = df.iloc[:, label_pos]
    if pdt.is_numeric_dtype(label.dtype) and not pdt.is_bool_dtype(label.dtype):
        y = label.to_numpy(dtype=np.float64)
    else:
        y = label.astype(str).to_numpy(dtype=object).astype(str)
    return Table(np.concatenate(blocks, axis=1), y, tuple(names), tuple(types), groups,
                 tuple(integer))


def encode_labels(values: np.ndarray, *, source: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Encode labels to int64 ``0..k-1`` in sorted order of their values; return codes and names.

    Integer labels that already are ``0..k-1`` keep their codes; other integers are re-encoded with
    a warning (``class_names`` keep the original values). Strings are sorted; non-integer
    numbers are refused (advkit audits classifiers).
    """
    values = np.asarray(values)
    if values.ndim != 1:
        raise InputContractError(f"{source}: labels must be 1-D, got shape {values.shape}")
    kind = values.dtype.kind
    if kind in "USb":
        values = values.astype(str)
    elif kind in "iu":
        values = values.astype(np.int64)
    elif kind == "f":
        finite = np.isfinite(values)
        if not finite.all():
            i = int(np.argmin(finite))
            raise InputContractError(f"{source}: label {i} is {values[i]}; labels must be finite")
        if not np.array_equal(values, np.round(values)):
            i = int(np.argmax(values != np.round(values)))
            raise InputContractError(
                f"{source}: label {i} is {values[i]}, not an integer; labels must be class ids "
                "or class names (advkit audits classifiers, not regressors)"
            )
        values = values.astype(np.int64)
    else:
        raise DataFormatError(f"{source}: labels have unsupported dtype {values.dtype}")
    levels, codes = np.unique(values, return_inverse=True)
    if len(levels) < 2:
        raise InputContractError(
            f"{source}: labels hold {len(levels)} distinct class(es); a classifier needs at least 2"
        )
    if levels.dtype.kind == "i" and not np.array_equal(levels, np.arange(len(levels))):
        shown = ", ".join(str(v) for v in levels[:10]) + (", ..." if len(levels) > 10 else "")
        warnings.warn(
            f"{source}: integer labels {{{shown}}} are not 0..{len(levels) - 1}; re-encoded in "
            "sorted order (class_names keep the original values)",
            AdvkitWarning, stacklevel=3,
        )
    names = tuple(str(v) for v in levels.tolist())
    return codes.reshape(-1).astype(np.int64), names


def first_nonfinite(x: np.ndarray) -> tuple[int, ...] | None:
    """Index of the first NaN or infinite entry of ``x`` (C order), or None."""
    bad = ~np.isfinite(x)
    if not bad.any():
        return None
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(bad.reshape(-1))), x.shape))


def stratified_split(y: np.ndarray, *, test_fraction: float = TEST_FRACTION,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) of a stratified split: ``round(n_c * test_fraction)`` of each class
    (at most ``n_c - 1``) go to the test set; both index sets are returned in shuffled order.

    Uses NumPy's legacy ``RandomState`` stream, which NumPy keeps frozen across versions (NEP 19),
    so a seed gives the same split on every machine.
    """
    y = np.asarray(y)
    rs = np.random.RandomState(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rs.permutation(len(idx))]
        k = min(int(math.floor(len(idx) * test_fraction + 0.5)), len(idx) - 1)
        test.append(idx[:k])
        train.append(idx[k:])
    train_idx, test_idx = np.concatenate(train), np.concatenate(test)
    if len(test_idx) == 0:
        raise InputContractError(
            f"{len(y)} samples are too few for a {test_fraction:.0%} test split; supply more "
            "data or an explicit test set")
    return train_idx[rs.permutation(len(train_idx))], test_idx[rs.permutation(len(test_idx))]


def to_dataset(x_train, y_train, x_test, y_test, info: DatasetInfo) -> Dataset:
    """Build a Dataset: float32 contiguous inputs, int64 labels."""
    def inputs(x) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            return x.contiguous()
        return torch.from_numpy(np.require(x, dtype=np.float32, requirements=["C", "W"]))

    def labels(y) -> torch.Tensor:
        return torch.from_numpy(np.require(y, dtype=np.int64, requirements=["C", "W"]))

    return Dataset(inputs(x_train), labels(y_train), inputs(x_test), labels(y_test), info)


_NPZ_HINT = "save plain numeric arrays with numpy.savez(path, x=..., y=...)"


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays ``x``, ``y`` (and ``x_test``, ``y_test`` when present); never unpickles."""
    limit = max_bytes()  # a bad $ADVKIT_NPZ_MAX_BYTES is named as such, not as a bad file
    try:
        if zipfile.is_zipfile(path):  # a single .npy is refused below; a bomb never decompresses
            check_npz(path, limit)
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise DataFormatError(f"{path} holds a single array, not a .npz archive; {_NPZ_HINT}")
        with z:
            keys = set(z.files)
            lacking = [k for k in ("x", "y") if k not in keys]
            if lacking:
                raise DataFormatError(f"{path} lacks the array(s) {lacking} (found "
                                      f"{sorted(keys)}); {_NPZ_HINT}")
            if ("x_test" in keys) != ("y_test" in keys):
                raise DataFormatError(f"{path} has only one of 'x_test' and 'y_test'; "
                                      "supply both or neither")
            arrays = {k: z[k] for k in ("x", "y", "x_test", "y_test") if k in keys}
    except DataFormatError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error,
            NotImplementedError, RuntimeError) as exc:  # corrupt, unsupported or encrypted zip
        raise DataFormatError(f"cannot read {path} as .npz without unpickling ({exc}); "
                              f"{_NPZ_HINT}") from exc
    for k, a in arrays.items():  # numpy hands back a member that is not .npy data as raw bytes
        if not isinstance(a, np.ndarray):
            raise DataFormatError(f"{path}: the member {k!r} is not NumPy .npy data; {_NPZ_HINT}")
    return arrays


def _check_npz(path: Path, arrays: dict[str, np.ndarray], pairs) -> None:
    x0 = arrays["x"]
    for xk, yk in pairs:
        x, y = arrays[xk], arrays[yk]
        if x.dtype.kind not in "biuf":
            raise DataFormatError(f"{path}: '{xk}' has dtype {x.dtype}; inputs must be numeric")
        if x.ndim not in (2, 3, 4) or x.shape[1:] != x0.shape[1:] or 0 in x.shape[1:]:
            raise DataFormatError(
                f"{path}: '{xk}' has shape {x.shape}; expected (n, features), (n, H, W) or "
                f"(n, C, H, W), the same per sample in 'x' and 'x_test'")
        if y.ndim != 1 or len(y) != len(x):
            raise DataFormatError(f"{path}: '{yk}' has shape {y.shape}; expected ({len(x)},), "
                                  f"one label per row of '{xk}'")
        if len(x) == 0:
            raise InputContractError(f"{path}: '{xk}' has no rows; supply at least one sample "
                                     "per array")
        bad = first_nonfinite(x) if x.dtype.kind == "f" else None
        if bad is not None:
            raise InputContractError(
                f"{path}: '{xk}'[{', '.join(map(str, bad))}] is {x[bad]} (sample {bad[0]}); "
                "remove or impute it")
    if x0.ndim == 4 and x0.shape[-1] in (1, 3, 4) and x0.shape[1] not in (1, 3, 4):
        warnings.warn(f"{path}: 'x' of shape {x0.shape} looks channels-last; advkit expects "
                      "(n, C, H, W)", AdvkitWarning, stacklevel=4)


def load_npz(path: Path, rng_seed: int, *, preprocessing: str = "none",
             features: dict | None = None) -> Dataset:
    """A user ``.npz`` with arrays ``x`` and ``y`` (and optionally ``x_test``, ``y_test``).

    ``x`` of 2 dims is tabular ``(d,)`` (features ``x0``, ``x1``, ...; ``preprocessing`` and
    ``features`` as for tables; integer arrays make integer features), 3 dims images
    ``(1, H, W)``, 4 dims ``(C, H, W)``. uint8 images are divided by 255 (bounds [0, 1]); other
    images keep their values, with bounds [0, 1] when they fit and (min, max) otherwise.
    """
    arrays = _read_npz(path)
    has_test = "x_test" in arrays
    pairs = [("x", "y")] + ([("x_test", "y_test")] if has_test else [])
    _check_npz(path, arrays, pairs)
    x0 = arrays["x"]
    codes, class_names = encode_labels(np.concatenate([arrays[yk] for _, yk in pairs]),
                                       source=f"{path} 'y'")
    if has_test:
        n = len(arrays["y"])
        x_tr, y_tr, x_te, y_te = x0, codes[:n], arrays["x_test"], codes[n:]
    else:
        tr, te = stratified_split(codes, seed=rng_seed)
        x_tr, y_tr, x_te, y_te = x0[tr], codes[tr], x0[te], codes[te]
    if x0.ndim == 2:
        d = x0.shape[1]
        return tabular_dataset(x_tr, y_tr, x_te, y_te, path=path,
                                names=tuple(f"x{i}" for i in range(d)),
                                types=("continuous",) * d, class_names=class_names,
                                integer=tuple(range(d)) if x0.dtype.kind in "iub" else (),
                                preprocessing=preprocessing, features=features)
    if features or preprocessing != "none":
        raise InvalidParameterError("dataset.features / preprocessing", path.name,
                                    "left out for image data (they apply to tabular data)")
    if x0.dtype == np.uint8:
        x_tr, x_te = x_tr.astype(np.float32) / 255.0, x_te.astype(np.float32) / 255.0
        bounds = (0.0, 1.0)
    else:
        x_tr, x_te = x_tr.astype(np.float32), x_te.astype(np.float32)
        lo = float(min(x_tr.min(), x_te.min()))
        hi = float(max(x_tr.max(), x_te.max()))
        bounds = (0.0, 1.0) if lo >= 0.0 and hi <= 1.0 else (lo, hi if hi > lo else lo + 1.0)
    shape = (1, *x0.shape[1:]) if x0.ndim == 3 else tuple(x0.shape[1:])
    x_tr, x_te = x_tr.reshape(-1, *shape), x_te.reshape(-1, *shape)
    info = DatasetInfo(name=path.stem, shape=shape, n_classes=len(class_names), bounds=bounds,
                       class_names=class_names, source=str(path), kind="image")
    return to_dataset(x_tr, y_tr, x_te, y_te, info)


def load_table(path: Path, label_column: str | None, rng_seed: int, *,
               preprocessing: str = "none", features: dict | None = None) -> Dataset:
    """A user ``.csv`` / ``.parquet`` table: non-numeric columns one-hot encoded (each a one-hot
    group), integer columns integer features, ``preprocessing`` (default ``none``: the model gets
    the columns as they are) and the per-feature bounds and constraints of ``features`` (see
    :func:`advkit.data.features.build_space`)."""
    table = frame_to_table(read_table(path), label_column, source=str(path))
    codes, class_names = encode_labels(table.y, source=f"{path} column {label_column!r}")
    tr, te = stratified_split(codes, seed=rng_seed)
    return tabular_dataset(table.x[tr], codes[tr], table.x[te], codes[te], path=path,
                            names=table.feature_names, types=table.feature_types,
                            class_names=class_names, columns=table.columns,
                            integer=table.integer, preprocessing=preprocessing, features=features)


def tabular_dataset(x_tr, y_tr, x_te, y_te, *, path: Path, names, types, class_names,
                    columns=None, integer=(), preprocessing: str = "none",
                    features: dict | None = None, name: str | None = None,
                    source: str | None = None) -> Dataset:
    """A tabular Dataset: ``preprocessing`` applied, its FeatureSpace built and checked."""
    binary = np.array([t == "binary" for t in types], dtype=bool)
    x_tr, x_te, record = preprocess(x_tr, x_te, preprocessing, ~binary)
    # the bounds and checks see the float32 values the model will be given
    x_tr, x_te = (a.astype(np.float32).astype(np.float64) for a in (x_tr, x_te))
    if preprocessing != "none" and (features or {}).get("integer"):
        raise InvalidParameterError(
            "dataset.features.integer", features["integer"],
            "empty unless preprocessing is 'none' (integer constraints hold on raw values)")
    space = build_space(x_tr, x_te, tuple(names), binary=binary, columns=columns,
                        integer_auto=tuple(integer) if preprocessing == "none" else (),
                        declared=features, source=str(path))
    info = DatasetInfo(name=name or path.stem, shape=(len(names),), n_classes=len(class_names),
                       bounds=(min(space.lo), max(max(space.hi), min(space.lo) + 1e-12)),
                       class_names=class_names, feature_names=tuple(names),
                       feature_types=tuple(types), kind="tabular", source=source or str(path),
                       feature_space=space, preprocessing=record)
    return to_dataset(x_tr, y_tr, x_te, y_te, info)
