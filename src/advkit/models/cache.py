"""Zoo models trained on the fly, cached in the user cache directory by a hash of data and config."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import platformdirs
import torch

import advkit

log = logging.getLogger("advkit.models")


def cache_root() -> Path:
    return Path(os.environ.get("ADVKIT_CACHE_DIR") or platformdirs.user_cache_dir("advkit"))


def trained_zoo_model(ds, model_spec, *, seed: int, progress: bool | None = None):
    """Return (model in eval mode, info dict): loaded from the cache, or trained and cached."""
    from advkit.models.io import load_model, save_model
    from advkit.models.train import train
    from advkit.models.zoo import build

    config = {"zoo": model_spec.zoo, "epochs": model_spec.epochs, "lr": model_spec.lr,
              "batch_size": model_spec.batch_size, "kwargs": model_spec.kwargs, "seed": seed,
              "data_sha256": ds.sha256(), "advkit": advkit.__version__}
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:24]
    folder = cache_root() / "models" / key
    info = {"zoo": model_spec.zoo, "epochs": model_spec.epochs, "cache": str(folder), "trained_now": False}
    if (folder / "config.json").is_file():
        try:
            loaded = load_model(folder)
            log.info("loaded cached %s from %s", model_spec.zoo, folder)
            return loaded.model.eval(), info
        except advkit.errors.AdvkitError as exc:  # a damaged cache entry is rebuilt, not trusted
            log.warning("ignoring damaged model cache %s: %s", folder, exc)
    gen = torch.Generator().manual_seed(seed)
    model = build(model_spec.zoo, input_shape=ds.info.shape, n_classes=ds.info.n_classes,
                  generator=gen, **model_spec.kwargs)
    hist = train(model, ds.x_train, ds.y_train, epochs=model_spec.epochs, batch_size=model_spec.batch_size,
                 lr=model_spec.lr, generator=gen, progress=progress)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    save_model(model, tmp, dataset_info=ds.info, extra={"training": config})
    tmp.replace(folder) if not folder.exists() else None
    info.update(trained_now=True, train_seconds=sum(getattr(hist, "seconds", []) or [0.0]))
    return model.eval(), info
