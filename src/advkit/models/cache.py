"""Zoo models trained on the fly, cached in the user cache directory by a hash of data and config."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import platformdirs
import torch

import advkit
from advkit.errors import AdvkitError

log = logging.getLogger("advkit.models")


def cache_root() -> Path:
    """``$ADVKIT_CACHE_DIR`` or the platform's user cache directory for advkit."""
    return Path(os.environ.get("ADVKIT_CACHE_DIR") or platformdirs.user_cache_dir("advkit"))


def trained_zoo_model(
    ds, model_spec, *, seed: int, progress: bool | None = None, batch_hook=None, tag: str = ""
):
    """Return (model in eval mode, info dict): loaded from the cache, or trained and cached.

    The cache key hashes the dataset's SHA-256, the model spec, the seed, ``tag`` (name any
    ``batch_hook`` here: the hook itself cannot be hashed) and the advkit version.
    """
    from advkit.models.io import load_model, save_model
    from advkit.models.train import train
    from advkit.models.zoo import build

    config = {
        "zoo": model_spec.zoo,
        "epochs": model_spec.epochs,
        "lr": model_spec.lr,
        "batch_size": model_spec.batch_size,
        "kwargs": model_spec.kwargs,
        "seed": seed,
        "tag": tag,
        "data_sha256": ds.sha256(),
        "advkit": advkit.__version__,
    }
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:24]
    folder = cache_root() / "models" / key
    info = {
        "name": f"{model_spec.zoo} (trained on the fly)",
        "zoo": model_spec.zoo,
        "epochs": model_spec.epochs,
        "cache": str(folder),
    }
    if (folder / "config.json").is_file():
        try:
            loaded = load_model(folder)
            log.info("loaded cached %s from %s", model_spec.zoo, folder)
            return loaded.model.eval(), {
                **info,
                "trained_now": False,
                **loaded.config.get("extra", {}).get("training", {}),
            }
        except AdvkitError as exc:  # a damaged cache entry is rebuilt, never trusted
            log.warning("ignoring damaged model cache %s: %s", folder, exc)
            shutil.rmtree(folder, ignore_errors=True)
    gen = torch.Generator().manual_seed(seed)
    model = build(
        model_spec.zoo,
        input_shape=ds.info.shape,
        n_classes=ds.info.n_classes,
        generator=gen,
        **model_spec.kwargs,
    )
    hist = train(
        model,
        ds.x_train,
        ds.y_train,
        epochs=model_spec.epochs,
        batch_size=model_spec.batch_size,
        lr=model_spec.lr,
        generator=gen,
        progress=progress,
        batch_hook=batch_hook,
    )
    record = {**config, "train_seconds": hist.total_seconds}
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    save_model(model, tmp, dataset_info=ds.info, extra={"training": record})
    try:
        tmp.rename(folder)  # atomic; another process may have won the race
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return model.eval(), {**info, "trained_now": True, "train_seconds": hist.total_seconds}
