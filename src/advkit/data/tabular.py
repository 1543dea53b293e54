"""Tables and arrays to model inputs: label encoding, one-hot encoding, min-max scaling, checks.

A ``.csv`` / ``.parquet`` file becomes a float matrix: numeric columns stay ("continuous"),
non-numeric columns are one-hot encoded (one "binary" feature per level, levels in sorted order),
and the label column is encoded to ``0..k-1`` in sorted order of its values. pandas is imported
only when a table is read.
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from advkit.data.idx import DataFormatError
from advkit.errors import (
    AdvkitWarning,
    InputContractError,
    InvalidParameterError,
    MissingDependencyError,
)

TABLE_SUFFIXES = (".csv", ".parquet")
# warn when one column would become more one-hot features than this
MANY_LEVELS = 100


@dataclass(frozen=True)
class Table:
    """A table split into a float feature matrix and raw labels, with per-feature metadata."""

    x: np.ndarray  # (n, d) float64
    y: np.ndarray  # (n,) raw label values
    feature_names: tuple[str, ...]
    feature_types: tuple[str, ...]


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
    return Table(np.concatenate(blocks, axis=1), y, tuple(names), tuple(types))


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


def minmax_fit(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature minimum and span of the training data (span 1 for constant features)."""
    lo = x_train.min(axis=0)
    span = x_train.max(axis=0) - lo
    span = np.where(span > 0, span, 1.0)
    return lo, span


def minmax_apply(x: np.ndarray, lo: np.ndarray, span: np.ndarray) -> np.ndarray:
    """Scale with training statistics into [0, 1], clipping points outside the train range."""
    return np.clip((x - lo) / span, 0.0, 1.0)
