"""``Dataset`` and ``DatasetInfo``: tensors plus what they are."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch

from advkit.data.features import FeatureSpace


@dataclass(frozen=True)
class DatasetInfo:
    """Per-sample ``shape``, value ``bounds``, classes and features of a dataset."""

    name: str
    shape: tuple[int, ...]
    n_classes: int
    bounds: tuple[float, float] = (0.0, 1.0)
    class_names: tuple[str, ...] = ()
    feature_names: tuple[str, ...] = ()
    # "continuous" / "categorical" / "binary" per feature; () for images
    feature_types: tuple[str, ...] = ()
    kind: str = "image"  # "image" or "tabular"
    source: str = ""
    # tabular only: per-feature bounds and constraints (advkit.data.features) and the
    # preprocessing applied before the model sees the data
    feature_space: FeatureSpace | None = None
    preprocessing: dict = field(default_factory=dict)
    # a random subset of the training split (advkit.data.subset_train): its size, the size it
    # was drawn from and the seed
    train_subset: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "name": self.name, "shape": list(self.shape), "n_classes": self.n_classes,
            "bounds": list(self.bounds), "class_names": list(self.class_names),
            "feature_names": list(self.feature_names), "feature_types": list(self.feature_types),
            "kind": self.kind, "source": self.source,
            **({"preprocessing": dict(self.preprocessing)} if self.preprocessing else {}),
            **({"train_subset": dict(self.train_subset)} if self.train_subset else {}),
            **({"features": self.feature_space.as_dict()} if self.feature_space else {}),
        }


@dataclass
class Dataset:
    """A fixed train/test split as float32 inputs within ``info.bounds`` and int64 labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    info: DatasetInfo
    _sha: str | None = field(default=None, init=False, repr=False)

    def sha256(self) -> str:
        """SHA-256 of the tensors' bytes (train then test), for the run manifest and caches."""
        if self._sha is None:
            h = hashlib.sha256()
            for t in (self.x_train, self.y_train, self.x_test, self.y_test):
                h.update(t.contiguous().numpy().tobytes())
            self._sha = h.hexdigest()
        return self._sha

    def contract(self):
        from advkit.targets.base import InputContract

        i = self.info
        fs = i.feature_space
        bounds = (min(fs.lo), max(fs.hi)) if fs is not None else i.bounds
        if bounds[1] <= bounds[0]:
            bounds = (bounds[0], bounds[0] + 1.0)
        return InputContract(shape=i.shape, n_classes=i.n_classes, bounds=bounds,
                             class_names=i.class_names or None, features=fs)


def subset_train(ds: Dataset, n: int, *, seed: int) -> Dataset:
    """``ds`` with a random ``n`` of its training samples (drawn from ``seed``, kept in their
    original order; the test split unchanged), recorded in ``info.train_subset``. ``n`` at
    least the training split's size returns ``ds`` itself."""
    import dataclasses

    total = int(ds.x_train.shape[0])
    if n >= total:
        return ds
    idx = torch.randperm(total, generator=torch.Generator().manual_seed(int(seed)))[:n]
    idx = idx.sort().values
    info = dataclasses.replace(ds.info, train_subset={"n": int(n), "of": total, "seed": int(seed)})
    return Dataset(ds.x_train[idx], ds.y_train[idx], ds.x_test, ds.y_test, info)
