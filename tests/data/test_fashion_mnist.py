"""Fashion-MNIST from the Debian package's IDX files, and the cache mechanics on tiny IDX files."""

import gzip
import os
import struct
import warnings

import numpy as np
import pytest
import torch

from advkit.data import MissingSystemPackageError, datasets, load
from advkit.data.datasets import FASHION_CLASSES, FASHION_DIR, FASHION_FILES
from advkit.errors import AdvkitWarning, MissingDependencyError


def write_idx(path, array: np.ndarray):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(">u1").tobytes()))


@pytest.fixture()
def tiny(tmp_path, monkeypatch):
    """A fake Fashion-MNIST folder with 20 train / 10 test images; env vars point at it."""
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    src.mkdir()
    arrays = {"x_train": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
              "y_train": np.arange(20, dtype=np.uint8) % 10,
              "x_test": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
              "y_test": np.arange(10, dtype=np.uint8)[::-1].copy()}
    for key, stem in FASHION_FILES.items():
        write_idx(src / f"{stem}.gz", arrays[key])
    monkeypatch.setenv("ADVKIT_FASHION_MNIST_DIR", str(src))
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path / "cache"))
    return src, tmp_path / "cache", arrays


def check_equal(ds, arrays):
    for part in ("train", "test"):
        x = getattr(ds, f"x_{part}")
        np.testing.assert_array_equal((x[:, 0] * 255).round().numpy(), arrays[f"x_{part}"])
        np.testing.assert_array_equal(getattr(ds, f"y_{part}").numpy(), arrays[f"y_{part}"])


def test_reads_idx_folder_from_env_and_caches(tiny, monkeypatch):
    src, cache, arrays = tiny
    ds = load("fashion_mnist")
    check_equal(ds, arrays)
    assert ds.info.class_names == FASHION_CLASSES and ds.info.shape == (1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    cached = list(cache.iterdir())
    assert len(cached) == 1 and cached[0].suffix == ".npz"  # no temp file left behind
    monkeypatch.setattr(datasets, "read_idx", lambda p: pytest.fail("read the IDX source"))
    assert load("fashion_mnist").sha256() == ds.sha256()


def test_corrupt_cache_is_rebuilt_with_a_warning(tiny):
    src, cache, arrays = tiny
    first = load("fashion_mnist")
    (path,) = cache.iterdir()
    path.write_bytes(b"not a zip archive")
    with pytest.warns(AdvkitWarning, match="unreadable cache"):
        again = load("fashion_mnist")
    assert again.sha256() == first.sha256()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load("fashion_mnist").sha256() == first.sha256()  # rebuilt cache is fine


def test_changed_source_is_read_again_and_stale_cache_dropped(tiny):
    src, cache, arrays = tiny
    load("fashion_mnist")
    (old,) = cache.iterdir()
    arrays["y_test"] = np.arange(10, dtype=np.uint8)
    stem = FASHION_FILES["y_test"]
    write_idx(src / f"{stem}.gz", arrays["y_test"])
    st = os.stat(src / f"{stem}.gz")
    os.utime(src / f"{stem}.gz", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    check_equal(load("fashion_mnist"), arrays)
    (new,) = cache.iterdir()
    assert new != old


def test_corrupt_source_raises_clear_error(tiny):
    src, cache, arrays = tiny
    path = src / f"{FASHION_FILES['x_test']}.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-100]))
    with pytest.raises(datasets.DataFormatError, match="truncated"):
        load("fashion_mnist")


def test_missing_package_names_apt_get(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVKIT_FASHION_MNIST_DIR", str(tmp_path))
    from advkit.data import available

    assert available()["fashion_mnist"] is False
    with pytest.raises(MissingSystemPackageError) as err:
        load("fashion_mnist", cache_dir=tmp_path)
    assert isinstance(err.value, MissingDependencyError)
    assert "apt-get install dataset-fashion-mnist" in str(err.value)
    assert "ADVKIT_FASHION_MNIST_DIR" in str(err.value)


@pytest.mark.skipif(not FASHION_DIR.is_dir(),
                    reason="Debian package dataset-fashion-mnist not installed "
                           "(apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist(tmp_path, monkeypatch):
    monkeypatch.delenv("ADVKIT_FASHION_MNIST_DIR", raising=False)
    ds = load("fashion_mnist", cache_dir=tmp_path)
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.info.bounds == (0.0, 1.0) and ds.x_train.min() == 0 and ds.x_train.max() == 1
    # Fashion-MNIST is balanced: 6000 / 1000 images of each of its 10 classes
    assert torch.bincount(ds.y_train).tolist() == [6000] * 10
    assert torch.bincount(ds.y_test).tolist() == [1000] * 10
    assert ds.info.class_names[0] == "T-shirt/top" and ds.info.class_names[9] == "Ankle boot"
