"""HopSkipJump (Chen, Jordan & Wainwright 2020), advkit's against ART 1.20.1's, at equal query
budgets: same model (digits cnn-small, the cached zoo model), same points, L2, untargeted.

ART's attack has no query budget: it runs ``--art-iter`` iterations per point. Its queries are
counted by wrapping its classifier's ``predict`` (rows asked). advkit's HopSkipJump then gets, per
point, a budget equal to ART's mean queries per point (rounded up), so advkit can spend at most as
much as ART did on average. Both start the gradient estimate at 100 directions, capped at
``--max-evals``. Figures: wall time, queries per point actually spent, success rate and the median
L2 of the adversarial points found (over the points each attack fooled, which are all points the
model got right when both succeed everywhere).

Needs ART, so it runs in the comparison venv (``benchmarks/README.md``)::

    OMP_NUM_THREADS=2 .venv-bench/bin/python benchmarks/compare_hsj.py [--n 360] [--art-iter 10 20]
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch


def model_and_points(n: int):
    from advkit.audit.spec import ModelSpec
    from advkit.data import load
    from advkit.models.cache import trained_zoo_model
    from advkit.targets.torch import TorchTarget

    ds = load("digits")
    model, _ = trained_zoo_model(ds, ModelSpec(zoo="cnn-small", epochs=10), seed=0,
                                 progress=False)
    model.eval()
    x, y = ds.x_test[:n].float(), ds.y_test[:n].long()
    with torch.no_grad():
        right = model(x).argmax(1) == y
    return model, TorchTarget(ds.contract(), model=model), x[right], y[right], ds


def run_art(model, x, max_iter: int, max_evals: int, seed: int) -> dict:
    from art.attacks.evasion import HopSkipJump
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(),
                            input_shape=tuple(x.shape[1:]), nb_classes=10, clip_values=(0.0, 1.0))
    asked = [0]
    predict = clf.predict

    def counting(xs, *a, **kw):
        asked[0] += len(xs)
        return predict(np.asarray(xs, dtype=np.float32), *a, **kw)  # ART hands float64

    clf.predict = counting
    np.random.seed(seed)  # ART draws from numpy's global generator
    att = HopSkipJump(clf, targeted=False, norm=2, max_iter=max_iter, max_eval=max_evals,
                      init_eval=100, init_size=100, batch_size=256, verbose=False)
    t = time.perf_counter()
    adv = att.generate(x.numpy())
    wall = time.perf_counter() - t
    with torch.no_grad():
        fooled = (model(torch.as_tensor(adv, dtype=torch.float32)).argmax(1)
                  != model(x).argmax(1)).numpy()
    dist = np.linalg.norm((adv - x.numpy()).reshape(len(x), -1), axis=1)
    return {"seconds": wall, "queries_per_point": asked[0] / len(x), "success": fooled.mean(),
            "median_l2": float(np.median(dist[fooled])) if fooled.any() else None}


def run_advkit(target, x, y, budget: int, max_evals: int, seed: int) -> dict:
    from advkit import registry

    att = registry.create("hopskipjump", norm="l2", max_queries=budget, init_evals=100,
                          max_evals=max_evals)
    t = time.perf_counter()
    res = att.attack(target, x, y, generator=torch.Generator().manual_seed(seed))
    wall = time.perf_counter() - t
    fooled = res.success
    return {"seconds": wall, "queries_per_point": float(res.extra["queries"].float().mean()),
            "success": float(fooled.float().mean()),
            "median_l2": float(res.distance[fooled].median()) if fooled.any() else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=360, help="test points (the model's errors dropped)")
    ap.add_argument("--art-iter", type=int, nargs="+", default=[10, 20])
    ap.add_argument("--max-evals", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    model, target, x, y, _ = model_and_points(args.n)
    print(f"threads {torch.get_num_threads()} (OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS')}); load {os.getloadavg()[0]:.2f}; "
          f"{len(x)} points the model classifies right")
    print("| ART iterations | library | budget / point | queries / point | seconds | success | "
          "median L2 |")
    print("|---|---|---|---|---|---|---|")
    for it in args.art_iter:
        art = run_art(model, x, it, args.max_evals, args.seed)
        budget = math.ceil(art["queries_per_point"])
        ours = run_advkit(target, x, y, budget, args.max_evals, args.seed)
        for name, r, b in (("ART 1.20.1", art, "none (iterations)"), ("advkit", ours, budget)):
            med = "-" if r["median_l2"] is None else f"{r['median_l2']:.3f}"
            print(f"| {it} | {name} | {b} | {r['queries_per_point']:.0f} | {r['seconds']:.1f} | "
                  f"{r['success']:.3f} | {med} |", flush=True)
    print(f"load after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
