"""BadNets LeNet/MNIST models for ``backdoor_detectors.py``, trained once and cached.

Recipe (the backdoor preset's): 20,000 MNIST training images, zoo ``lenet``, Adam, batch 32, 2
epochs at lr 3e-3 then 1 at 3e-4; a separate 6,000 clean training images are the defender's clean
data. BadNets: 3x3 white patch at the bottom-right corner, all-to-one, target 0. Models are cached
under ``$ADVKIT_CACHE_DIR`` (the benchmark sets it to ``/tmp/advkit-bd-cache`` unless it is set)
by a hash of the training data and the recipe.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bd_models.py [--seeds 0] [--rates 0.01 ...]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("ADVKIT_CACHE_DIR", "/tmp/advkit-bd-cache")

import numpy as np  # noqa: E402
import torch  # noqa: E402

N_TRAIN, N_CLEAN, SCHEDULE, BATCH = 20000, 6000, ((2, 3e-3), (1, 3e-4)), 32


def split(ds, seed: int):
    """(x_train, y_train, x_clean, y_clean): disjoint random subsets of MNIST's training split."""
    perm = torch.randperm(len(ds.x_train), generator=torch.Generator().manual_seed(seed))
    tr, cl = perm[:N_TRAIN], perm[N_TRAIN:N_TRAIN + N_CLEAN]
    return ds.x_train[tr], ds.y_train[tr], ds.x_train[cl], ds.y_train[cl]


def train_cached(info, x, y, seed: int, tag: str, model_name: str = "lenet"):
    """(model, seconds trained, from cache); ``model_name``: a zoo model (``mlp`` on tables)."""
    from advkit.models.cache import cache_folder, load_cached, store
    from advkit.models.train import train
    from advkit.models.zoo import build

    recipe = {"model": model_name, "batch": BATCH, "schedule": SCHEDULE, "seed": seed}
    folder = cache_folder("bd-bench", tag, recipe, x, y)
    loaded = load_cached(folder)
    if loaded is not None:
        return loaded.model.eval(), 0.0, True
    g = torch.Generator().manual_seed(seed)
    model = build(model_name, input_shape=tuple(info.shape), n_classes=info.n_classes,
                  generator=g)
    t0 = time.perf_counter()
    for epochs, lr in SCHEDULE:
        train(model, x, y, epochs=epochs, lr=lr, batch_size=BATCH, generator=g, progress=False)
    secs = time.perf_counter() - t0
    store(model, folder, dataset_info=info, extra={"bench": tag})
    return model.eval(), secs, False


def poisoned_set(x, y, rate: float, seed: int, attack: str = "badnets"):
    """BadNets (3x3 white patch, bottom-right) or blended (Chen et al. 2017: uniform-noise key,
    alpha 0.1 in training and at test time), all-to-one, target 0; or the tabular backdoor (the 3
    features least correlated with the target set to their maximum), target 1."""
    from advkit.attacks.poisoning.badnets import BadNets
    from advkit.attacks.poisoning.blended import Blended
    from advkit.attacks.poisoning.tabular import TabularBackdoor

    att = {"badnets": lambda: BadNets(size=3, target=0, rate=rate),
           "blended": lambda: Blended(alpha=0.1, target=0, rate=rate),
           "tabular": lambda: TabularBackdoor(target=1, rate=rate)}[attack]()
    return att.poison(x, y, rng=np.random.default_rng(seed))


def main() -> None:
    from advkit.data import load

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--rates", type=float, nargs="+", default=[0.01, 0.05, 0.1])
    args = ap.parse_args()
    ds = load("mnist")
    for seed in args.seeds:
        x, y, _, _ = split(ds, seed)
        _, secs, cached = train_cached(ds.info, x, y, seed, "clean")
        print(f"seed {seed} clean: {secs:.0f} s (cached {cached})", flush=True)
        for rate in args.rates:
            p = poisoned_set(x, y, rate, seed)
            _, secs, cached = train_cached(ds.info, p.x, p.y, seed, f"badnets-{rate}")
            print(f"seed {seed} rate {rate}: {secs:.0f} s (cached {cached})", flush=True)


if __name__ == "__main__":
    main()
