"""Zoo models trained on the fly, cached in the user cache directory by a hash of data and config."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import torch

import advkit
from advkit.errors import AdvkitError

log = logging.getLogger("advkit.models")


def cache_root() -> Path:
    """``$ADVKIT_CACHE_DIR`` or the platform's user cache directory for advkit (one for data
    and models: :func:`advkit.data.datasets.cache_directory`)."""
    from advkit.data.datasets import cache_directory

    return cache_directory()


def cache_folder(kind: str, tag: str, recipe: dict, *tensors: torch.Tensor) -> Path:
    """``cache_root()/kind/tag-HASH``: the hash covers the recipe (JSON) and the tensors' bytes."""
    h = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode())
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return cache_root() / kind / f"{tag}-{h.hexdigest()[:24]}"


def load_cached(folder: Path):
    """The LoadedModel saved in ``folder``, or None when absent; a damaged entry is removed."""
    from advkit.models.io import load_model

    if not (folder / "config.json").is_file():
        return None
    try:
        loaded = load_model(folder)
    except AdvkitError as exc:  # a damaged cache entry is rebuilt, never trusted
        log.warning("ignoring damaged model cache %s: %s", folder, exc)
        shutil.rmtree(folder, ignore_errors=True)
        return None
    log.info("loaded cached model from %s", folder)
    return loaded


def store(model, folder: Path, *, dataset_info, extra: dict) -> None:
    """Save ``model`` into ``folder`` atomically; a read-only cache only costs time."""
    from advkit.models.io import save_model

    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    try:
        save_model(model, tmp, dataset_info=dataset_info, extra=extra)
        tmp.rename(folder)  # atomic; another process may have won the race
    except OSError as exc:
        log.warning("could not cache %s: %s", folder, exc)
        shutil.rmtree(tmp, ignore_errors=True)


def trained_zoo_model(
    ds, model_spec, *, seed: int, progress: bool | None = None, batch_hook=None, tag: str = ""
):
    """Return (model in eval mode, info dict): loaded from the cache, or trained and cached.

    The cache key hashes the dataset's SHA-256, the model spec, the seed, ``tag`` (name any
    ``batch_hook`` here: the hook itself cannot be hashed) and the advkit version.
    """
    from advkit.models.train import train
    from advkit.models.zoo import build, kwargs_for_data

    kwargs = kwargs_for_data(model_spec.zoo, model_spec.kwargs, ds.info)
    config = {"zoo": model_spec.zoo, "epochs": model_spec.epochs, "lr": model_spec.lr,
              "batch_size": model_spec.batch_size, "kwargs": kwargs, "seed": seed,
              "tag": tag, "data_sha256": ds.sha256(), "advkit": advkit.__version__}
    folder = cache_folder("models", model_spec.zoo, config)
    info = {"name": f"{model_spec.zoo} (trained on the fly)", "zoo": model_spec.zoo,
            "epochs": model_spec.epochs, "cache": str(folder)}
    loaded = load_cached(folder)
    if loaded is not None:
        return loaded.model.eval(), {**info, "trained_now": False,
                                     **loaded.config.get("extra", {}).get("training", {})}
    gen = torch.Generator().manual_seed(seed)
    model = build(model_spec.zoo, input_shape=ds.info.shape, n_classes=ds.info.n_classes,
                  generator=gen, **kwargs)
    hist = train(model, ds.x_train, ds.y_train, epochs=model_spec.epochs,
                 batch_size=model_spec.batch_size, lr=model_spec.lr, generator=gen,
                 progress=progress, batch_hook=batch_hook)
    store(model, folder, dataset_info=ds.info,
          extra={"training": {**config, "train_seconds": hist.total_seconds}})
    return model.eval(), {**info, "trained_now": True, "train_seconds": hist.total_seconds}
