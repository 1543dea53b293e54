"""The BadNets-on-MNIST setting of the reference tests and benchmarks of backdoor defenses.

``FULL``: LeNet on 20,000 MNIST training images, Adam, batch 32, 2 epochs at lr 3e-3 then 1 at
3e-4 (a fresh optimizer per phase), a 3x3 white patch (Gu, Dolan-Gavitt & Garg 2017), and a
separate 6,000 clean training images as the defender's data; ``QUICK``: digits, an MLP, a 2x2
patch. ``split`` draws the two subsets from a seed and ``train`` trains (and caches) a model the
same way every time, so the slow reference tests, ``benchmarks/neural_cleanse.py`` and the
figures of earlier sessions share one setting. (The ``backdoor`` audit preset expresses the same
setting as a spec, with one optimizer and a step schedule instead of two phases.)
"""

from __future__ import annotations

import time

import torch

import advkit

FULL = dict(dataset="mnist", model="lenet", kwargs={}, n_train=20000, n_clean=6000, size=3,
            batch_size=32, schedule=[[2, 3e-3], [1, 3e-4]], layer=None,
            nc=dict(batch_size=16))
QUICK = dict(dataset="digits", model="mlp", kwargs={"hidden": [64]}, n_train=None, n_clean=360,
             size=2, batch_size=64, schedule=[[20, 3e-3]], layer="classifier.0",
             nc=dict(batch_size=16, epochs=15))


def split(ds, cfg: dict, seed: int):
    """(x, y, x_clean, y_clean): ``cfg``'s training subset and the defender's clean subset of
    ``ds``'s training split, disjoint, drawn from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(ds.x_train), generator=g)
    n_clean = cfg["n_clean"]
    n_train = cfg["n_train"] or len(perm) - n_clean
    tr, cl = perm[:n_train], perm[n_train:n_train + n_clean]
    return ds.x_train[tr], ds.y_train[tr], ds.x_train[cl], ds.y_train[cl]


def train(cfg: dict, info, x, y, seed: int, tag: str, *, cache: bool = True):
    """(model in eval mode, train seconds, from cache): ``cfg``'s zoo model trained on (x, y)
    phase by phase, read from / written to the model cache unless ``cache`` is False."""
    from advkit.models.cache import cache_folder, load_cached, store
    from advkit.models.train import train as fit
    from advkit.models.zoo import build

    recipe = {k: cfg[k] for k in ("model", "kwargs", "batch_size", "schedule")}
    folder = cache_folder("backdoor", tag, recipe | {"seed": seed, "advkit": advkit.__version__},
                          x, y)
    loaded = load_cached(folder) if cache else None
    if loaded is not None:
        return loaded.model.eval(), 0.0, True
    g = torch.Generator().manual_seed(seed)
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg["kwargs"].items()}
    model = build(cfg["model"], input_shape=tuple(info.shape), n_classes=info.n_classes,
                  generator=g, **kw)
    t0 = time.perf_counter()
    for epochs, lr in cfg["schedule"]:
        fit(model, x, y, epochs=epochs, lr=lr, batch_size=cfg["batch_size"], generator=g,
            progress=False)
    secs = time.perf_counter() - t0
    if cache:
        store(model, folder, dataset_info=info, extra={"backdoor_lab": tag})
    return model.eval(), secs, False
